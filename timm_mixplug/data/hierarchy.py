"""Class -> superclass hierarchies for superclass mixup and auxiliary superclass heads.

``load_hierarchy(spec)`` accepts a built-in name (``BUILTIN_HIERARCHIES``), a JSON/YAML/CSV file, a dict or a
sequence of superclass indices, and returns a :class:`Hierarchy`. Built-in tables ship as package data in
``timm_mixplug/hierarchies/`` (derived by ``scripts/derive_hierarchies.py``, see docs/hierarchies.md).
"""
import csv
import difflib
import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import yaml

__all__ = ['BUILTIN_HIERARCHIES', 'Hierarchy', 'load_hierarchy']

BUILTIN_HIERARCHIES = ('cifar10', 'cifar100', 'imagenet1k')
_ALIASES = {'cifar10': 'cifar10', 'cifar100': 'cifar100', 'imagenet1k': 'imagenet1k', 'imagenet': 'imagenet1k', 'in1k': 'imagenet1k'}
_FILE_SUFFIXES = ('.json', '.yaml', '.yml', '.csv')
_SHOW = 5  # how many offending entries error messages list


@dataclass(eq=False)
class Hierarchy:
    """Superclass index of every class, plus readable names.

    ``class_to_super`` is a LongTensor (C,) with values in ``[0, len(super_names))``.
    """
    class_to_super: torch.Tensor
    super_names: List[str]
    class_names: Optional[List[str]] = None
    name: str = 'custom'
    _tables: Dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        t = torch.as_tensor(self.class_to_super)
        if t.dim() != 1 or t.numel() == 0 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f'class_to_super must be a non-empty 1-D integer sequence, got shape '
                             f'{tuple(t.shape)} dtype {t.dtype}.')
        self.class_to_super = t.detach().to(device='cpu', dtype=torch.long).clone()
        self.super_names = [str(s) for s in self.super_names]
        lo, hi = int(self.class_to_super.min()), int(self.class_to_super.max())
        if lo < 0 or hi >= len(self.super_names):
            raise ValueError(f'superclass indices must lie in [0, {len(self.super_names)}) '
                             f'(one per superclass name), got values in [{lo}, {hi}].')
        if len(set(self.super_names)) != len(self.super_names):
            raise ValueError(f'superclass names must be unique: {_dupes(self.super_names)}')
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]
            if len(self.class_names) != self.num_classes:
                raise ValueError(f'{len(self.class_names)} class names given for {self.num_classes} classes.')

    @property
    def num_classes(self) -> int:
        return self.class_to_super.numel()

    @property
    def num_superclasses(self) -> int:
        return len(self.super_names)

    def table(self, device=None) -> torch.Tensor:
        """``class_to_super`` on ``device``, copied once per device and cached."""
        device = torch.device('cpu' if device is None else device)
        key = str(device)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = self.class_to_super.to(device)
        return t

    def superclass_of(self, target: torch.Tensor) -> torch.Tensor:
        """Superclass index of class indices ``target`` (any shape/device)."""
        return self.table(target.device)[target]

    def same_superclass(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """BoolTensor: do classes ``a`` and ``b`` (broadcastable index tensors) share a superclass?"""
        tab = self.table(a.device)
        return tab[a] == tab[b.to(a.device)]

    def members(self, superclass: int) -> List[int]:
        """Class indices of one superclass (a convenience for inspection, not for batch paths)."""
        return torch.nonzero(self.class_to_super == superclass).flatten().tolist()

    def sizes(self) -> torch.Tensor:
        """Number of classes in each superclass, LongTensor (S,)."""
        return torch.bincount(self.class_to_super, minlength=self.num_superclasses)

    def __getstate__(self):  # don't pickle per-device copies (e.g. CUDA tensors into loader workers)
        state = dict(self.__dict__)
        state['_tables'] = {}
        return state


def load_hierarchy(
        spec: Union[str, os.PathLike, Hierarchy, Mapping, Sequence[int], torch.Tensor],
        num_classes: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
) -> Hierarchy:
    """Build a :class:`Hierarchy` from a built-in name, a file, a dict or a sequence of ints.

    * built-in: ``'cifar10'`` (vehicles / animals), ``'cifar100'``, ``'imagenet1k'`` (``BUILTIN_HIERARCHIES``).
    * file: ``.json`` (the built-in table schema, a mapping or a list), ``.yaml``/``.yml`` (same),
      ``.csv`` (rows ``class,superclass``, header optional).
    * mapping ``{class: superclass}`` (class = index or name, superclass = name or index) or the inverse
      ``{superclass: [classes]}``; class names are resolved with ``class_names``.
    * sequence of ints: the superclass index of every class.

    ``num_classes`` (optional) is checked against the table. Bad input raises ``ValueError`` saying what is wrong.
    """
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class_names given but num_classes={num_classes}.')
    if isinstance(spec, Hierarchy):
        return _check_count(spec, num_classes, 'the given hierarchy')
    if isinstance(spec, (str, os.PathLike)):
        return _load_named(spec, num_classes, class_names)
    if isinstance(spec, Mapping):
        return _from_obj(dict(spec), num_classes, class_names, 'the superclass mapping', 'custom')
    if isinstance(spec, (Sequence, torch.Tensor)) or hasattr(spec, '__array__'):
        return _from_list(spec, num_classes, class_names, 'the class_to_super sequence', 'custom')
    raise ValueError(f'Unsupported hierarchy spec of type {type(spec).__name__}: pass a built-in name '
                     f'{list(BUILTIN_HIERARCHIES)}, a .json/.yaml/.csv file path, a dict or a list of ints.')


# ---------------------------------------------------------------------------------------------------------------
# internals

def _dupes(items):
    seen, dup = set(), []
    for x in items:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    return dup[:_SHOW]


def _check_count(h: Hierarchy, num_classes, what) -> Hierarchy:
    if num_classes is not None and h.num_classes != num_classes:
        raise ValueError(f'{what} covers {h.num_classes} classes but num_classes is {num_classes}; '
                         f'pass the superclass map that matches the dataset.')
    return h


@functools.lru_cache(maxsize=None)
def _builtin_text(name: str) -> str:
    return resources.files(__package__).joinpath('hierarchies', f'{name}.json').read_text(encoding='utf-8')


def _load_named(spec, num_classes, class_names) -> Hierarchy:
    text = os.fspath(spec)
    key = text.strip().lower().replace('-', '').replace('_', '')
    if isinstance(spec, str) and key in _ALIASES:
        name = _ALIASES[key]
        obj = json.loads(_builtin_text(name))
        return _from_obj(obj, num_classes, class_names, f'built-in hierarchy {name!r}', name)
    path = Path(text).expanduser()
    if not path.exists():
        if path.suffix.lower() in _FILE_SUFFIXES or os.sep in text or '/' in text:
            raise FileNotFoundError(f'Superclass map file not found: {str(path)!r}.')
        close = difflib.get_close_matches(key, list(_ALIASES), n=1)
        hint = f' Did you mean {_ALIASES[close[0]]!r}?' if close else ''
        raise ValueError(f'Unknown built-in hierarchy {text!r}; built-ins are {list(BUILTIN_HIERARCHIES)}.{hint} '
                         f'A path to a .json/.yaml/.yml/.csv file mapping each class to its superclass is also '
                         f'accepted.')
    if path.is_dir():
        raise ValueError(f'{str(path)!r} is a folder; pass a .json/.yaml/.yml/.csv superclass map file.')
    suffix = path.suffix.lower()
    what = f'superclass map {str(path)!r}'
    if suffix == '.json':
        try:
            obj = json.loads(path.read_text(encoding='utf-8'))
        except json.JSONDecodeError as e:
            raise ValueError(f'{what} is not valid JSON: {e}') from None
    elif suffix in ('.yaml', '.yml'):
        try:
            obj = yaml.safe_load(path.read_text(encoding='utf-8'))
        except yaml.YAMLError as e:
            raise ValueError(f'{what} is not valid YAML: {e}') from None
    elif suffix == '.csv':
        return _from_pairs(_read_csv(path, class_names, what), num_classes, class_names, what, path.stem)
    else:
        raise ValueError(f'{what}: unsupported file type {suffix or "(none)"!r}; use one of {list(_FILE_SUFFIXES)}.')
    if isinstance(obj, Mapping):
        return _from_obj(dict(obj), num_classes, class_names, what, path.stem)
    if isinstance(obj, (list, tuple)):
        return _from_list(obj, num_classes, class_names, what, path.stem)
    raise ValueError(f'{what} must hold a mapping {{class: superclass}} or a list of superclass indices, '
                     f'got {type(obj).__name__}.')


def _read_csv(path: Path, class_names, what) -> list:
    """Rows ``class,superclass`` -> list of (class, superclass) string pairs; a non-class first row is a header."""
    with open(path, newline='', encoding='utf-8') as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
    rows = [r for r in rows if not r[0].startswith('#')]
    if not rows:
        raise ValueError(f'{what} is empty; expected rows "class,superclass".')
    first = rows[0][0]
    if not _is_int(first) and (class_names is None or first not in class_names):
        rows = rows[1:]  # header
    bad = [i for i, r in enumerate(rows) if len(r) != 2]
    if bad:
        raise ValueError(f'{what}: every row needs exactly 2 columns "class,superclass"; rows '
                         f'{[rows[i] for i in bad[:_SHOW]]} do not.')
    # CSV cells are text: superclass cells that are all integers are indices, otherwise names
    as_index = all(_is_int(s) for _, s in rows)
    return [(c, int(s) if as_index else s) for c, s in rows]


def _is_int(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, str):
        s = x.strip()
        return s.lstrip('-').isdigit()
    return False


def _from_list(seq, num_classes, class_names, what, name) -> Hierarchy:
    try:
        vals = seq if isinstance(seq, torch.Tensor) else torch.as_tensor(seq)
    except (TypeError, ValueError, RuntimeError):
        vals = None
    if (vals is None or vals.dim() != 1 or vals.numel() == 0 or vals.dtype.is_floating_point
            or vals.dtype == torch.bool):
        raise ValueError(f'{what} must be a non-empty flat list of integer superclass indices (one per class).')
    vals = vals.long().cpu()
    if int(vals.min()) < 0:
        bad = torch.nonzero(vals < 0).flatten().tolist()
        raise ValueError(f'{what} has negative superclass indices at classes {bad[:_SHOW]}.')
    if class_names is not None and len(class_names) != vals.numel():
        raise ValueError(f'{what} covers {vals.numel()} classes but {len(class_names)} class_names were given.')
    names = [str(i) for i in range(int(vals.max()) + 1)]
    return _check_count(Hierarchy(vals, names, class_names, name), num_classes, what)


def _from_obj(obj: dict, num_classes, class_names, what, name) -> Hierarchy:
    if 'class_to_superclass' in obj:  # the built-in table schema
        c2s = obj['class_to_superclass']
        snames = obj.get('superclass_names')
        cnames = obj.get('class_names') or class_names
        if not isinstance(c2s, (list, tuple)) or not all(_is_int(v) and not isinstance(v, str) for v in c2s):
            raise ValueError(f'{what}: "class_to_superclass" must be a list of ints.')
        if snames is None:
            snames = [str(i) for i in range(max(c2s) + 1)] if c2s else []
        remapped = _remap_to_dataset(obj, c2s, snames, class_names, what) if class_names is not None else None
        if remapped is not None:
            c2s, snames, cnames = remapped
        try:
            h = Hierarchy(torch.tensor(c2s, dtype=torch.long), list(snames), cnames, obj.get('name', name))
        except ValueError as e:
            raise ValueError(f'{what}: {e}') from None
        return _check_count(h, num_classes, what)
    return _from_pairs(list(obj.items()), num_classes, class_names, what, name)


def _remap_to_dataset(obj: dict, c2s, snames, class_names, what):
    """A table's classes re-indexed to a dataset's ``class_names``, each matched by WordNet id
    (``class_wnids``, e.g. ImageNet folder names) or by the table's class name, so a dataset in another class
    order or with a subset of the classes gets the right superclasses (superclasses without classes are
    dropped, the others keep their order). None when no name matches (the table's index order applies)."""
    table_names = [str(n) for n in obj.get('class_names') or []]
    if list(class_names) == table_names:
        return None
    keys = {n: i for i, n in enumerate(table_names)}
    ambiguous = {n for n in keys if table_names.count(n) > 1}  # ImageNet: 'crane' (bird, machine), 'maillot'
    keys.update({str(w): i for i, w in enumerate(obj.get('class_wnids') or [])})
    idx = [keys.get(n) for n in class_names]
    if all(i is None for i in idx):
        return None
    clash = sorted({n for n in class_names if n in ambiguous})
    if clash:
        raise ValueError(f'{what}: the class names {clash[:_SHOW]} name several classes of the table; name the '
                         f'dataset\'s classes by WordNet id (e.g. ImageNet folder names) or pass a superclass '
                         f'map file.')
    missing = [n for n, i in zip(class_names, idx) if i is None]
    if missing:
        raise ValueError(f'{what}: {len(missing)} of the dataset\'s {len(class_names)} classes are not in the table '
                         f'(by WordNet id or name): {missing[:_SHOW]}; pass a superclass map file for this dataset.')
    sup = [c2s[i] for i in idx]
    used = sorted(set(sup))
    pos = {s: k for k, s in enumerate(used)}
    return [pos[s] for s in sup], [snames[s] for s in used], list(class_names)


def _from_pairs(pairs, num_classes, class_names, what, name) -> Hierarchy:
    """(class, superclass) pairs, or (superclass, [classes]) pairs -> Hierarchy."""
    if not pairs:
        raise ValueError(f'{what} is empty; map every class to a superclass.')
    if all(isinstance(v, (list, tuple)) for _, v in pairs):  # inverse form {superclass: [classes]}
        pairs = [(c, s) for s, members in pairs for c in members]
    elif any(isinstance(v, (list, tuple, dict)) for _, v in pairs):
        raise ValueError(f'{what}: values must all be superclasses (name or index) or all be lists of classes.')
    num = num_classes if num_classes is not None else (len(class_names) if class_names is not None else None)
    name_to_idx = {n: i for i, n in enumerate(class_names)} if class_names is not None else None

    classes = [_resolve_class(c, name_to_idx, what) for c, _ in pairs]
    if num is None:
        num = max(classes) + 1
    out_of_range = [c for c in classes if c < 0 or c >= num]
    if out_of_range:
        raise ValueError(f'{what}: class indices {sorted(set(out_of_range))[:_SHOW]} are out of range for '
                         f'{num} classes (valid: 0..{num - 1}); check num_classes or the map.')

    sups = [s for _, s in pairs]
    kinds = {_is_int(s) and not isinstance(s, str) for s in sups}
    if len(kinds) > 1:
        raise ValueError(f'{what}: superclasses must be all names or all integer indices, not a mix.')
    by_index = kinds == {True}
    c2s = [None] * num
    for c, s in zip(classes, sups):
        s = int(s) if by_index else str(s)
        if c2s[c] is not None and c2s[c] != s:
            raise ValueError(f'{what}: class {_label(c, class_names)} is mapped twice ({c2s[c]!r} and {s!r}).')
        c2s[c] = s
    missing = [c for c in range(num) if c2s[c] is None]
    if missing:
        shown = ', '.join(_label(c, class_names) for c in missing[:_SHOW])
        more = f' and {len(missing) - _SHOW} more' if len(missing) > _SHOW else ''
        raise ValueError(f'{what} leaves {len(missing)} of {num} classes unmapped: {shown}{more}; '
                         f'give every class a superclass.')
    if by_index:
        if min(c2s) < 0:
            raise ValueError(f'{what}: superclass indices must be >= 0, got {min(c2s)}.')
        snames = [str(i) for i in range(max(c2s) + 1)]
        idx = c2s
    else:  # superclass ids by first appearance in class order: independent of the file's row order
        snames = list(dict.fromkeys(c2s))
        pos = {s: i for i, s in enumerate(snames)}
        idx = [pos[s] for s in c2s]
    return Hierarchy(torch.tensor(idx, dtype=torch.long), snames, class_names, name)


def _resolve_class(c, name_to_idx, what) -> int:
    if _is_int(c):
        return int(c)
    if not isinstance(c, str):
        raise ValueError(f'{what}: class keys must be indices or names, got {c!r} ({type(c).__name__}).')
    if name_to_idx is None:
        raise ValueError(f'{what} names classes (e.g. {c!r}); pass class_names=[...] (the dataset\'s class '
                         f'names in label order) to resolve them, or key the map by class index.')
    if c not in name_to_idx:
        close = difflib.get_close_matches(c, list(name_to_idx), n=3)
        hint = f' Close matches: {close}.' if close else ''
        raise ValueError(f'{what}: unknown class name {c!r}, not among the {len(name_to_idx)} class_names.{hint}')
    return name_to_idx[c]


def _label(c: int, class_names) -> str:
    return f'{c} ({class_names[c]!r})' if class_names is not None else str(c)
