#!/usr/bin/env python
"""Derive the built-in superclass tables shipped in ``timm_mixplug/data/hierarchies/``.

Inputs (default ``../shared/data`` beside the repository, see its README):

* ``cifar100_fine_to_coarse.json``: the standard CIFAR-100 fine -> coarse map.
* ``imagenet_hierarchy/dataset_class_info.json``: ``[idx, wnid, name]`` in timm's ImageNet class order.
* ``imagenet_hierarchy/wordnet/{class_hierarchy,node_names}.txt``: WordNet 3.0 hypernym edges and names.

ImageNet-1K rule ("size-bounded WordNet cut", see docs/hierarchies.md):

1. Tree: WordNet is a DAG; every synset keeps one hypernym, the one with the longest path to ``entity``
   (the most specific parent), ties broken by the smallest WNID. Only ancestors of the 1000 classes are kept.
2. Cut, top-down from ``entity``: a node with at most ``max_size`` classes below it becomes one superclass.
   A larger node is split: children with at least ``min_size`` classes are cut recursively, smaller children
   are pooled with whatever their split siblings hand back; the pool becomes a superclass at that node if it
   holds at least ``min_size`` classes, otherwise it is handed up to the parent (the root keeps the rest).
3. Each superclass is named after the lowest common ancestor (in the tree) of its member classes, i.e. the
   most specific WordNet synset that contains them all (first lemma; the WNID is appended if two share a lemma).
4. Superclasses are numbered by their smallest member class index.

Usage::

    python scripts/derive_hierarchies.py                 # writes both tables
    python scripts/derive_hierarchies.py --check         # exit 1 if the shipped tables are out of date
"""
import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data'
DEFAULT_OUT = REPO / 'timm_mixplug' / 'data' / 'hierarchies'
WORDNET_ROOT = 'n00001740'  # entity


def derive_cifar100(data_dir: Path) -> dict:
    """CIFAR-100 fine (torchvision label order) -> 20 coarse superclasses."""
    src = json.loads((data_dir / 'cifar100_fine_to_coarse.json').read_text())
    fine = src.get('fine_names', src.get('fine_label_names'))
    coarse = src.get('coarse_names', src.get('coarse_label_names'))
    f2c = [int(c) for c in src['fine_to_coarse']]
    if len(fine) != 100 or len(coarse) != 20 or len(f2c) != 100:
        raise ValueError('unexpected CIFAR-100 map sizes')
    if fine != sorted(fine):
        raise ValueError('CIFAR-100 fine names are not in torchvision (alphabetical) order')
    for sup, members in src.get('coarse_to_fines', {}).items():  # cross-check both directions of the file
        if sorted(fine[i] for i in range(100) if coarse[f2c[i]] == sup) != sorted(members):
            raise ValueError(f'fine_to_coarse and coarse_to_fines disagree on {sup!r}')
    return {
        'name': 'cifar100',
        'source': 'standard CIFAR-100 fine->coarse label map (Krizhevsky, 2009); class order = torchvision '
                  'CIFAR100 fine labels',
        'rule': 'the 20 official CIFAR-100 coarse labels, 5 fine classes each',
        'class_names': fine,
        'superclass_names': coarse,
        'class_to_superclass': f2c,
    }


def derive_cifar10() -> dict:
    """CIFAR-10 has no official superclasses: the two obvious ones, vehicles and animals."""
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    vehicles = {'airplane', 'automobile', 'ship', 'truck'}
    return {
        'name': 'cifar10',
        'source': 'CIFAR-10 class names (torchvision label order); grouping chosen by timm_mixplug',
        'rule': 'vehicles (airplane, automobile, ship, truck) vs animals (the other 6 classes)',
        'class_names': names,
        'superclass_names': ['animals', 'vehicles'],
        'class_to_superclass': [int(n in vehicles) for n in names],
    }


def _read_wordnet(hier_dir: Path):
    names = {}
    for line in (hier_dir / 'wordnet' / 'node_names.txt').read_text().splitlines():
        if line.strip():
            wnid, name = line.split('\t', 1)
            names[wnid] = name.strip()
    parents = collections.defaultdict(set)
    for line in (hier_dir / 'wordnet' / 'class_hierarchy.txt').read_text().splitlines():
        if line.strip():
            p, c = line.split()
            parents[c].add(p)
    return names, parents


def _wordnet_tree(classes, parents):
    """Tree parent of every ancestor of ``classes``: the deepest hypernym, ties -> smallest WNID."""
    depth = {}

    def get_depth(n):  # longest hypernym path to the root; iterative to avoid recursion limits
        stack = [n]
        while stack:
            m = stack[-1]
            todo = [p for p in parents[m] if p not in depth]
            if todo:
                stack.extend(todo)
                continue
            depth[m] = 1 + max((depth[p] for p in parents[m]), default=-1)
            stack.pop()
        return depth[n]

    tparent, seen, stack = {}, set(), list(classes)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if parents[n]:
            tparent[n] = min(parents[n], key=lambda p: (-get_depth(p), p))
            stack.append(tparent[n])
        elif n != WORDNET_ROOT:
            raise ValueError(f'{n} has no path to entity ({WORDNET_ROOT}) in the WordNet edges')
    return tparent


