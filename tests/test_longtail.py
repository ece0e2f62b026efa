"""Long-tailed subsets (exact CIFAR-LT sizes), shot groups and many / medium / few-shot accuracy."""
import argparse

import pytest
import torch
from torch.utils.data import Subset

from timm_mixplug.data.longtail import (
    LongTailSubset, class_counts, get_targets, longtail_counts, make_longtail_indices, shot_groups)
from timm_mixplug.task.evaluators import ShotAccuracyEvaluator, shot_accuracy
from timm_mixplug.train.data import apply_longtail


@pytest.mark.parametrize('n_max,C,rho,total', [
    (500, 100, 100, 10847),   # CIFAR-100-LT rho=100
    (500, 100, 50, 12608),    # CIFAR-100-LT rho=50
    (5000, 10, 100, 12406),   # CIFAR-10-LT rho=100
])
def test_published_totals(n_max, C, rho, total):
    counts = longtail_counts(n_max, C, rho)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == int(n_max / rho)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_cifar100_lt_shot_groups_35_34_31():
    g = shot_groups(longtail_counts(500, 100, 100))
    assert [int(g[k].sum()) for k in ('many', 'medium', 'few')] == [35, 34, 31]


def test_shot_group_boundaries():
    g = shot_groups([101, 100, 21, 20, 1])
    assert g['many'].tolist() == [True, False, False, False, False]
    assert g['medium'].tolist() == [False, True, True, False, False]
    assert g['few'].tolist() == [False, False, False, True, True]


@pytest.mark.parametrize('n_max,C,rho', [(500, 100, 100), (5000, 10, 100)])
def test_subset_sizes_exact_and_deterministic(n_max, C, rho):
    g = torch.Generator().manual_seed(1)
    targets = torch.arange(C).repeat_interleave(n_max)[torch.randperm(C * n_max, generator=g)]  # shuffled labels
    idx = make_longtail_indices(targets, rho, seed=3)
    assert class_counts(targets[idx], C).tolist() == longtail_counts(n_max, C, rho)
    assert idx.unique().numel() == idx.numel() and bool((idx[1:] > idx[:-1]).all())  # no repeats, sorted
    assert torch.equal(idx, make_longtail_indices(targets.tolist(), rho, seed=3))       # same seed -> same subset
    assert not torch.equal(idx, make_longtail_indices(targets, rho, seed=4))            # another seed differs


def test_subset_caps_at_available_and_explicit_n_max():
    targets = torch.tensor([0] * 10 + [1] * 2 + [2] * 10)
    idx = make_longtail_indices(targets, 4.0, seed=0, n_max=8)
    # n_c = int(8 * 0.25 ** (c / 2)) = 8, 4, 2; class 1 has only 2 images
    assert class_counts(targets[idx], 3).tolist() == [8, 2, 2]
    with pytest.raises(ValueError):
        make_longtail_indices(targets, 0.5)


def test_shot_accuracy_by_hand():
    train_counts = [200, 50, 5]  # many, medium, few
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 2, 1, 0, 2, 0, 0])
    acc = shot_accuracy(preds, targets, train_counts)
    assert acc['many'] == pytest.approx(50.0)
    assert acc['medium'] == pytest.approx(50.0)
    assert acc['few'] == pytest.approx(100 / 3)
    assert acc['overall'] == pytest.approx(100 * 4 / 9)
    logits = torch.nn.functional.one_hot(preds, 3).float()
    assert shot_accuracy(logits, targets, train_counts) == acc
    # a group's value is the mean of its classes' accuracies; absent groups are nan
    acc2 = shot_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), [500, 300, 30])
    assert acc2['many'] == pytest.approx((50 + 100) / 2) and acc2['few'] != acc2['few']


def test_shot_evaluator_matches_function_and_max_samples():
    torch.manual_seed(0)
    counts = [300, 120, 60, 30, 10, 3]
    logits = torch.randn(50, 6)
    targets = torch.randint(0, 6, (50,))
    ev = ShotAccuracyEvaluator(counts, max_samples=45)
    for i in range(0, 50, 16):
        ev.update(logits[i:i + 16], targets[i:i + 16])
    m = ev.compute()
    ref = shot_accuracy(logits[:45], targets[:45], counts)
    for k in ('many', 'medium', 'few'):
        assert m[k] == pytest.approx(ref[k])
    assert m['top1'] == pytest.approx(ref['overall'])
    assert set(ShotAccuracyEvaluator.metric_names) >= {'top1', 'top5', 'loss', 'many', 'medium', 'few'}


