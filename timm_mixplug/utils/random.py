"""Per-epoch seeds: each epoch's data order, augmentation, mixing and dropout depend on (seed, epoch, rank) only."""
import numpy as np

__all__ = ['epoch_seed']


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed that differs for every (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank]).generate_state(1)[0])
