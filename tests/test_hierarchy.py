"""Superclass hierarchies: built-in tables, user files, error messages, vectorized lookups."""
import json
import pickle

import pytest
import torch

from timm_mixplug.data.hierarchy import BUILTIN_HIERARCHIES, Hierarchy, load_hierarchy



def sup(h, name_or_idx):
    i = h.class_names.index(name_or_idx) if isinstance(name_or_idx, str) else name_or_idx
    return h.super_names[int(h.class_to_super[i])]


# --------------------------------------------------------------------------------------------- built-ins

@pytest.mark.parametrize('name', BUILTIN_HIERARCHIES)
def test_builtin_covers_every_class(name):
    h = load_hierarchy(name)
    assert isinstance(h, Hierarchy) and h.name == name
    assert h.class_to_super.dtype == torch.long and h.class_to_super.shape == (h.num_classes,)
    assert len(h.class_names) == h.num_classes
    assert len(set(h.super_names)) == h.num_superclasses
    assert all(n.strip() for n in h.super_names)
    sizes = h.sizes()
    assert int(sizes.sum()) == h.num_classes and int(sizes.min()) >= 1  # every class once, no empty superclass


def test_cifar100_table():
    h = load_hierarchy('cifar100', num_classes=100)
    assert h.num_classes == 100 and h.num_superclasses == 20
    assert h.sizes().tolist() == [5] * 20
    assert h.class_names == sorted(h.class_names)  # torchvision fine label order
    assert h.class_names[:3] == ['apple', 'aquarium_fish', 'baby']
    assert sup(h, 'maple_tree') == sup(h, 'oak_tree') == 'trees'
    assert sup(h, 'apple') == 'fruit_and_vegetables'
    assert sup(h, 'dolphin') == sup(h, 'whale') == 'aquatic_mammals'
    assert sup(h, 'bicycle') == 'vehicles_1' and sup(h, 'tractor') == 'vehicles_2'
    assert sup(h, 'shark') == 'fish' != sup(h, 'dolphin')


def test_imagenet1k_table():
    h = load_hierarchy('imagenet1k', num_classes=1000)
    assert h.num_classes == 1000 and 24 <= h.num_superclasses <= 150
    sizes = h.sizes()
    assert int(sizes.min()) >= 5 and int(sizes.max()) <= 40  # the rule's size bounds (min_size=5, max 30 + pooling)
    assert h.class_names[151].startswith('Chihuahua') and h.class_names[207].startswith('golden retriever')
    assert h.class_names[281].startswith('tabby')
    # class order is timm's ImageNet index order
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    assert h.class_names == [info.index_to_description(i) for i in range(1000)]
    c2s = h.class_to_super
    same = lambda a, b: bool(c2s[a] == c2s[b])
    assert same(207, 208)  # golden / Labrador retriever
    assert same(151, 158)  # Chihuahua / toy terrier (toy dogs)
    assert same(189, 191)  # Lakeland / Airedale terriers
    assert same(281, 282) and same(281, 291)  # tabby / tiger cat / lion (felines)
    assert same(52, 60)  # thunder snake / night snake
    assert same(404, 895)  # airliner / warplane (craft)
    # the superclasses holding dogs (151..268) hold nothing but dogs; cats, wolves and vehicles are elsewhere
    dog_supers = set(c2s[151:269].tolist())
    assert set(c2s[269:].tolist()).isdisjoint(dog_supers) and set(c2s[:151].tolist()).isdisjoint(dog_supers)
    assert not same(151, 281) and not same(207, 281) and not same(207, 269)  # dog vs tabby cat, timber wolf
    assert 'feline' in h.super_names and sup(h, 281) == 'feline'


