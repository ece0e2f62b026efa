"""Where a pair mixer runs on timm's prefetcher path: in the loader workers' collate, or on the device.

* ``'collate'``: the mixer's ``FastCollateMixup``-style collate mixes the uint8 images in every loader worker
  (BC+ emits its pixel-space float batch, see ``bc.py``); timm's ``PrefetchLoader`` then normalises the mixed batch.
* ``'device'``: the workers run timm's plain ``fast_collate`` (uint8 images, integer labels), timm's
  ``PrefetchLoader`` copies and normalises the batch on the device, and the device mixer (``collate=False``) mixes
  the normalised batch there (after BC+'s per-image zero-mean): the exact formulas in float32, with BC+'s
  per-image mean and standard deviation a few vectorised reductions on the device, and nothing but the
  decoding left to the workers. :func:`mix_prefetched` is that path for a loop of your own.

On an accelerator the device path is the default: the workers are usually an ImageNet run's bottleneck, and
a uint8 batch is half the bytes of BC+'s float16 one. On the CPU device the collate path is the default: both
paths spend about the same CPU per image (``benchmarks/bench_loader.py``), and the collate path spends it in the
loader workers, in parallel with the training step, instead of in the training process.
"""
from typing import Iterable, Iterator, Optional, Tuple

import torch

from timm_mixplug.data.mixing.base import MixerSpec
from timm_mixplug.data.mixing.bc import zero_mean

COLLATE, DEVICE = 'collate', 'device'


def mixing_path(spec: MixerSpec, device: torch.device, prefetcher: bool = True,
                on_device: Optional[bool] = None) -> str:
    """``'collate'`` or ``'device'`` for the mixer ``spec`` on ``device``.

    ``on_device``: force the device path (True) or the collate path (False); None picks the device path on any
    non-CPU device and the collate path on the CPU. Without the prefetcher, or for a mixer without a collate,
    batches are mixed on the device.
    """
    if not prefetcher or not spec.collate:
        if on_device is False:
            why = 'the loader has no prefetcher' if not prefetcher else f'{spec.name} has no collate'
            raise ValueError(f'on_device=False asks for mixing in the collate, but {why}; use on_device=None.')
        return DEVICE
    if on_device is None:
        on_device = torch.device(device).type != 'cpu'
    return DEVICE if on_device else COLLATE


def describe_path(name: str, path: str, device: torch.device, prefetcher: bool = True) -> str:
    """The one start-up line saying where ``name`` mixes."""
    kind = torch.device(device).type
    if not prefetcher:
        return f'Mixing: {name} on the device ({kind}), on the batches of the plain loader (no prefetcher)'
    if path == DEVICE:
        return (f"Mixing: {name} on the device ({kind}), on the normalised batch after timm's prefetcher; the "
                f'loader workers send uint8 batches')
    return f"Mixing: {name} in the loader's collate, on the uint8 images (timm's prefetcher path)"


def mix_prefetched(loader: Iterable, mixer,
                   zero_mean_input: bool = False) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The device path for a loop of your own: ``(mixed batch, soft target)`` for every normalised batch of a timm
    prefetcher ``loader`` built with timm's plain ``fast_collate``; ``zero_mean_input`` (BC+) zero-means each
    image first, as at test time."""
    for x, target in loader:
        if zero_mean_input:
            x = zero_mean(x)
        yield mixer(x, target)
