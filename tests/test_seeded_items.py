"""Paired runs see identical batches: per-item randomness apart from the mixing randomness (SeededItems)."""
import random

import numpy as np
import pytest
import torch
from timm.utils import random_seed

from conftest import make_tiny_images, tiny_train_args
from timm_mixplug.data.seeded import SeededItems, item_seed, own_rng
from timm_mixplug.train import engine
from timm_mixplug.train.build import build
from timm_mixplug.train.config import parse_args
from timm_mixplug.utils.random import epoch_seed


class _Draws(torch.utils.data.Dataset):
    """Item i: one draw from each of python's random, numpy's global RNG and torch's generator, and i."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return (random.random(), float(np.random.rand()), float(torch.rand(())), i)


def _read(ds, order, between):
    out = []
    for i in order:
        out.append(ds[i])
        between()  # what a mixer draws between items / batches
    return out


def test_items_depend_on_seed_epoch_index_only_and_leave_the_process_rngs_alone():
    ds = SeededItems(_Draws(), seed=3)
    random_seed(0)
    quiet = _read(ds, range(6), lambda: None)
    noisy = _read(ds, range(6), lambda: (torch.rand(5), np.random.rand(3), random.random()))
    assert quiet == noisy
    assert _read(ds, [4, 1], lambda: None) == [quiet[4], quiet[1]]  # any order, any worker
    assert len({x[:3] for x in quiet}) == 6  # every item its own draws
    ds.set_epoch(1)
    assert _read(ds, range(6), lambda: None) != quiet
    assert SeededItems(_Draws(), seed=4)[0] != quiet[0]
    # python's and torch's generators continue as if the items had not been read; numpy's is re-seeded from
    # the item's seed, whatever the item drew
    random_seed(7)
    expect = (random.random(), float(torch.rand(())))
    random_seed(7)
    ds[2]
    assert (random.random(), float(torch.rand(()))) == expect
    after = float(np.random.rand())
    with own_rng(item_seed(ds.base_seed, 2)):
        np.random.rand(17)
    assert float(np.random.rand()) == after
    # without the wrapper the draws between items change the items (what the wrapper removes)
    random_seed(0)
    plain_quiet = _read(_Draws(), range(6), lambda: None)
    random_seed(0)
    assert _read(_Draws(), range(6), lambda: torch.rand(5)) != plain_quiet


def test_own_rng_restores_after_an_error():
    random_seed(1)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError):
        with own_rng(5):
            torch.rand(3)
            raise RuntimeError('x')
    assert torch.equal(torch.get_rng_state(), before)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'seeded_imgs', val_per_class=2)


def _batches(images, out, mix):
    """The un-mixed training batches of one epoch, with the run's mixer applied between them as in training."""
    args = parse_args(tiny_train_args(images, out, mix, '--mix', mix, '--no-prefetcher', '--hflip', '0.5',
                                      '--seed', '5', '-b', '8'))
    b = build(args, engine._init_distributed(args), training=True)
    random_seed(epoch_seed(args.seed, 0, 0), 0)  # the epoch start of the training loop
    seen = []
    for x, y in b.loader_train:
        seen.append((x.clone(), y.clone()))
        if b.mixer is not None:
            b.mixer(x, y)
    return seen, b


def test_none_and_bc_train_on_identical_unmixed_batches(images, tmp_path):
    plain, _ = _batches(images, tmp_path, 'none')
    mixed, b = _batches(images, tmp_path, 'bc')
    assert b.mixer is not None and len(plain) == len(mixed) == 4
    for (xa, ya), (xb, yb) in zip(plain, mixed):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert not torch.equal(plain[0][0], plain[1][0])