def test_imagenet1k_keyed_by_wordnet_id():
    """A dataset whose classes come in another order (or a subset) gets each class's own superclass."""
    import json
    from importlib import resources
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    table = json.loads(resources.files('timm_mixplug.data').joinpath('hierarchies', 'imagenet1k.json').read_text())
    assert table['class_wnids'] == info.label_names()  # timm's synset order
    ref = load_hierarchy('imagenet1k')
    ref_super = [ref.super_names[s] for s in ref.class_to_super.tolist()]
    wnids = info.label_names()
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    h = load_hierarchy('imagenet1k', num_classes=1000, class_names=[wnids[i] for i in perm])
    assert h.num_superclasses == ref.num_superclasses and h.super_names == ref.super_names
    assert [h.super_names[s] for s in h.class_to_super.tolist()] == [ref_super[i] for i in perm]
    # by description (e.g. Hugging Face label names): in timm's order as is; permuted, unless a name is ambiguous
    descr = [info.index_to_description(i) for i in range(1000)]
    assert torch.equal(load_hierarchy('imagenet1k', class_names=descr).class_to_super, ref.class_to_super)
    with pytest.raises(ValueError, match="'crane'.*WordNet id"):
        load_hierarchy('imagenet1k', class_names=[descr[i] for i in perm])
    hd = load_hierarchy('imagenet1k', class_names=[descr[i] for i in (281, 207, 1)])
    assert [hd.super_names[s] for s in hd.class_to_super.tolist()] == [ref_super[i] for i in (281, 207, 1)]
    golden, labrador, tabby = wnids[207], wnids[208], wnids[281]
    assert h.same_superclass(torch.tensor(perm.index(207)), torch.tensor(perm.index(208)))
    # a 3-class subset by WordNet id: only its superclasses remain
    sub = load_hierarchy('imagenet1k', num_classes=3, class_names=[tabby, golden, labrador])
    assert sub.class_to_super.tolist() == [1, 0, 0] or sub.class_to_super.tolist() == [0, 1, 1]
    assert sub.num_superclasses == 2 and 'feline' in sub.super_names
    # the table's own order when the names are unrelated (e.g. digits); partial matches are an error
    assert torch.equal(load_hierarchy('imagenet1k', class_names=[str(i) for i in range(1000)]).class_to_super,
                       ref.class_to_super)
    with pytest.raises(ValueError, match='not in the table'):
        load_hierarchy('imagenet1k', num_classes=2, class_names=[tabby, 'n99999999'])


def test_builtin_aliases_and_errors():
    assert load_hierarchy('CIFAR-100').num_classes == 100
    assert load_hierarchy('imagenet').num_classes == 1000
    with pytest.raises(ValueError) as e:
        load_hierarchy('cifar1000')
    msg = str(e.value)
    assert "'cifar1000'" in msg and 'cifar100' in msg and 'imagenet1k' in msg and 'file' in msg
    with pytest.raises(ValueError, match=r'covers 100 classes but num_classes is 10'):
        load_hierarchy('cifar100', num_classes=10)


# --------------------------------------------------------------------------------------------- user files

NAMES = ['cat', 'dog', 'car', 'truck', 'oak']
MAP = {'cat': 'animal', 'dog': 'animal', 'car': 'vehicle', 'truck': 'vehicle', 'oak': 'plant'}
EXPECT = [0, 0, 1, 1, 2]


def check(h):
    assert h.class_to_super.tolist() == EXPECT
    assert h.super_names == ['animal', 'vehicle', 'plant']
    assert h.num_classes == 5 and h.num_superclasses == 3


def test_json_name_and_index_keyed(tmp_path):
    p = tmp_path / 'names.json'
    p.write_text(json.dumps(MAP))
    check(load_hierarchy(p, class_names=NAMES))
    check(load_hierarchy(str(p), num_classes=5, class_names=NAMES))
    p = tmp_path / 'idx.json'  # JSON keys are strings of indices; rows in any order
    p.write_text(json.dumps({str(i): MAP[n] for i, n in reversed(list(enumerate(NAMES)))}))
    check(load_hierarchy(p))
    p = tmp_path / 'ints.json'  # superclass indices
    p.write_text(json.dumps({str(i): s for i, s in enumerate(EXPECT)}))
    h = load_hierarchy(p, num_classes=5)
    assert h.class_to_super.tolist() == EXPECT and h.super_names == ['0', '1', '2']
    p = tmp_path / 'table.json'  # the built-in schema
    p.write_text(json.dumps({'name': 't', 'class_names': NAMES, 'superclass_names': ['animal', 'vehicle', 'plant'],
                             'class_to_superclass': EXPECT}))
    check(load_hierarchy(p))
    p = tmp_path / 'list.json'
    p.write_text(json.dumps(EXPECT))
    assert load_hierarchy(p).class_to_super.tolist() == EXPECT


