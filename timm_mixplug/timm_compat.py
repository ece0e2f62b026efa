"""Our mixers in timm's own ``train.py`` (upstream, unchanged but for two edits), see README "From timm's train.py".

``setup_timm_mixing`` returns what timm's train.py builds at its mixup step (``collate_fn`` for the prefetcher
path, ``mixup_fn`` otherwise) plus the matching training loss, and for BC+ adds the per-image zero-mean
(BC+'s preprocessing, at train *and* test time) as a forward pre-hook on the model: it then applies after
timm's ``PrefetchLoader`` normalisation in train and validate, travels into timm's EMA copies (they deep-copy
the model) and leaves the model's state dict keys unchanged.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from timm_mixplug.data.mixing.bc import zero_mean
from timm_mixplug.data.mixing.base import create_mixup, get_mixer_spec

__all__ = ['setup_timm_mixing', 'add_zero_mean_input', 'has_zero_mean_input']


def _zero_mean_pre_hook(module: nn.Module, inputs: Tuple[Any, ...]):
    x = inputs[0]
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return (zero_mean(x.clone()),) + tuple(inputs[1:])  # clone: never change the caller's batch
    return None


def add_zero_mean_input(model: nn.Module) -> nn.Module:
    """Zero-mean every input image of ``model`` (over C*H*W, as BC+ does) before its forward; idempotent."""
    if not has_zero_mean_input(model):
        model.register_forward_pre_hook(_zero_mean_pre_hook)
    return model


def has_zero_mean_input(model: nn.Module) -> bool:
    return any(h is _zero_mean_pre_hook for h in model._forward_pre_hooks.values())


def setup_timm_mixing(name: str, model: nn.Module, num_classes: int, data_config: Dict[str, Any],
                      prefetcher: bool = True, label_smoothing: Optional[float] = None, **kwargs):
    """``(collate_fn, mixup_fn, train_loss_fn)`` for ``--mix``-style ``name`` in timm's train.py.

    ``prefetcher`` (timm's ``args.prefetcher``): True gives a ``FastCollateMixup``-compatible ``collate_fn``
    for ``create_loader(collate_fn=...)`` (so ``loader.mixup_enabled`` switches it, as timm's
    ``--mixup-off-epoch`` does) and ``mixup_fn=None``; False gives ``collate_fn=None`` and a device mixer
    to call as ``input, target = mixup_fn(input, target)``. BC / BC+ train with BC's KL loss, the other
    mixers with timm's ``SoftTargetCrossEntropy``. For ``bcplus`` the model gets ``add_zero_mean_input``.
    ``kwargs`` go to ``create_mixup`` (e.g. ``hierarchy=`` for ``superclass``, ``mixup_alpha=`` for ``mixup``).
    """
    spec = get_mixer_spec(name)
    if spec.collate_needs_norm and prefetcher:
        kwargs.setdefault('mean', tuple(data_config['mean']))
        kwargs.setdefault('std', tuple(data_config['std']))
    if spec.zero_mean_input:
        add_zero_mean_input(model)
    mixer = create_mixup(name, num_classes, label_smoothing=label_smoothing, collate=prefetcher, **kwargs)
    loss = spec.loss()
    return (mixer, None, loss) if prefetcher else (None, mixer, loss)
