"""Mixing registry and the pair-mixing machinery shared by BC, BC+ and superclass mixup.

Every mixer is a drop-in for timm's ``Mixup``: ``mixer(x, target) -> (x_mixed, soft_target)`` with a
``mixup_enabled`` switch; ``collate=True`` gives a ``FastCollateMixup``-compatible collate for timm's
prefetcher path. A pair mixer draws, for every element i, a partner j(i) and a ratio lam_i, and returns
image mix(x_i, x_j(i), lam_i) with target lam_i * t_i + (1 - lam_i) * t_j(i) (timm's label smoothing).
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from timm.data.mixup import FastCollateMixup, Mixup
from timm.loss import SoftTargetCrossEntropy

from timm_mixplug.data.mixing.collate_ops import Buffers, lerp_uint8

_MIXERS: Dict[str, 'MixerSpec'] = {}


@dataclass(frozen=True)
class MixerSpec:
    """A registered mixer and what a training loop needs to know about it, declared once at registration.

    Args:
        name: the registered name (``--mix NAME`` in train.py).
        factory: ``factory(num_classes, label_smoothing, collate, **kwargs) -> mixer``.
        loss: builds the loss for the mixer's soft targets (timm's ``SoftTargetCrossEntropy``; BC's KL for BC).
        label_smoothing: the method's published default, used when ``create_mixup(label_smoothing=None)``.
        zero_mean_input: the method zero-means every normalised input image, at train and test time (BC+).
        collate: ``collate=True`` is supported and equals the device mixer up to rounding.
        collate_needs_norm: the collate takes the data config's ``mean`` / ``std`` (it mixes in pixel space).
        distinct_classes: partners must be of another class (drawn from the training set where a batch and
            the mixer's memory hold one class).
        even_batch: the mixer pairs a batch with its reverse (timm's ``Mixup``), so the batch size must be even.
    """
    name: str
    factory: Callable
    loss: Callable[[], nn.Module] = SoftTargetCrossEntropy
    label_smoothing: float = 0.0
    zero_mean_input: bool = False
    collate: bool = True
    collate_needs_norm: bool = False
    distinct_classes: bool = False
    even_batch: bool = False


def register_mixup(name: str, factory: Optional[Callable] = None, **spec):
    """Register ``factory(num_classes, label_smoothing, collate, **kwargs) -> mixer`` under ``name``.

    Usable as a decorator (``@register_mixup('mine', loss=MyLoss)``) or a call; third-party code may add names.
    ``spec``: the :class:`MixerSpec` fields (loss, default label smoothing, zero-mean input, collate support).
    """
    def _add(fn):
        _MIXERS[name] = MixerSpec(name=name, factory=fn, **spec)
        return fn
    return _add(factory) if factory is not None else _add


def get_mixer_spec(name: str) -> MixerSpec:
    """The :class:`MixerSpec` registered under ``name``."""
    if name not in _MIXERS:
        raise ValueError(f'Unknown mixing method {name!r}; known methods: {", ".join(list_mixups())}. '
                         f'Third-party methods are added with timm_mixplug.register_mixup(name, factory).')
    return _MIXERS[name]


def list_mixups() -> Sequence[str]:
    return sorted(_MIXERS)


def create_mixup(
        name: str,
        num_classes: int,
        label_smoothing: Optional[float] = None,
        collate: bool = False,
        **kwargs,
):
    """Create a registered mixer (``bc``, ``bcplus``, ``superclass``, timm's ``mixup`` / ``cutmix``, ...).

    ``label_smoothing=None`` uses the method's published default (``MixerSpec.label_smoothing``): 0.1 for
    timm's mixup/cutmix (timm's ``Mixup`` default), 0.0 for BC, BC+ and superclass mixup (their papers use none).
    ``collate=True`` returns a collate callable for timm's ``create_loader(collate_fn=...)`` prefetcher path.
    """
    spec = get_mixer_spec(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f'num_classes must be an integer >= 2 for mixing, got {num_classes!r}.')
    if collate and not spec.collate:
        raise ValueError(f'{name} mixes on the device only; use collate=False.')
    smoothing = spec.label_smoothing if label_smoothing is None else label_smoothing
    return spec.factory(num_classes=num_classes, label_smoothing=smoothing, collate=collate, **kwargs)


def _timm_mixup(default_mixup: float, default_cutmix: float):
    """timm's ``Mixup`` / ``FastCollateMixup`` (Zhang et al., ICLR 2018; Yun et al., ICCV 2019)."""
    def factory(num_classes, label_smoothing=0.1, collate=False, mixup_alpha=default_mixup,
                cutmix_alpha=default_cutmix, **kwargs):
        cls = FastCollateMixup if collate else Mixup
        return cls(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing,
                   num_classes=num_classes, **kwargs)
    return factory


register_mixup('mixup', _timm_mixup(1.0, 0.0), label_smoothing=0.1, even_batch=True)
register_mixup('cutmix', _timm_mixup(0.0, 1.0), label_smoothing=0.1, even_batch=True)


def check_labels(target: torch.Tensor, num_classes: int) -> None:
    """One clear error for labels that are not class indices in [0, num_classes) (pair mixers draw partners
    independently, so any batch size works)."""
    if target.ndim != 1 or target.is_floating_point():
        raise ValueError(f'Mixing expects integer class indices shaped (batch,), got a {target.dtype} tensor '
                         f'shaped {tuple(target.shape)}; apply the mixer before any one-hot encoding.')
    lo, hi = torch.aminmax(target)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= num_classes:
        raise ValueError(f'Labels must lie in [0, {num_classes - 1}] but the batch holds {lo}..{hi}; '
                         f'set num_classes to the dataset\'s number of classes.')


def pair_target(
        y1: torch.Tensor,
        y2: torch.Tensor,
        lam: torch.Tensor,
        num_classes: int,
        smoothing: float = 0.0,
) -> torch.Tensor:
    """lam * t1 + (1 - lam) * t2 with timm's smoothed one-hot t (off = s/C, on = 1 - s + s/C)."""
    lam = lam.to(torch.float32).view(-1, 1)
    out = torch.zeros((y1.numel(), num_classes), device=y1.device, dtype=torch.float32)
    out.scatter_(1, y1.view(-1, 1), lam).scatter_add_(1, y2.view(-1, 1), 1.0 - lam)
    if smoothing:
        out.mul_(1.0 - smoothing).add_(smoothing / num_classes)
    return out


def bshape(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a per-element vector for broadcasting over an ``ndim``-dimensional batch."""
    return v.view(-1, *([1] * (ndim - 1)))


class PairMixer:
    """Base class: subclasses implement ``sample`` (partners and ratios) and may override ``coefficients`` and
    ``mix_chunk``. Mixing works in place on the batch, like timm's ``Mixup``.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.mixup_enabled = True
        self._scratch = None
        self._buffers = Buffers()  # the collate's per-image float buffers

    def partner_source(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The (images, labels) partners are drawn from, the batch first: the batch itself by default. A subclass
        that returns more takes their labels in ``sample(target, source)``."""
        return x, target

    def sample(self, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return (partner index (B,), ratio lam (B,) float32), both on target's device."""
        raise NotImplementedError

    def _sample(self, target: torch.Tensor, source: torch.Tensor):
        return self.sample(target) if source is target else self.sample(target, source)

    def coefficients(self, x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor):
        """Per-element coefficients for ``mix_chunk``, shaped to broadcast over the batch (default: lam); ``x`` is
        the partner source (the batch first)."""
        return bshape(lam, x.ndim)

    def mix_chunk(self, x1: torch.Tensor, x2: torch.Tensor, coef, out: torch.Tensor) -> torch.Tensor:
        """out = lam x1 + (1 - lam) x2 (mixup's eq.); may overwrite x2."""
        return torch.lerp(x2, x1, coef.to(x1.dtype), out=out)

    def _partners(self, src: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        """src[partner], into a buffer kept between calls on the CPU (fresh pages cost more than the mix)."""
        if src.device.type != 'cpu':  # device caching allocators make a fresh tensor cheap
            return src.index_select(0, partner)
        shape = (len(partner), *src.shape[1:])
        if self._scratch is None or self._scratch.shape != shape or self._scratch.dtype != src.dtype:
            self._scratch = torch.empty(shape, dtype=src.dtype)
        return torch.index_select(src, 0, partner, out=self._scratch)

    def mix_(self, x: torch.Tensor, partner: torch.Tensor, coef, src: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mix a float batch in place with the partners ``src[partner]`` (``src`` defaults to the batch)."""
        return self.mix_chunk(x, self._partners(x if src is None else src, partner), coef, out=x)

    def targets(self, target, partner, lam, source: Optional[torch.Tensor] = None):
        partner_t = (target if source is None else source)[partner]
        return pair_target(target, partner_t, lam, self.num_classes, self.label_smoothing)

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        check_labels(target, self.num_classes)
        if not self.mixup_enabled:
            ones = torch.ones(len(target), device=target.device)
            return x, pair_target(target, target, ones, self.num_classes, self.label_smoothing)
        src, src_t = self.partner_source(x, target)
        partner, lam = self._sample(target, src_t)
        x = self.mix_(x, partner, self.coefficients(src, partner, lam), src)
        return x, self.targets(target, partner, lam, src_t)

    def collate_uint8(self, images: torch.Tensor, target: torch.Tensor):
        """Mix a uint8 batch (prefetcher path) into a new one, rounded to uint8: the linear mix with the
        per-element ``coefficients`` (lam by default)."""
        src, src_t = self.partner_source(images, target)
        partner, lam = self._sample(target, src_t)
        w = self.coefficients(src, partner, lam).reshape(len(partner))
        return lerp_uint8(images, partner, w, self._buffers, src), self.targets(target, partner, lam, src_t)


def stack_uint8(batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack a list of (uint8 image, label) into (uint8 (B, C, H, W), int64 (B,)), as timm's fast_collate."""
    first = batch[0][0]
    if isinstance(first, np.ndarray):
        images = torch.from_numpy(np.stack([b[0] for b in batch]))
    else:
        images = torch.stack([b[0] for b in batch])
    if images.dtype != torch.uint8:
        raise ValueError(f'The mixing collate expects uint8 images (timm\'s prefetcher transforms), got '
                         f'{images.dtype}; use collate=False and mix after the loader instead.')
    target = torch.as_tensor([int(b[1]) for b in batch], dtype=torch.int64)
    return images, target


class PairMixCollate(FastCollateMixup):
    """``FastCollateMixup`` contract for a ``PairMixer``: list[(uint8 image, label)] -> (uint8 batch, soft target);
    BC+ returns a float batch in pixel space instead (timm's ``PrefetchLoader`` normalises it the same way).

    Subclasses timm's class so ``PrefetchLoader.mixup_enabled`` reaches it; the switch is shared with the
    wrapped mixer.
    """

    def __init__(self, mixer: PairMixer):  # timm's __init__ is not called: the mixer holds the settings
        self.mixer = mixer

    @property
    def mixup_enabled(self):
        return self.mixer.mixup_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value):
        self.mixer.mixup_enabled = value

    @property
    def num_classes(self):
        return self.mixer.num_classes

    def __call__(self, batch, _=None):
        images, target = stack_uint8(batch)
        check_labels(target, self.mixer.num_classes)
        if not self.mixer.mixup_enabled:
            ones = torch.ones(len(target))
            return images, pair_target(target, target, ones, self.mixer.num_classes, self.mixer.label_smoothing)
        return self.mixer.collate_uint8(images, target)
