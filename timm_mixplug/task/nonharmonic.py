"""Non-harmonic learning: importance-sampled augmentation (T. Okadome, "新しい深層学習手法－非調和学習－"
[a new deep-learning method: non-harmonic learning], Kwansei Gakuin University, technology presentation, 2022).

Each image of the mini-batch is augmented into M views; the current model scores every view (its loss on
the true class); one view per image is sampled with probability given by that importance and only the
sampled views are trained on (the presentation's steps 1-4). MaxUp (Gong et al. 2021) keeps the max-loss view
instead; it is the ``temperature=0`` limit here.

Pieces:

* ``MultiViewDataset`` returns a tuple of M independently transformed views per item (any timm or
  torchvision transform). ``multiview_collate`` stacks them to (B, M, ...); timm's ``fast_collate`` (the
  prefetcher path) flattens them view-major to (M*B, ...) as it does for AugMix splits; the task accepts
  both. ``view_augment`` is the cheaper alternative: the loader yields one image and the views are made
  on the device (``DeviceAugment``-style callables from ``data.transforms``).
* ``view_probabilities`` / ``sample_views``: importance -> probabilities -> one index per image.
* ``NonHarmonicTask``: a ``timm.task.TrainingTask``; it scores all B*M views without gradient, samples,
  applies the mixer (any ``--mix``) to the sampled batch and trains on it. Extra scalars
  ``nh_chosen_loss`` / ``nh_mean_loss`` / ``nh_max_loss`` (mean over images of the chosen, average and max
  view loss) show the sampler at work.
"""
import logging
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import default_collate

from timm.loss import SoftTargetCrossEntropy
from timm.utils import unwrap_model

from timm_mixplug.task.base import SingleModuleTask
from timm_mixplug.data.wrappers import TransformOwningWrapper

__all__ = [
    'view_probabilities', 'sample_views', 'view_scores', 'MultiViewDataset', 'multiview_collate', 'NonHarmonicTask',
]

_logger = logging.getLogger(__name__)

IMPORTANCE = ('loss', 'error')
SCORE_MODES = ('eval', 'train')


# ----------------------------------------------------------------------------------------------------------
# sampler
# ----------------------------------------------------------------------------------------------------------
def view_probabilities(importance: torch.Tensor, temperature: float = 1.0, uniform_mix: float = 0.0) -> torch.Tensor:
    """Sampling probabilities (B, M) from non-negative importances (B, M).

    p_j = (1 - u) * s_j^(1/T) / sum_k s_k^(1/T) + u / M. T = 1: proportional to the importance (Okadome);
    T -> 0: the max-importance view (MaxUp), ``temperature=0`` gives exactly that (ties: lowest index);
    T -> inf: uniform (ordinary random augmentation). ``uniform_mix`` u in [0, 1] is a floor so that every
    view keeps probability >= u / M. A row whose importances are all zero is sampled uniformly; NaN counts as
    zero and +inf as the largest importance.
    """
    if temperature < 0:
        raise ValueError(f'temperature must be >= 0, got {temperature}')
    if not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f'uniform_mix must lie in [0, 1], got {uniform_mix}')
    s = importance.float()
    s = torch.nan_to_num(s, nan=0.0, posinf=torch.finfo(s.dtype).max).clamp_min(0)  # AMP overflow -> max
    M = s.shape[-1]
    if temperature == 0:
        p = F.one_hot(s.argmax(dim=-1), M).float()
    else:
        # scale by the row max before the power: same ratios, no overflow for small T
        top = s.amax(dim=-1, keepdim=True)
        w = (s / top.clamp_min(torch.finfo(s.dtype).tiny)).pow(1.0 / temperature)
        total = w.sum(dim=-1, keepdim=True)
        p = torch.where(total > 0, w / total.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(w, 1.0 / M))
    if uniform_mix:
        p = p * (1.0 - uniform_mix) + uniform_mix / M
    return p


