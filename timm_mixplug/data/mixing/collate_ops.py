"""The uint8 kernels of the mixing collates (timm's prefetcher path), written for a loader worker's one thread.

A collate runs once per batch in every loader worker, where its CPU time adds to the decoding of every image.
These kernels keep that cost at or below timm's ``FastCollateMixup``: they work image by image through float
buffers that are kept between calls (a fresh full-size temporary faults in new pages on every call, which costs
more than the arithmetic), and the batch they return is allocated in shared memory when they run in a loader
worker, as torch's ``default_collate`` does, so sending it to the main process copies nothing.

Formulas: mixup's ``lam x_i + (1 - lam) x_j`` (Zhang et al., ICLR 2018, eq. (1)) rounded to uint8, and BC+'s
``a_i u_i + b_i u_j + K_i`` in pixel space (Tokozume et al., CVPR 2018, formula (2) expanded, see ``bc.py``).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch.utils.data import get_worker_info


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch; in a loader worker, in shared memory (torch's ``default_collate`` does the same), so
    the worker's result queue sends it without another copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = 1
    for s in shape:
        numel *= int(s)
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty((0,), dtype=dtype).set_(storage).view(*shape)


class Buffers:
    """Float buffers of one image each, kept between calls (reallocated when the image shape changes)."""

    def __init__(self):
        self._bufs = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != dtype:
            buf = self._bufs[name] = torch.empty(tuple(shape), dtype=dtype)
        return buf


def lerp_uint8(images: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, bufs: Buffers,
               src: Optional[torch.Tensor] = None) -> torch.Tensor:
    """uint8 ``round(lam_i x_i + (1 - lam_i) x_src[partner_i])`` for every i, a new batch (``src``: the partner
    source, the batch by default); clipped to [0, 255] only where lam_i lies outside [0, 1]."""
    src = images if src is None else src
    out = batch_tensor(images.shape, torch.uint8)
    shape = images.shape[1:]
    f1, f2, i16 = bufs.get('f1', shape), bufs.get('f2', shape), bufs.get('i16', shape, torch.int16)
    own, others, dest = images.unbind(0), src.unbind(0), out.unbind(0)  # views made once, not per image
    for i, (j, w) in enumerate(zip(partner.tolist(), lam.tolist())):
        f1.copy_(own[i])
        f2.copy_(others[j])
        f2.lerp_(f1, w).round_()
        if not 0.0 <= w <= 1.0:
            f2.clamp_(0, 255)
        dest[i].copy_(i16.copy_(f2))  # float -> int16 -> uint8 is ~10x faster than float -> uint8 on CPU
    return out


def uint8_channel_sums(images: torch.Tensor, bufs: Buffers) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel: the sum of the pixel values and the sum of their squares, as float64 (B, C)."""
    n, ch = images.shape[:2]
    f = bufs.get('f1', images.shape[1:]).view(ch, -1)
    s = torch.empty((n, ch))
    q = torch.empty((n, ch))
    for i, image in enumerate(images.unbind(0)):  # float32 sums of integers < 2^24 are exact; squares round
        f.copy_(image.reshape(ch, -1))             # at 2^-24 relative
        torch.sum(f, -1, out=s[i])
        torch.linalg.vector_norm(f, dim=-1, out=q[i])
    return s.double(), q.double().square_()


def affine_mix(images: torch.Tensor, partner: torch.Tensor, a: torch.Tensor, b: torch.Tensor, k: torch.Tensor,
               out_dtype: torch.dtype, bufs: Buffers, src: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a_i u_i + b_i u_src[partner_i] + k_i`` (``k``: (B, C) per channel) as a new ``out_dtype`` batch, unclipped."""
    src = images if src is None else src
    out = batch_tensor(images.shape, out_dtype)
    ch = images.shape[1]
    f1, f2 = bufs.get('f1', images.shape[1:]), bufs.get('f2', images.shape[1:])
    k = k.to(torch.float32).view(len(images), ch, *([1] * (images.ndim - 2))).unbind(0)
    own, others, dest = images.unbind(0), src.unbind(0), out.unbind(0)  # views made once, not per image
    for i, (j, ai, bi) in enumerate(zip(partner.tolist(), a.tolist(), b.tolist())):
        f1.copy_(own[i])
        f2.copy_(others[j])
        torch.add(k[i], f2, alpha=bi, out=f2).add_(f1, alpha=ai)  # k + b u_j + a u_i, broadcasting k
        dest[i].copy_(f2)
    return out