def test_yaml(tmp_path):
    p = tmp_path / 'm.yaml'
    p.write_text(''.join(f'{k}: {v}\n' for k, v in MAP.items()))
    check(load_hierarchy(p, class_names=NAMES))
    p = tmp_path / 'm.yml'  # int keys, and the inverse form {superclass: [classes]}
    p.write_text('animal: [0, 1]\nvehicle: [2, 3]\nplant: [4]\n')
    check(load_hierarchy(p, num_classes=5))
    p = tmp_path / 'inv.yaml'
    p.write_text('animal: [cat, dog]\nvehicle: [car, truck]\nplant: [oak]\n')
    check(load_hierarchy(p, class_names=NAMES))


def test_csv(tmp_path):
    p = tmp_path / 'h.csv'
    p.write_text('class,superclass\n' + ''.join(f'{k},{v}\n' for k, v in MAP.items()))
    check(load_hierarchy(p, class_names=NAMES))
    p = tmp_path / 'noheader.csv'
    p.write_text(''.join(f'{i}, {MAP[n]}\n' for i, n in enumerate(NAMES)))
    check(load_hierarchy(p, num_classes=5))
    p = tmp_path / 'noheader_names.csv'
    p.write_text(''.join(f'{n},{MAP[n]}\n' for n in NAMES))
    check(load_hierarchy(p, class_names=NAMES))
    p = tmp_path / 'ints.csv'
    p.write_text('label,super\n' + ''.join(f'{i},{s}\n' for i, s in enumerate(EXPECT)))
    assert load_hierarchy(p).class_to_super.tolist() == EXPECT


def test_dict_sequence_and_hierarchy_specs():
    check(load_hierarchy(MAP, class_names=NAMES))
    check(load_hierarchy({i: MAP[n] for i, n in enumerate(NAMES)}))
    h = load_hierarchy(EXPECT, num_classes=5)
    assert h.class_to_super.tolist() == EXPECT and h.num_superclasses == 3
    assert load_hierarchy(torch.tensor(EXPECT)).num_classes == 5
    assert load_hierarchy(h, num_classes=5) is h


# --------------------------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    p = tmp_path / 'nope.yaml'
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        load_hierarchy(p)
    with pytest.raises(FileNotFoundError, match='nope.csv'):
        load_hierarchy(str(tmp_path / 'nope.csv'))


def test_unmapped_classes_named():
    m = dict(MAP)
    del m['dog'], m['oak']
    with pytest.raises(ValueError) as e:
        load_hierarchy(m, class_names=NAMES)
    msg = str(e.value)
    assert 'unmapped' in msg and "'dog'" in msg and "'oak'" in msg and '2 of 5' in msg
    with pytest.raises(ValueError, match=r'leaves 95 of 100 classes unmapped: 5, 6, 7, 8, 9 and 90 more'):
        load_hierarchy({i: 'a' for i in range(5)}, num_classes=100)


def test_out_of_range_and_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r'class indices \[7\] are out of range for 5 classes'):
        load_hierarchy({**{i: 'a' for i in range(5)}, 7: 'b'}, num_classes=5)
    with pytest.raises(ValueError, match=r'covers 5 classes but num_classes is 6'):
        load_hierarchy(EXPECT, num_classes=6)
    p = tmp_path / 't.json'
    p.write_text(json.dumps({'superclass_names': ['a', 'b'], 'class_to_superclass': [0, 1, 1]}))
    with pytest.raises(ValueError, match=r'covers 3 classes but num_classes is 4'):
        load_hierarchy(p, num_classes=4)
    p.write_text(json.dumps({'superclass_names': ['a'], 'class_to_superclass': [0, 1, 1]}))
    with pytest.raises(ValueError, match=r'superclass indices must lie in \[0, 1\)'):
        load_hierarchy(p)
    with pytest.raises(ValueError, match='negative superclass'):
        load_hierarchy([0, -1, 2])