def cut_tree(classes, tparent, max_size, min_size):
    """Size-bounded cut (rule step 2). Returns {node: [class indices]}."""
    children = collections.defaultdict(list)
    for c, p in tparent.items():
        children[p].append(c)
    below = collections.defaultdict(list)  # node -> class indices in its subtree
    for i, w in enumerate(classes):
        n = w
        while n is not None:
            below[n].append(i)
            n = tparent.get(n)
    groups = {}

    def split(v):  # returns the classes handed up to v's parent
        if len(below[v]) <= max_size:
            groups[v] = list(below[v])
            return []
        pool = []
        for c in sorted(children[v]):
            pool += split(c) if len(below[c]) >= min_size else below[c]
        if len(pool) >= min_size or (v == WORDNET_ROOT and pool):
            groups[v] = pool
            return []
        return pool

    left = split(WORDNET_ROOT)
    assert not left
    return groups


def _lca(wnids, tparent):
    paths = []
    for w in wnids:
        p = [w]
        while p[-1] in tparent:
            p.append(tparent[p[-1]])
        paths.append(p[::-1])
    lca = None
    for nodes in zip(*paths):
        if len(set(nodes)) != 1:
            break
        lca = nodes[0]
    return lca


def derive_imagenet1k(data_dir: Path, max_size: int = 30, min_size: int = 5) -> dict:
    hier_dir = data_dir / 'imagenet_hierarchy'
    info = json.loads((hier_dir / 'dataset_class_info.json').read_text())
    if [int(r[0]) for r in info] != list(range(1000)):
        raise ValueError('dataset_class_info.json is not the 1000 classes in index order')
    classes = [r[1] for r in info]
    class_names = [r[2] for r in info]
    try:  # the class order must be timm's
        from timm.data import ImageNetInfo
        if ImageNetInfo().label_names() != classes:
            raise ValueError("dataset_class_info.json order differs from timm's imagenet synsets")
    except ImportError:
        pass
    names, parents = _read_wordnet(hier_dir)
    tparent = _wordnet_tree(classes, parents)
    groups = cut_tree(classes, tparent, max_size, min_size)
    ordered = sorted(groups.values(), key=min)
    lcas = [_lca([classes[i] for i in g], tparent) for g in ordered]
    lemma = [names[w].split(',')[0].strip() for w in lcas]
    counts = collections.Counter(lemma)
    super_names = [f'{n} ({w})' if counts[n] > 1 else n for n, w in zip(lemma, lcas)]
    class_to_super = [-1] * len(classes)
    for s, g in enumerate(ordered):
        for i in g:
            assert class_to_super[i] == -1
            class_to_super[i] = s
    assert min(class_to_super) >= 0
    return {
        'name': 'imagenet1k',
        'source': 'WordNet 3.0 hypernym graph (BREEDS release files: wordnet/class_hierarchy.txt, node_names.txt); '
                  'class order = timm ImageNet-1k index',
        'rule': f'size-bounded WordNet cut (max_size={max_size}, min_size={min_size}): tree = deepest hypernym '
                'per synset (ties: smallest WNID); top-down from entity, a node with <= max_size classes is one '
                'superclass, larger nodes are split, children with < min_size classes are pooled at the parent '
                '(pool kept if >= min_size, else handed up); superclass name = lowest common ancestor of its '
                'members; superclasses ordered by smallest class index. See docs/hierarchies.md.',
        'class_names': class_names,
        'class_wnids': classes,  # the keys: load_hierarchy maps a dataset's classes by WNID (or name)
        'superclass_names': super_names,
        'superclass_wnids': lcas,
        'class_to_superclass': class_to_super,
    }


def dumps(table: dict) -> str:
    """Stable, diff-friendly JSON: one list element per line."""
    return json.dumps(table, indent=1, ensure_ascii=False) + '\n'


def summary(table: dict) -> str:
    sizes = collections.Counter(table['class_to_superclass'])
    s = [sizes[i] for i in range(len(table['superclass_names']))]
    return (f"{table['name']}: {len(table['class_names'])} classes -> {len(s)} superclasses, "
            f"classes per superclass min/median/max = {min(s)}/{statistics.median(s):g}/{max(s)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', type=Path, default=DEFAULT_DATA, help='folder with the shared data files')
    ap.add_argument('--out-dir', type=Path, default=DEFAULT_OUT, help='where to write cifar100.json/imagenet1k.json')
    ap.add_argument('--cifar100-out', type=Path, default=None, help='override the CIFAR-100 output path')
    ap.add_argument('--imagenet1k-out', type=Path, default=None, help='override the ImageNet-1K output path')
    ap.add_argument('--max-size', type=int, default=30, help='ImageNet: largest subtree kept whole')
    ap.add_argument('--min-size', type=int, default=5, help='ImageNet: smallest group kept on its own')
    ap.add_argument('--check', action='store_true', help='only compare with the existing files; exit 1 if stale')
    ap.add_argument('--list', action='store_true', help='print the ImageNet superclasses and their members')
    args = ap.parse_args(argv)

    tables = {
        args.out_dir / 'cifar10.json': derive_cifar10(),
        args.cifar100_out or args.out_dir / 'cifar100.json': derive_cifar100(args.data_dir),
        args.imagenet1k_out or args.out_dir / 'imagenet1k.json':
            derive_imagenet1k(args.data_dir, args.max_size, args.min_size),
    }
    stale = False
    for path, table in tables.items():
        print(summary(table))
        text = dumps(table)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f'  {path} is out of date; rerun scripts/derive_hierarchies.py')
                stale = True
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f'  wrote {path}')
    if args.list:
        t = tables[args.imagenet1k_out or args.out_dir / 'imagenet1k.json']
        for s, name in enumerate(t['superclass_names']):
            members = [t['class_names'][i].split(',')[0] for i, k in enumerate(t['class_to_superclass']) if k == s]
            print(f'{s:3d} {name} ({len(members)}): {", ".join(members)}')
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