class _Toy:
    def __init__(self, targets):
        self.targets = list(targets)
        self.classes = ['a', 'b', 'c']
        self.transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.tensor([float(i)])
        return (self.transform(x) if self.transform else x), self.targets[i]


def test_subset_wrapper_keeps_targets_and_forwards_transform():
    base = _Toy([0] * 6 + [1] * 6 + [2] * 6)
    args = argparse.Namespace(imb_factor=3.0, imb_seed=0, num_classes=None)
    ds = apply_longtail(base, args)
    assert isinstance(ds, LongTailSubset) and ds.classes == base.classes
    assert class_counts(ds.targets, 3).tolist() == longtail_counts(6, 3, 3.0)
    ds.transform = lambda x: x * 10  # timm's create_loader sets .transform on the dataset it gets
    x, y = ds[0]
    assert base.transform is not None and x.item() == 10 * ds.indices[0] and y == ds.targets[0]
    assert apply_longtail(base, argparse.Namespace(imb_factor=None)) is base
    assert apply_longtail(ds, args) is ds
    assert get_targets(Subset(base, [1, 7, 13])).tolist() == [0, 1, 2]



def _npz_folder(root, per_class=150, C=4, size=8):
    """``train`` / ``test`` npz splits: class c's pixels all equal 10 * c, labels shuffled."""
    import numpy as np
    g = np.random.RandomState(0)
    for split, n in (('train', per_class), ('test', 5)):
        y = g.permutation(np.repeat(np.arange(C), n))
        x = np.repeat((10 * y).astype(np.uint8)[:, None, None, None], size, 1).repeat(size, 2).repeat(3, 3)
        np.savez(root / f'{split}.npz', x=x, y=y, classes=np.array([f'c{c}' for c in range(C)]))
    return str(root)


def test_train_py_long_tail_counts_groups_and_glmc_weights_point_the_same_way(tmp_path):
    """End to end on known data (no training): --imb-factor keeps class 0 as the head, the counts train.py hands
    GLMC and the evaluator are the subset's, 'many' holds the head, GLMC's re-balancing weights the tail most,
    and an always-head classifier scores 100 % many-shot and 0 % few-shot. A reversal anywhere fails here."""
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.data import create_datasets
    from timm_mixplug.train.specs.base import get_task_spec
    from timm_mixplug.models.cifar_resnet import resnet20_cifar
    args = parse_args(['--dataset', 'npz', '--data-dir', _npz_folder(tmp_path), '--train-split', 'train',
                       '--val-split', 'test', '--model', 'resnet20_cifar', '--imb-factor', '10', '--task', 'glmc',
                       '--device', 'cpu', '--output', str(tmp_path / 'out')])
    ds_train, ds_eval, info = create_datasets(args)
    want = longtail_counts(150, 4, 10)
    assert want == [150, 69, 32, 15]
    seen = torch.bincount(torch.tensor([int(ds_train[i][1]) for i in range(len(ds_train))]), minlength=4)
    pixel = torch.bincount(torch.tensor([int(ds_train[i][0].getpixel((0, 0))[0]) // 10
                                         for i in range(len(ds_train))]), minlength=4)  # content agrees with label
    assert seen.tolist() == pixel.tolist() == info.class_counts == want
    spec = get_task_spec('glmc')
    task = spec.create_task(args, resnet20_cifar(num_classes=4), None, None, info, torch.device('cpu'))
    assert task.class_counts == want
    assert torch.argsort(task.cb_weights).tolist() == [0, 1, 2, 3]  # head weighted least, tail most
    ev = task.create_evaluator()
    assert [ev.groups[k].nonzero().flatten().tolist() for k in ('many', 'medium', 'few')] == [[0], [1, 2], [3]]
    target = torch.arange(4).repeat(5)
    ev.update(torch.eye(4)[[0] * len(target)], target)  # always predicts the head class
    out = ev.compute()
    assert (out['many'], out['medium'], out['few']) == (100.0, 0.0, 0.0)