def test_class_names_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        load_hierarchy({**MAP, 'catt': 'animal'}, class_names=NAMES)
    assert "unknown class name 'catt'" in str(e.value) and "'cat'" in str(e.value)  # close-match hint
    with pytest.raises(ValueError, match='pass class_names'):
        load_hierarchy(MAP)
    p = tmp_path / 'n.csv'
    p.write_text('class,superclass\ncat,animal\n')
    with pytest.raises(ValueError, match='pass class_names'):
        load_hierarchy(p)
    with pytest.raises(ValueError, match='mapped twice'):
        load_hierarchy({'animal': ['cat', 'dog'], 'pet': ['dog'], 'vehicle': ['car', 'truck', 'oak']},
                       class_names=NAMES)


def test_bad_file_contents(tmp_path):
    p = tmp_path / 'bad.json'
    p.write_text('{not json')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_hierarchy(p)
    p = tmp_path / 'h.txt'
    p.write_text('0,a\n')
    with pytest.raises(ValueError, match='unsupported file type'):
        load_hierarchy(p)
    p = tmp_path / 'three.csv'
    p.write_text('0,a,x\n1,b\n')
    with pytest.raises(ValueError, match='exactly 2 columns'):
        load_hierarchy(p)


# --------------------------------------------------------------------------------------------- lookups

def test_same_superclass_vectorized():
    h = load_hierarchy('cifar100')
    idx = {n: i for i, n in enumerate(h.class_names)}
    a = torch.tensor([idx['maple_tree'], idx['apple'], idx['dolphin'], idx['shark']])
    b = torch.tensor([idx['oak_tree'], idx['orange'], idx['whale'], idx['whale']])
    assert h.same_superclass(a, b).tolist() == [True, True, True, False]
    # matches a brute-force reference on random pairs, any shape, with broadcasting
    x, y = torch.randint(0, 100, (4, 64)), torch.randint(0, 100, (4, 64))
    ref = torch.tensor([[sup(h, int(i)) == sup(h, int(j)) for i, j in zip(r, s)] for r, s in zip(x, y)])
    out = h.same_superclass(x, y)
    assert out.dtype == torch.bool and torch.equal(out, ref)
    assert h.same_superclass(x[:, :1], y).shape == (4, 64)
    assert torch.equal(h.same_superclass(x, x), torch.ones_like(x, dtype=torch.bool))
    # the per-device table is cached, not copied again
    t = h.table(x.device)
    h.same_superclass(x, y)
    assert h.table(x.device) is t


def test_superclass_of_and_pickle():
    h = load_hierarchy(EXPECT)
    t = torch.tensor([4, 0, 3])
    assert h.superclass_of(t).tolist() == [2, 0, 1]
    h.same_superclass(t, t)
    h2 = pickle.loads(pickle.dumps(h))
    assert h2._tables == {} and h2.class_to_super.tolist() == EXPECT
    assert h.members(1) == [2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_same_superclass_cuda():
    h = load_hierarchy('imagenet1k')
    a = torch.randint(0, 1000, (256,), device='cuda')
    b = torch.randint(0, 1000, (256,), device='cuda')
    out = h.same_superclass(a, b)
    assert out.device.type == 'cuda'
    assert torch.equal(out.cpu(), h.same_superclass(a.cpu(), b.cpu()))


def test_builtin_cifar10_vehicles_and_animals():
    h = load_hierarchy('cifar10', num_classes=10)
    assert h.num_superclasses == 2
    vehicles = {h.class_names.index(n) for n in ('airplane', 'automobile', 'ship', 'truck')}
    for c in range(10):
        assert h.super_names[int(h.class_to_super[c])] == ('vehicles' if c in vehicles else 'animals')
