"""GLMC (Du et al., "Global and Local Mixture Consistency Cumulative Learning for Long-tailed Visual
Recognitions", CVPR 2023) and the mix-ratio contrastive GLMC paper's mix-ratio contrastive loss (``clr_weight > 0``), as a timm task.

Data (``GLMCDataset`` + ``glmc_collate``): every training item is the loader's (shuffled) image i paired
with an image j drawn with replacement with probability proportional to n_{y_j}^-r (the re-sampled batch;
r = ``resample_power``, 0 = uniform); each image comes as two independent augmentations. The collate yields
``input`` (4B, C, H, W) ordered [x_a view 1, x_a view 2, x_b view 1, x_b view 2] (a: original, b:
re-sampled) and ``target`` (2B,) = [y_a, y_b]. This works with timm's prefetcher (uint8 -> normalised on the
device), DistributedSampler and any number of workers; the per-item draw of j uses the worker's seeded torch
RNG, so a run is reproducible for a given seed and worker count.

Per step (``GLMCTask.forward``), with one lam ~ Beta(alpha, alpha) (alpha = 1):

    x_mix = lam * x_a1 + (1 - lam) * x_b1                                          (global mixup)
    x_cut = x_a2 with a box of side ceil(side * sqrt(1 - lam)) pasted from x_b2      (local CutMix)
    y_mix = lam * onehot(y_a) + (1 - lam) * onehot(y_b)      (both mixes; CutMix uses lam, not the box area)
    y_w   = lam * w[y_a] onehot(y_a) + (1 - lam) * w[y_b] onehot(y_b),  w_c = C * n_c^-q / sum_k n_k^-q, q = 1.2
    a     = 1 - (epoch / epochs)^2                                                    (cumulative schedule)

    L = a [CE(fc(x_mix), y_mix) + CE(fc(x_cut), y_mix)] + (1 - a) [CE(fc_cb(x_mix), y_w) + CE(fc_cb(x_cut), y_w)]
        + contrast_weight * [S(p_mix, z_cut) + S(p_cut, z_mix)]
        + clr_weight * L_CLR                                                          (mix-ratio contrastive paper, optional)

with CE(l, t) = -mean_b sum_c t_c log softmax(l)_c (y_w not renormalised), S(p, z) = -cos(p, stop_grad(z))
(batch mean, SimSiam form), z = projector(f) = Linear(f, 128), p = predictor(z) = Linear(128, 128), f the
backbone's pooled pre-logits features (``forward_head(forward_features(x), pre_logits=True)``).
fc is the instance-balanced head; fc_cb, the class-balanced head, is the timm model's own classifier, so
the eval model is the plain timm model (``best.safetensors`` loads with ``timm.create_model``).

The mix-ratio contrastive paper (its eqs. (1)-(3)), with z1 = z(x_a1), z2 = z(x_b1) (features of the images before mixing; view 1,
which the mixup used) and z_m = z(x_mix), z_c = z(x_cut):

    L(z, z~)  = NT-Xent (SimCLR) over the 2N vectors {z_i} U {z~_i}: positive pairs (z_i, z~_i), the other
                2N - 2 vectors negatives, cosine similarity / tau, averaged over all 2N anchors      (1)
    L_mixup   = lam L(z1, z_m) + (1 - lam) L(z2, z_m);   L_cutmix = lam L(z1, z_c) + (1 - lam) L(z2, z_c)   (2)
    L_CLR     = (L_mixup + L_cutmix) / 2                                                            (3)

Ours, not the paper's (``clr_exclude_same_class``; its stated future work): every NT-Xent leaves the negatives
that share a class with the anchor out of its denominator, z1 holding y_a, z2 y_b and z_m, z_c both.
Ours too (``clr_own_projector``; the paper says only "features"): the NT-Xent reads its own projection
h = Linear(f, 128) instead of GLMC's z, so the two losses no longer pull on one projection.

Deliberate differences / choices (see docs/dml_glmc.md): the box is exactly ceil(side*sqrt(1-lam)) wide
before clipping (centre uniform); the re-sampled batch is drawn per item instead of by a second loader (same
distribution: i.i.d. with replacement, weights n_c^-r); with ``joint_forward=False`` (default) the mixup,
CutMix and clean batches go through the network in separate calls (separate batch-norm statistics, like
separate forward passes) inside one module call, so DDP sees one forward per step.
"""
import bisect
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from timm.utils import unwrap_model

