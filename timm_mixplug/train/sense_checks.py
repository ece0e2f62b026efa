"""Settings that cannot mean anything on the data at hand, found once the data is read and before the first step.

* ``--eval-metric many|medium|few`` when that shot group holds no class (by training images per class: many
  > 100, medium 21-100, few <= 20, Kang et al. / GLMC's convention) or the validation split holds no image of
  its classes: the metric would be NaN at every evaluation and no best checkpoint would ever be kept.
* ``--pad-crop`` on training images larger than the input size: CIFAR's pad-and-crop at the image's own scale
  would train on parts of the image at one scale while evaluation sees the whole image at another. Such an
  image is first resized and centre-cropped as evaluation does (``eval_geometry``), and the run says so
  (``pad_crop_note``).
"""
import random
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from timm.data.transforms_factory import transforms_imagenet_eval

from timm_mixplug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD, SHOT_NAMES, get_targets, shot_groups
from timm_mixplug.errors import UsageError

__all__ = ['check_eval_metric_group', 'eval_geometry', 'pad_crop_note']

_GROUP_RULE = {'many': f'more than {MANY_THRESHOLD}', 'medium': f'{FEW_THRESHOLD + 1} to {MANY_THRESHOLD}',
               'few': f'{FEW_THRESHOLD} or fewer'}


def _eval_labels(ds_eval) -> Optional[torch.Tensor]:
    try:
        return get_targets(ds_eval)
    except (ValueError, TypeError, AttributeError):
        return None


def check_eval_metric_group(eval_metric: str, class_counts: Optional[Sequence[int]], ds_eval=None) -> None:
    """Raise ``UsageError`` when ``eval_metric`` is a shot group (``SHOT_NAMES``) with no class in
    ``class_counts`` (training images per class), or, where ``ds_eval``'s labels can be read without loading
    images, with no validation image. Other metrics, or unknown counts, pass."""
    if eval_metric not in SHOT_NAMES or class_counts is None:
        return
    groups = shot_groups(class_counts)
    filled = [g for g in SHOT_NAMES if bool(groups[g].any())]
    others = ', '.join(['top1'] + [g for g in filled if g != eval_metric])
    counts = torch.as_tensor(class_counts)
    if eval_metric not in filled:
        raise UsageError(f'--eval-metric {eval_metric}: no class has {_GROUP_RULE[eval_metric]} training images '
                         f'(they have {int(counts.min())} to {int(counts.max())}), so {eval_metric}-shot top-1 is '
                         f'undefined at every evaluation and no best checkpoint would be kept; use one of {others}')
    labels = _eval_labels(ds_eval) if ds_eval is not None else None
    if labels is None or labels.numel() == 0:
        return
    present = torch.bincount(labels.long().reshape(-1), minlength=counts.numel())[:counts.numel()] > 0
    if not bool((groups[eval_metric] & present).any()):
        n = int(groups[eval_metric].sum())
        raise UsageError(f'--eval-metric {eval_metric}: the validation split holds no image of the {n} '
                         f'{eval_metric}-shot class{"" if n == 1 else "es"}, so their top-1 is undefined at every '
                         f'evaluation and no best checkpoint would be kept; use one of {others}')


def eval_geometry(data_config: Dict[str, Any]) -> Callable:
    """The resize and centre crop of timm's evaluation transform for ``data_config`` (no tensor conversion)."""
    tf = transforms_imagenet_eval(img_size=tuple(data_config['input_size'][-2:]), crop_pct=data_config['crop_pct'],
                                  crop_mode=data_config.get('crop_mode'), interpolation=data_config['interpolation'],
                                  use_prefetcher=True)
    steps = []
    for t in tf.transforms:
        if any(w in type(t).__name__ for w in ('Tensor', 'Numpy', 'Normalize')):  # the PIL steps only
            break
        steps.append(t)
    return type(tf)(steps)


def pad_crop_note(pad_crop, dataset) -> Optional[str]:
    """One line when the first training image is larger than the ``PadCrop``'s size (it is then fitted as
    evaluation fits it); reads that one sample with every random state kept, so the run's draws are unchanged."""
    if pad_crop is None or not hasattr(dataset, '__getitem__') or not hasattr(dataset, '__len__') or not len(dataset):
        return None
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        dataset[0]
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    if pad_crop.first_fitted is None:
        return None
    (w, h), (th, tw) = pad_crop.first_fitted, pad_crop.size
    pad_crop.first_fitted = None
    how = ' + '.join(f'{type(t).__name__}({getattr(t, "size", "")})' for t in getattr(pad_crop.fit, 'transforms', ()))
    return (f'--pad-crop: the training images (the first is {w}x{h}) are larger than the input size {tw}x{th}; each '
            f'larger image is first resized and centre-cropped as evaluation does ({how}), then padded and '
            f'cropped, so training and evaluation see one scale')
