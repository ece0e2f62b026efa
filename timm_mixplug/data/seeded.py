"""Per-item randomness of a training dataset, apart from the process's random number generators.

``SeededItems`` draws every item's randomness (augmentation, GLMC's re-sampled partner, anything the wrapped
dataset and its transform draw from python's ``random``, numpy's global RNG or torch's CPU generator) from a
seed of (seed, epoch, rank, index) alone, and leaves the process's generators as they were. Two runs with one
seed therefore see the same augmented images in the same order whatever else draws random numbers between
items: a method that mixes batches (mixup, BC, BC+) and one that does not are trained on identical un-mixed
batches, and differ only by the method. The loader's order comes from torch's generator right after the
training loop re-seeds it each epoch (before any mixing), so it is shared as well.

Cost: about 0.1-0.2 ms per item on a CPU core. Python's and torch's generators are restored exactly; numpy's
global generator is left re-seeded from the item's seed instead (saving and restoring its state costs ~0.5 ms),
so what draws from it afterwards (timm's ``Mixup``) is still a function of the run's seed alone.
"""
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from timm_mixplug.data.wrappers import ForwardingDatasetWrapper
from timm_mixplug.utils.random import epoch_seed

__all__ = ['SeededItems', 'item_seed', 'own_rng']


_MASK = (1 << 64) - 1


def item_seed(base: int, index: int) -> int:
    """A 32-bit seed for item ``index`` of an epoch whose seed is ``base`` (SplitMix64 finaliser: neighbouring
    indices get unrelated seeds)."""
    x = (base * 0x9E3779B97F4A7C15 + index + 1) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) & 0xFFFFFFFF


@contextmanager
def own_rng(seed: int) -> Iterator[None]:
    """Inside: python's ``random``, numpy's global RNG and torch's CPU generator seeded with ``seed``. After:
    python's and torch's as they were before, numpy's re-seeded with ``seed ^ 0x5bd1e995`` (accelerator generators
    are never touched)."""
    states = random.getstate(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        torch.set_rng_state(states[1])
        np.random.seed(seed ^ 0x5BD1E995)


class SeededItems(ForwardingDatasetWrapper):
    """A map-style dataset whose item ``i`` in epoch ``e`` is drawn under :func:`own_rng` of
    ``item_seed(epoch_seed(seed, e, rank), i)``. ``set_epoch(e)`` (the training loop calls it on the loader's
    dataset) sets the epoch and passes it on to the wrapped dataset. Labels, classes and the transform are the
    wrapped dataset's."""

    def __init__(self, dataset, seed: int = 0, rank: int = 0):
        self.dataset = dataset
        self.seed, self.rank, self.epoch = int(seed), int(rank), 0
        self.base_seed = epoch_seed(self.seed, 0, self.rank)

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # targets, classes, reader... of the wrapped dataset
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base_seed = epoch_seed(self.seed, self.epoch, self.rank)
        if hasattr(self.dataset, 'set_epoch'):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        with own_rng(item_seed(self.base_seed, int(index))):
            return self.dataset[index]