from timm_mixplug.data.longtail import get_targets
from timm_mixplug.data.wrappers import TransformOwningWrapper
from timm_mixplug.loss.contrastive import mixed_nt_xent, negative_cosine
from timm_mixplug.task.base import SingleModuleTask
from timm_mixplug.task.evaluators import ShotAccuracyEvaluator

_soft_ce = SoftTargetCrossEntropy()  # -mean_b sum_c t_c log softmax(z)_c, targets as given

__all__ = [
    'cumulative_weight', 'class_balanced_weights', 'resample_weights', 'sample_lambda', 'cutmix_box', 'glmc_mix',
    'GLMCDataset', 'glmc_collate', 'GLMCModel',
    'GLMCTask',
]


# ----------------------------------------------------------------------------------------------------------
# schedule, weights, mixing
# ----------------------------------------------------------------------------------------------------------
def cumulative_weight(epoch: int, num_epochs: int) -> float:
    """GLMC's cumulative re-balancing weight a = 1 - (epoch / epochs)^2 (epoch counted from 0)."""
    if num_epochs <= 0:
        raise ValueError(f'num_epochs must be > 0, got {num_epochs}.')
    return 1.0 - (float(epoch) / float(num_epochs)) ** 2


def class_balanced_weights(counts: Union[torch.Tensor, Sequence[int]], power: float = 1.2) -> torch.Tensor:
    """w_c = C * n_c^-q / sum_k n_k^-q (float32, sums to C); classes with n_c = 0 get weight 0."""
    n = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    w = torch.where(n > 0, n.clamp_min(1).pow(-power), torch.zeros_like(n))
    return (w / w.sum() * n.numel()).float()


def resample_weights(targets: Union[torch.Tensor, Sequence[int]], counts=None, power: float = 0.0) -> torch.Tensor:
    """Per-sample probabilities proportional to n_{y}^-r (r = 0: uniform), float64, summing to 1."""
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    n = torch.bincount(t) if counts is None else torch.as_tensor(counts, dtype=torch.long).reshape(-1)
    per_class = n.double().clamp_min(1).pow(-power)
    w = per_class[t]
    return w / w.sum()


def sample_lambda(alpha: float = 1.0) -> float:
    """One lam ~ Beta(alpha, alpha) from torch's global RNG (Beta(1, 1) = U(0, 1))."""
    if alpha <= 0:
        return 1.0
    if alpha == 1.0:
        return float(torch.rand(()))
    g = torch._standard_gamma(torch.full((2,), float(alpha), dtype=torch.float64))
    return float(g[0] / g.sum())