def sample_views(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One view index per row of ``probs`` (B, M) -> (B,) int64, on probs' device."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def view_scores(logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy and error 1 - p(true class), in float32."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, target.view(-1, 1)).squeeze(1)
    return -logp, -torch.expm1(logp)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
class MultiViewDataset(TransformOwningWrapper):
    """Wrap an (image, label) dataset to return ``(tuple of M views, label)``, each view an independent
    draw of ``transform`` applied to the same raw image.

    Like timm's ``AugMixDataset`` it owns the transform: setting ``.transform`` (as timm's
    ``create_loader`` does) stores it here and leaves the wrapped dataset returning raw images.
    """

    def __init__(self, dataset, num_views: int, transform: Optional[Callable] = None):
        if num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        self.dataset = dataset
        self.num_views = num_views
        self._own_transform(transform)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img, label = self.dataset[i]
        if self._transform is None:
            raise RuntimeError('MultiViewDataset needs a (random) transform to make different views.')
        return tuple(self._transform(img) for _ in range(self.num_views)), label


def _as_tensor(v):
    return torch.from_numpy(v) if isinstance(v, np.ndarray) else v


def multiview_collate(batch: Sequence[Tuple[Sequence[Any], Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """list[(views tuple, label)] -> (views (B, M, ...), labels (B,)). Tensors or arrays (uint8 from timm's
    ``ToNumpy`` stays uint8)."""
    views = torch.stack([torch.stack([_as_tensor(v) for v in item[0]]) for item in batch])
    target = default_collate([item[1] for item in batch])
    if target.ndim == 1:
        target = target.long()
    return views, target




# ----------------------------------------------------------------------------------------------------------
# task
# ----------------------------------------------------------------------------------------------------------
@contextmanager
def _score_context(module: nn.Module, mode: str):
    """'eval': running BN statistics, no dropout. 'train': batch statistics (dropout/drop-path active) with the
    BN running buffers restored afterwards, so scoring never moves them."""
    was_training = module.training
    if mode == 'eval':
        module.train(False)
        try:
            yield
        finally:
            module.train(was_training)
        return
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            saved.append((m, [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                              if b is not None]))
    module.train(True)
    try:
        yield
    finally:
        module.train(was_training)
        with torch.no_grad():
            for m, bufs in saved:
                live = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                for dst, src in zip(live, bufs):
                    dst.copy_(src)


class NonHarmonicTask(SingleModuleTask):
    """Importance-sampled augmentation (Okadome's non-harmonic learning) as a timm ``TrainingTask``.

    ``forward(input, target)`` accepts
      * ``input`` (B, M, C, H, W) and ``target`` (B,) (``multiview_collate``),
      * ``input`` (M*B, C, H, W) view-major and ``target`` (M*B,) (timm's ``fast_collate`` of view tuples),
      * a list of M tensors (B, C, H, W) (``default_collate`` of view tuples), or
      * with ``view_augment``: ``input`` (B, C, H, W), views made on the device by ``view_augment(x)``.
    ``target`` holds int class labels (mixing happens here, after the choice).

    Args:
        model: the timm model (the model of record).
        num_views: M.
        mixer: optional timm-Mixup-like ``(x, y) -> (x, soft_target)``, applied to the sampled batch.
        criterion: training loss; default soft-target CE with a mixer, else CE.
        temperature, uniform_mix: see ``view_probabilities``.
        importance: 'loss' (cross-entropy of the true class, default) or 'error' (1 - p(true class)).
        score_mode: 'eval' (default: BN running statistics, no dropout, cheapest) or 'train' (batch
            statistics of the B*M views; BN buffers restored).
        score_dtype: autocast dtype for scoring (e.g. torch.bfloat16); None inherits the caller's autocast.
        score_scale: resize views by this factor for scoring only (< 1 is cheaper and approximate; models
            must accept the smaller size). 1.0 = exact.
        score_batch_size: score in chunks of this many views (memory); None = all B*M at once.
        channels_last: score in channels-last memory format.
        view_augment: callable (N, C, H, W) -> (N, C, H, W) (or returning (x, record)) to make views on the
            device from single images.
        generator: optional torch.Generator for the view sampling.
    """

    def __init__(
            self,
            model: nn.Module,
            num_views: int = 4,
            mixer: Optional[Callable] = None,
            criterion: Optional[Callable] = None,
            temperature: float = 1.0,
            uniform_mix: float = 0.0,
            importance: str = 'loss',
            score_mode: str = 'eval',
            score_dtype: Optional[torch.dtype] = None,
            score_scale: float = 1.0,
            score_batch_size: Optional[int] = None,
            channels_last: bool = False,
            view_augment: Optional[Callable] = None,
            generator: Optional[torch.Generator] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        if num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        if importance not in IMPORTANCE:
            raise ValueError(f'importance must be one of {IMPORTANCE}, got {importance!r}')
        if score_mode not in SCORE_MODES:
            raise ValueError(f'score_mode must be one of {SCORE_MODES}, got {score_mode!r}')
        if not 0 < score_scale <= 1:
            raise ValueError(f'score_scale must lie in (0, 1], got {score_scale}')
        view_probabilities(torch.ones(1, 1), temperature, uniform_mix)  # validates both
        self.trainable_module = model
        self.num_views = num_views
        self.mixer = mixer
        if criterion is None:
            criterion = SoftTargetCrossEntropy() if mixer is not None else nn.CrossEntropyLoss()
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        self.temperature = temperature
        self.uniform_mix = uniform_mix
        self.importance = importance
        self.score_mode = score_mode
        self.score_dtype = score_dtype
        self.score_scale = score_scale
        self.score_batch_size = score_batch_size
        self.channels_last = channels_last
        self.view_augment = view_augment
        self.generator = generator

    # -- timm task plumbing (same as ClassificationTask) ------------------------------------------------------
    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = self.trainable_module
        return self.trainable_module

    # -- steps ------------------------------------------------------------------------------------------------
    def split_views(self, input, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Bring any supported layout to (views (B, M, C, H, W), labels (B,))."""
        M = self.num_views
        if isinstance(input, (list, tuple)):
            input = torch.stack(list(input), dim=1)
        if self.view_augment is not None and input.ndim == 4:
            B = input.shape[0]
            flat = input.repeat_interleave(M, dim=0)  # (B*M): b-major
            flat = self.view_augment(flat)
            if isinstance(flat, tuple):
                flat = flat[0]
            return flat.view(B, M, *flat.shape[1:]), target
        if input.ndim == 5:
            if input.shape[1] != M:
                raise ValueError(f'Expected {M} views per image, got input shaped {tuple(input.shape)}.')
            return input, target
        if input.ndim == 4:  # timm fast_collate: view-major (M*B)
            if input.shape[0] % M or target.shape[0] != input.shape[0]:
                raise ValueError(f'A flat multi-view batch needs M*B images and M*B labels (M={M}); got '
                                 f'{tuple(input.shape)} and {tuple(target.shape)}. Wrap the dataset in '
                                 f'MultiViewDataset or pass view_augment.')
            B = input.shape[0] // M
            return input.view(M, B, *input.shape[1:]).transpose(0, 1), target[:B]
        raise ValueError(f'Unsupported input shape {tuple(input.shape)}')

    def _score_module(self) -> nn.Module:
        return unwrap_model(self.trainable_module)

    @torch.no_grad()
    def score(self, flat: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loss, error) per view for a flat batch of views, without gradient and without touching BN state."""
        module = self._score_module()
        if self.score_scale != 1.0:
            flat = F.interpolate(flat, scale_factor=self.score_scale, mode='bilinear', align_corners=False,
                                 antialias=True)
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        amp = nullcontext() if self.score_dtype is None else torch.autocast(flat.device.type, dtype=self.score_dtype)
        step = self.score_batch_size or flat.shape[0]
        losses, errors = [], []
        with _score_context(module, self.score_mode), torch.inference_mode(), amp:
            for s in range(0, flat.shape[0], step):
                loss, err = view_scores(module(flat[s:s + step]), labels[s:s + step])
                losses.append(loss)
                errors.append(err)
        # clone: leave inference mode tensors behind
        return torch.cat(losses).clone(), torch.cat(errors).clone()

    def choose(self, views: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Score the (B, M, ...) views and sample one per image: returns (chosen (B, ...), index (B,), stats)."""
        B, M = views.shape[:2]
        loss, err = self.score(views.flatten(0, 1), target.repeat_interleave(M))
        loss, err = loss.view(B, M), err.view(B, M)
        probs = view_probabilities(loss if self.importance == 'loss' else err, self.temperature, self.uniform_mix)
        idx = sample_views(probs, self.generator)
        chosen = views[torch.arange(B, device=views.device), idx]
        stats = {
            'nh_chosen_loss': loss.gather(1, idx.view(-1, 1)).mean(),
            'nh_mean_loss': loss.mean(),
            'nh_max_loss': loss.amax(dim=1).mean(),
        }
        return chosen, idx, stats

    def forward(self, input, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        views, target = self.split_views(input, target)
        if target.is_floating_point():
            raise ValueError('NonHarmonicTask scores views against class indices; pass int labels and give the '
                             'mixer to the task (it mixes after the choice) instead of mixing in the loader.')
        chosen, _, stats = self.choose(views, target)
        if self.channels_last:
            chosen = chosen.contiguous(memory_format=torch.channels_last)
        train_target = target
        if self.mixer is not None:
            chosen, train_target = self.mixer(chosen, target)
        output = self.trainable_module(chosen)
        loss = self.criterion(output, train_target)
        return {'loss': loss, 'output': output, **stats}