def cutmix_box(height: int, width: int, lam: float) -> Tuple[int, int, int, int]:
    """(y1, y2, x1, x2): a box of side ceil(side * sqrt(1 - lam)) centred uniformly, clipped to the image."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    bh, bw = math.ceil(height * cut), math.ceil(width * cut)
    cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    y1, x1 = cy - bh // 2, cx - bw // 2
    return max(y1, 0), min(max(y1 + bh, 0), height), max(x1, 0), min(max(x1 + bw, 0), width)


def glmc_mix(x_a1: torch.Tensor, x_a2: torch.Tensor, x_b1: torch.Tensor, x_b2: torch.Tensor, lam: float):
    """Global mixup of the first views, local CutMix of the second views -> (x_mix, x_cut, box)."""
    x_mix = torch.lerp(x_b1, x_a1, lam) if x_a1.is_floating_point() else lam * x_a1 + (1 - lam) * x_b1
    y1, y2, x1, x2 = cutmix_box(x_a2.shape[-2], x_a2.shape[-1], lam)
    x_cut = x_a2.clone()
    x_cut[..., y1:y2, x1:x2] = x_b2[..., y1:y2, x1:x2]
    return x_mix, x_cut, (y1, y2, x1, x2)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
class GLMCDataset(TransformOwningWrapper):
    """Item i -> ((a1, a2, b1, b2), (y_a, y_b)): image i and a re-sampled image j (P(j) ~ n_{y_j}^-r), two
    independent draws of ``transform`` each. Owns the transform like timm's ``AugMixDataset`` (setting
    ``.transform``, as ``create_loader`` does, stores it here; the wrapped dataset returns raw images).
    ``.targets`` are the wrapped dataset's labels (so class counts stay readable).
    """

    def __init__(self, dataset, resample_power: float = 0.0, targets=None, num_views: int = 2,
                 transform: Optional[Callable] = None):
        if num_views not in (1, 2):
            raise ValueError(f'num_views must be 1 or 2, got {num_views}')
        self.dataset = dataset
        t = torch.as_tensor(targets if targets is not None else get_targets(dataset), dtype=torch.long)
        if t.numel() != len(dataset):
            raise ValueError(f'{t.numel()} targets for a dataset of {len(dataset)} items.')
        self.targets = t.tolist()
        self.num_views = num_views
        self.resample_power = float(resample_power)
        cdf = torch.cumsum(resample_weights(t, power=self.resample_power), 0)
        cdf[-1] = 1.0
        self._cdf = cdf.tolist()  # python floats: cheap bisect per item, picklable for workers
        if hasattr(dataset, 'classes'):
            self.classes = dataset.classes
        self._own_transform(transform)

    def __len__(self):
        return len(self.dataset)

    def draw(self) -> int:
        """A re-sampled index from the torch RNG (seeded per worker by the DataLoader)."""
        return min(bisect.bisect_right(self._cdf, float(torch.rand(()))), len(self._cdf) - 1)

    def _views(self, img):
        if self._transform is None:
            return (img,) * self.num_views
        return tuple(self._transform(img) for _ in range(self.num_views))

    def __getitem__(self, i):
        img_a, y_a = self.dataset[i]
        j = self.draw()
        img_b, y_b = self.dataset[j]
        return self._views(img_a) + self._views(img_b), (int(y_a), int(y_b))


def glmc_collate(batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """list[((a1, a2, b1, b2), (y_a, y_b))] -> (images (4B, ...) view-major, targets (2B,) = [y_a; y_b]).

    Views may be tensors or numpy arrays (timm's prefetcher transforms give uint8 CHW arrays; they stay
    uint8 for the prefetcher to normalise). With one view per image the layout is [a; b] (2B, ...).
    """
    B = len(batch)
    V = len(batch[0][0])
    x = torch.stack([torch.as_tensor(v) for item in batch for v in item[0]])
    x = x.view(B, V, *x.shape[1:]).transpose(0, 1).reshape(V * B, *x.shape[1:])
    y = torch.as_tensor([item[1] for item in batch], dtype=torch.long)  # (B, 2)
    return x, y.t().reshape(-1)


# ----------------------------------------------------------------------------------------------------------
# model and task
# ----------------------------------------------------------------------------------------------------------
def _feature_dim(backbone: nn.Module) -> int:
    head = backbone.get_classifier() if hasattr(backbone, 'get_classifier') else None
    if isinstance(head, nn.Linear):
        return head.in_features
    dim = getattr(backbone, 'head_hidden_size', None) or getattr(backbone, 'num_features', None)
    if not dim:
        raise ValueError(f'cannot find the feature size of {type(backbone).__name__} (no linear classifier, '
                         f'head_hidden_size or num_features).')
    return int(dim)


class GLMCModel(nn.Module):
    """A timm classifier plus GLMC's extra heads.

    ``backbone``: the timm model; its own classifier is the class-balanced head fc_cb (evaluation head).
    ``fc``: the instance-balanced linear head; ``projector``: Linear(feat, proj_dim); ``predictor``:
    Linear(proj_dim, proj_dim) (no nonlinearity, as in GLMC); ``clr_projector`` (``own_clr_projector=True``
    only): Linear(feat, proj_dim), the NT-Xent's own projection.

    ``forward(x)`` -> fc_cb logits. ``forward(groups, train=True)`` with a tuple of batches -> per group
    (fc logits, fc_cb logits, z, p, h), concatenated over the groups, h the NT-Xent's features
    (``clr_projector(f)``, or z without it); each group is a separate backbone call (own batch-norm
    statistics) unless ``joint=True``.
    """

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, own_clr_projector: bool = False):
        super().__init__()
        if not (hasattr(backbone, 'forward_features') and hasattr(backbone, 'forward_head')):
            raise ValueError(f'{type(backbone).__name__} needs forward_features / forward_head (a timm model).')
        if getattr(backbone, 'num_classes', 1) == 0:
            raise ValueError('the GLMC backbone must keep its classifier (it is the class-balanced head fc_cb).')
        self.backbone = backbone
        dim = _feature_dim(backbone)
        num_classes = backbone.num_classes
        dd = {}
        p0 = next(backbone.parameters(), None)
        if p0 is not None:
            dd = dict(device=p0.device, dtype=p0.dtype)
        self.fc = nn.Linear(dim, num_classes, **dd)
        self.projector = nn.Linear(dim, proj_dim, **dd)
        self.predictor = nn.Linear(proj_dim, proj_dim, **dd)
        self.clr_projector = nn.Linear(dim, proj_dim, **dd) if own_clr_projector else None
        self.num_classes = num_classes

    @property
    def heads(self) -> Tuple[str, ...]:
        """The names of the heads beside the backbone (the task state)."""
        return ('fc', 'projector', 'predictor') + (('clr_projector',) if self.clr_projector is not None else ())

    @property
    def fc_cb(self) -> nn.Module:
        return self.backbone.get_classifier()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x, train: bool = False, joint: bool = False):
        if not train:
            return self.backbone(x)
        groups = (x,) if torch.is_tensor(x) else tuple(x)
        if joint and len(groups) > 1:
            f = self.features(torch.cat(groups))
        else:
            f = torch.cat([self.features(g) for g in groups]) if len(groups) > 1 else self.features(groups[0])
        z = self.projector(f)
        h = self.clr_projector(f) if self.clr_projector is not None else z
        return self.fc(f), self.fc_cb(f), z, self.predictor(z), h


def _split_batch(input, target) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(x_a1, x_a2, x_b1, x_b2), y_a, y_b from glmc_collate's layout or explicit tuples."""
    if isinstance(target, (tuple, list)):
        y_a, y_b = target
    else:
        if target.ndim == 2 and target.shape[1] == 2 and not target.is_floating_point():
            y_a, y_b = target[:, 0], target[:, 1]
        else:
            y_a, y_b = target.chunk(2)
    if torch.is_tensor(input):
        B = y_a.shape[0]
        if input.shape[0] == 4 * B:
            views = list(input.chunk(4))
        elif input.shape[0] == 2 * B:  # one view per image: reuse it for both mixes
            a, b = input.chunk(2)
            views = [a, a, b, b]
        else:
            raise ValueError(f'GLMCTask expects input (4B, ...) = [a view 1, a view 2, b view 1, b view 2] and '
                             f'target (2B,) = [y_a, y_b] (glmc_collate), got input {tuple(input.shape)} and '
                             f'target {tuple(target.shape)}.')
    else:
        views = list(input)
        if len(views) == 2:
            views = [views[0], views[0], views[1], views[1]]
        if len(views) != 4:
            raise ValueError(f'GLMCTask expects 4 (or 2) input batches, got {len(views)}.')
    return views, y_a, y_b


class GLMCTask(SingleModuleTask):
    """GLMC (+ the mix-ratio contrastive GLMC paper's ``clr_weight * L_CLR``); equations in the module docstring.

    Args:
        model: a timm model (wrapped in ``GLMCModel``) or a ``GLMCModel``.
        class_counts: training images per class n_c (re-weighting and many / medium / few-shot groups).
        contrast_weight: weight of GLMC's global-local mixture consistency loss (4 for CIFAR-100-LT IF100,
            6 for IF50 in the reference recipes).
        beta_alpha: lam ~ Beta(alpha, alpha) (1).
        reweight_power: q of the class-balanced target weights n_c^-q (1.2).
        clr_weight / clr_tau: weight and temperature of the mix-ratio contrastive GLMC paper's NT-Xent loss (0 = off).
        clr_exclude_same_class: ours, not the paper's (its stated future work): leave the negatives that share a
            class with the anchor out of every NT-Xent denominator (a mixed feature holds both source classes).
        clr_own_projector: ours, not the paper's: the NT-Xent reads its own Linear(feat, proj_dim) projection
            instead of GLMC's projection z (which the consistency term also uses).
        proj_dim: projection / predictor width (128).
        num_epochs: epochs of the run, for the schedule (``set_epoch(epoch, num_epochs)`` overrides it).
        joint_forward: one backbone call over all groups (faster; shared batch-norm statistics).

    ``forward(input, target)``: ``input`` (4B, ...) and ``target`` (2B,) from ``glmc_collate`` (or a tuple
    of 4 batches and a pair of label tensors). Returns ``loss``, ``output`` (fc_cb logits on the mixup
    batch), ``glmc_ib`` / ``glmc_cb`` (the two CE sums), ``glmc_consistency``, ``glmc_a`` and, with CLR,
    ``clr_loss``.
    """

    def __init__(
            self,
            model: nn.Module,
            class_counts: Sequence[int],
            contrast_weight: float = 4.0,
            beta_alpha: float = 1.0,
            reweight_power: float = 1.2,
            clr_weight: float = 0.0,
            clr_tau: float = 0.5,
            clr_exclude_same_class: bool = False,
            clr_own_projector: bool = False,
            proj_dim: int = 128,
            num_epochs: int = 200,
            joint_forward: bool = False,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        if clr_own_projector and clr_weight <= 0:
            raise ValueError('clr_own_projector=True needs clr_weight > 0 (the projection would go unused).')
        if not isinstance(model, GLMCModel):
            model = GLMCModel(model, proj_dim=proj_dim, own_clr_projector=clr_own_projector)
        elif (model.clr_projector is not None) != bool(clr_own_projector):
            raise ValueError(f'clr_own_projector={clr_own_projector} but the GLMCModel was built with '
                             f'own_clr_projector={model.clr_projector is not None}.')
        counts = torch.as_tensor(class_counts, dtype=torch.long).reshape(-1)
        if counts.numel() != model.num_classes:
            raise ValueError(f'{counts.numel()} class counts for a model with {model.num_classes} classes.')
        if clr_tau <= 0:
            raise ValueError(f'clr_tau must be > 0, got {clr_tau}.')
        self.trainable_module = model
        self.class_counts = counts.tolist()
        self.register_buffer('cb_weights', class_balanced_weights(counts, reweight_power).to(self.device),
                             persistent=False)
        self.contrast_weight = float(contrast_weight)
        self.beta_alpha = float(beta_alpha)
        self.clr_weight = float(clr_weight)
        self.clr_tau = float(clr_tau)
        self.clr_exclude_same_class = bool(clr_exclude_same_class)
        self.joint_forward = bool(joint_forward)
        self.epoch, self.num_epochs = 0, int(num_epochs)

    # ---- schedule ----
    def set_epoch(self, epoch: int, num_epochs: Optional[int] = None) -> None:
        """Call at the start of every epoch (epoch from 0): sets a = 1 - (epoch / num_epochs)^2."""
        self.epoch = int(epoch)
        if num_epochs is not None:
            self.num_epochs = int(num_epochs)

    @property
    def cumulative_weight(self) -> float:
        return cumulative_weight(self.epoch, self.num_epochs)

    # ---- distributed / eval / state ----
    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """Compile the training forward (GLMCModel) and the eval forward (backbone) in place; keys unchanged."""
        m = unwrap_model(self.trainable_module)
        m.compile(backend=backend, mode=mode, **compile_kwargs)
        m.backbone.compile(backend=backend, mode=mode, **compile_kwargs)
        return self.get_eval_model()

    def get_clip_parameters(self, exclude_head: bool = False):
        """All parameters; ``exclude_head`` (AGC) drops both classifiers (fc and the backbone's fc_cb)."""
        m = unwrap_model(self.trainable_module)
        if not exclude_head:
            return list(m.parameters())
        head = {id(p) for p in list(m.fc.parameters()) + list(m.fc_cb.parameters())}
        return [p for p in m.parameters() if id(p) not in head]

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The timm model whose classifier is fc_cb (plain timm keys in ``best.safetensors``)."""
        resolved = super().get_eval_model(module=module, ema=ema)
        inner = unwrap_model(resolved) if resolved is not None else None
        return inner.backbone if isinstance(inner, GLMCModel) else resolved

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """The extra heads (fc, projector, predictor, clr_projector if built): the eval model state dict holds
        only the backbone."""
        module = module if module is not None else self.get_trainable_module(ema=ema)
        if module is None:
            return {}
        m = unwrap_model(module)
        return {k: getattr(m, k).state_dict() for k in m.heads}

    def load_task_state(self, state, strict: bool = True, module: Optional[nn.Module] = None,
                        ema: bool = False) -> None:
        if not state:
            return
        module = module if module is not None else self.get_trainable_module(ema=ema)
        if module is None:
            raise RuntimeError('Cannot load GLMC task state before setup_ema().' if ema else
                               'Cannot load GLMC task state without a trainable module.')
        m = unwrap_model(module)
        stray = sorted(set(state) - set(m.heads))
        if strict and stray:
            raise RuntimeError(f'GLMC task state has heads this model lacks: {", ".join(stray)}.')
        for k in m.heads:
            if k in state:
                getattr(m, k).load_state_dict(state[k], strict=strict)
            elif strict:
                raise RuntimeError(f'GLMC task state has no {k!r} head.')

    def create_evaluator(self, **kwargs):
        return ShotAccuracyEvaluator(self.class_counts, device=self.device, **kwargs)

    # ---- training ----
    def loss_terms(self, input, target) -> Tuple[Dict[str, torch.Tensor], Dict[str, float], torch.Tensor]:
        """(terms, weights, fc_cb logits on the mixup batch): the loss is sum_k weights[k] * terms[k] over 'ib',
        'cb', 'consistency' and, with CLR, 'clr' (terms keep their graphs: per-term gradients can be taken)."""
        (x_a1, x_a2, x_b1, x_b2), y_a, y_b = _split_batch(input, target)
        B = y_a.shape[0]
        C = self.cb_weights.numel()
        lam = sample_lambda(self.beta_alpha)
        x_mix, x_cut, _ = glmc_mix(x_a1, x_a2, x_b1, x_b2, lam)

        oh_a = F.one_hot(y_a, C).float()
        oh_b = F.one_hot(y_b, C).float()
        w = self.cb_weights.to(oh_a.device)
        y_mix = lam * oh_a + (1.0 - lam) * oh_b
        y_w = lam * w[y_a, None] * oh_a + (1.0 - lam) * w[y_b, None] * oh_b

        use_clr = self.clr_weight > 0
        groups = (x_mix, x_cut, x_a1, x_b1) if use_clr else (x_mix, x_cut)
        logits, logits_cb, z, p, h = self.trainable_module(groups, train=True, joint=self.joint_forward)

        a = self.cumulative_weight
        z_m, z_c, p_m, p_c = z[:B], z[B:2 * B], p[:B], p[B:2 * B]
        terms = {
            'ib': _soft_ce(logits[:B].float(), y_mix) + _soft_ce(logits[B:2 * B].float(), y_mix),
            'cb': _soft_ce(logits_cb[:B].float(), y_w) + _soft_ce(logits_cb[B:2 * B].float(), y_w),
            'consistency': negative_cosine(p_m, z_c) + negative_cosine(p_c, z_m),
        }
        weights = {'ib': a, 'cb': 1.0 - a, 'consistency': self.contrast_weight}
        if use_clr:
            labels = (y_a, y_b) if self.clr_exclude_same_class else None
            terms['clr'] = mixed_nt_xent(h[2 * B:3 * B], h[3 * B:], h[:B], h[B:2 * B], lam, self.clr_tau, labels)[0]
            weights['clr'] = self.clr_weight
        return terms, weights, logits_cb[:B]

    def forward(self, input, target) -> Dict[str, torch.Tensor]:
        terms, weights, output = self.loss_terms(input, target)
        loss = sum(weights[k] * v for k, v in terms.items())
        out = {
            'loss': loss,
            'output': output,
            'glmc_ib': terms['ib'].detach(),
            'glmc_cb': terms['cb'].detach(),
            'glmc_consistency': terms['consistency'].detach(),
            'glmc_a': torch.tensor(weights['ib'], device=loss.device),
        }
        if 'clr' in terms:
            out['clr_loss'] = terms['clr'].detach()
        return out
