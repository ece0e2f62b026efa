"""Long-tailed training sets and many / medium / few-shot evaluation.

Long-tailed subsets (CIFAR-10-LT / CIFAR-100-LT of Cao et al. 2019, used by GLMC and seed 004) keep, for class
c = 0 .. C-1 (class 0 is the head),

    n_c = int(n_max * (1 / rho) ** (c / (C - 1)))                                   (exponential profile)

images, drawn without replacement from that class with a seeded generator; the test set stays balanced.
With n_max = 500 / C = 100 this gives 10,847 images for rho = 100 and 12,608 for rho = 50; with n_max = 5000 /
C = 10 and rho = 100, 12,406 images. Shot groups by training count: many n > 100, medium 20 < n <= 100,
few n <= 20 (35 / 34 / 31 classes for CIFAR-100-LT rho = 100). Group accuracy is the mean of the per-class
top-1 accuracies of the group's classes (as in the GLMC / OLTR evaluation code); ``overall`` is the usual
per-sample top-1.

train.py integration: ``add_longtail_args(parser)`` adds ``--imb-factor`` / ``--imb-seed``;
``apply_longtail(train_dataset, args)`` returns the long-tailed subset (call it before computing the
per-class training counts); ``ShotAccuracyEvaluator(train_counts)`` reports many / medium / few besides
loss / top-1 / top-5.
"""
import argparse
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist

from timm.task import ClassificationEvaluator

from timm_mixplug.data.wrappers import ForwardingDatasetWrapper

__all__ = [
    'longtail_counts', 'get_targets', 'class_counts', 'make_longtail_indices', 'LongTailSubset',
    'shot_groups', 'shot_accuracy', 'ShotAccuracyEvaluator', 'add_longtail_args', 'apply_longtail',
    'MANY_THRESHOLD', 'FEW_THRESHOLD', 'SHOT_NAMES',
]

MANY_THRESHOLD = 100  # many-shot: n > 100
FEW_THRESHOLD = 20    # few-shot: n <= 20 (medium: 20 < n <= 100)
SHOT_NAMES = ('many', 'medium', 'few')


def longtail_counts(n_max: int, num_classes: int, imb_factor: float) -> List[int]:
    """Images per class of the exponential long-tailed profile n_c = int(n_max * (1/rho)^(c/(C-1))).

    Computed in double precision in the reference's form ((1/rho) raised to c/(C-1)) so that the integer
    truncation matches the published totals (10,847 for CIFAR-100-LT rho=100).
    """
    if imb_factor < 1:
        raise ValueError(f'imb_factor (rho = n_max / n_min) must be >= 1, got {imb_factor}.')
    if num_classes < 1 or n_max < 1:
        raise ValueError(f'need num_classes >= 1 and n_max >= 1, got {num_classes}, {n_max}.')
    if num_classes == 1:
        return [int(n_max)]
    inv = 1.0 / float(imb_factor)
    return [int(n_max * inv ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def get_targets(dataset) -> torch.Tensor:
    """Class index of every item of a map-style dataset, without loading images (LongTensor (N,)).

    Understands ``.targets`` (torchvision, ours), timm ``ImageDataset`` readers with ``.samples`` and
    ``torch.utils.data.Subset`` of those.
    """
    if hasattr(dataset, 'targets') and dataset.targets is not None:
        return torch.as_tensor(list(dataset.targets) if not torch.is_tensor(dataset.targets) else dataset.targets,
                               dtype=torch.long).reshape(-1)
    reader = getattr(dataset, 'reader', None)
    if reader is not None and hasattr(reader, 'samples'):
        return torch.as_tensor([int(s[1]) for s in reader.samples], dtype=torch.long)
    if hasattr(dataset, 'indices') and hasattr(dataset, 'dataset'):  # torch Subset
        base = get_targets(dataset.dataset)
        return base[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:  # wrappers that keep the item order (multi-view datasets...)
        return get_targets(inner)
    raise ValueError(f'cannot read the class labels of {type(dataset).__name__} without loading it; '
                     f'give it a .targets list.')


def class_counts(targets: Union[torch.Tensor, Sequence[int]], num_classes: Optional[int] = None) -> torch.Tensor:
    """Images per class (LongTensor (C,)); ``num_classes`` defaults to max(target) + 1."""
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    n = num_classes if num_classes is not None else (int(t.max()) + 1 if t.numel() else 0)
    return torch.bincount(t, minlength=n)


def make_longtail_indices(targets: Union[torch.Tensor, Sequence[int]], imb_factor: float, seed: int = 0,
                          num_classes: Optional[int] = None, n_max: Optional[int] = None) -> torch.Tensor:
    """Indices (sorted LongTensor) of a long-tailed subset of a labelled dataset.

    Class c keeps min(n_c, available_c) of its images, n_c from :func:`longtail_counts` with ``n_max``
    (default: the largest class's count), chosen without replacement by a ``torch.Generator`` seeded with
    ``seed`` (the same seed always gives the same subset). Vectorized: one random key per image, a sort by
    (class, key) and a per-class rank.
    """
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
    counts = class_counts(t, num_classes)
    C = counts.numel()
    if n_max is None:
        n_max = int(counts.max()) if C else 0
    keep_n = torch.tensor(longtail_counts(n_max, C, imb_factor), dtype=torch.long).minimum(counts)
    g = torch.Generator().manual_seed(int(seed))
    key = torch.rand(t.numel(), generator=g, dtype=torch.float64)
    order = torch.argsort(key)
    order = order[torch.argsort(t[order], stable=True)]  # grouped by class, random order inside each class
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(t.numel()) - starts[t[order]]
    chosen = order[rank < keep_n[t[order]]]
    return torch.sort(chosen).values


class LongTailSubset(ForwardingDatasetWrapper):
    """``Subset`` that keeps ``.targets`` / ``.classes`` and forwards ``.transform`` to the wrapped dataset
    (timm's ``create_loader`` sets ``dataset.transform``)."""

    def __init__(self, dataset, indices: Union[torch.Tensor, Sequence[int]], targets: Optional[torch.Tensor] = None,
                 imb_factor: Optional[float] = None):
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.long).tolist()
        base = targets if targets is not None else get_targets(dataset)
        self.targets = torch.as_tensor(base, dtype=torch.long)[torch.as_tensor(self.indices, dtype=torch.long)].tolist()
        self.imb_factor = imb_factor
        if hasattr(dataset, 'classes'):
            self.classes = dataset.classes

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def shot_groups(counts: Union[torch.Tensor, Sequence[int]], many: int = MANY_THRESHOLD,
                few: int = FEW_THRESHOLD) -> Dict[str, torch.Tensor]:
    """Boolean class masks {'many': n > 100, 'medium': 20 < n <= 100, 'few': n <= 20} from training counts."""
    n = torch.as_tensor(counts).reshape(-1)
    return OrderedDict(many=n > many, medium=(n > few) & (n <= many), few=n <= few)


def _shot_summary(correct: torch.Tensor, total: torch.Tensor, groups: Dict[str, torch.Tensor]) -> Dict[str, float]:
    correct, total = correct.double().cpu(), total.double().cpu()
    present = total > 0
    acc = torch.where(present, correct / total.clamp_min(1), torch.zeros_like(total))
    out = OrderedDict()
    for name, mask in groups.items():
        m = mask.cpu() & present
        out[name] = 100.0 * acc[m].mean().item() if bool(m.any()) else float('nan')
    out['overall'] = 100.0 * (correct.sum() / total.sum().clamp_min(1)).item()
    return out


def shot_accuracy(logits_or_preds: torch.Tensor, targets: torch.Tensor,
                  train_counts: Union[torch.Tensor, Sequence[int]]) -> Dict[str, float]:
    """Top-1 accuracy (%) overall and per shot group (mean of per-class accuracies in the group).

    ``logits_or_preds``: logits (N, C) or predicted class indices (N,). Groups without any test class are nan.
    """
    counts = torch.as_tensor(train_counts).reshape(-1)
    C = counts.numel()
    pred = logits_or_preds.argmax(dim=-1) if logits_or_preds.ndim == 2 else logits_or_preds
    targets = targets.reshape(-1).long()
    hit = (pred.reshape(-1).long() == targets).long()
    correct = torch.bincount(targets, weights=hit.double(), minlength=C)
    total = torch.bincount(targets, minlength=C)
    return _shot_summary(correct, total, shot_groups(counts))


class ShotAccuracyEvaluator(ClassificationEvaluator):
    """timm's ``ClassificationEvaluator`` (loss / top-1 / top-5) plus many / medium / few-shot top-1 (%).

    Per-class correct / total counts accumulate on the evaluator's device (no host sync per batch) and are
    all-reduced in ``compute(distributed=True)``.
    """

    default_metric = 'top1'
    metric_names = ('loss', 'top1', 'top5') + SHOT_NAMES

    def __init__(self, train_counts, device=None, *, max_samples: Optional[int] = None, criterion=None):
        self.train_counts = torch.as_tensor(train_counts, dtype=torch.long).reshape(-1).cpu()
        self.groups = shot_groups(self.train_counts)
        super().__init__(device, max_samples=max_samples, criterion=criterion)

    def reset(self):
        super().reset()
        C = self.train_counts.numel()
        self.class_correct = torch.zeros(C, dtype=torch.int64, device=self.device)
        self.class_total = torch.zeros(C, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def update(self, output, target):
        if output.ndim != 2 or target.ndim != 1 or target.shape[0] != output.shape[0]:
            raise ValueError('Single-label evaluation expects (batch, num_classes) logits and (batch,) class indices.')
        output, target = self._prepare(output, target)
        if not output.shape[0]:
            return
        self._accumulate_loss(self.criterion(output, target), output.shape[0])
        predictions = output.topk(min(5, output.shape[-1]), dim=-1).indices
        correct = predictions.eq(target[:, None])
        self.counts[1] += correct[:, 0].sum()
        self.counts[2] += correct.any(dim=-1).sum()
        C = self.class_total.numel()
        target = target.to(self.class_total.device)
        self.class_total += torch.bincount(target, minlength=C)[:C]
        self.class_correct += torch.bincount(target, weights=correct[:, 0].to(self.device, torch.float64),
                                             minlength=C)[:C].round().long()

    def _summary_all(self, loss_sum, counts, class_correct, class_total):
        out = self._summary(loss_sum, counts)
        shots = _shot_summary(class_correct, class_total, self.groups)
        for k in SHOT_NAMES:
            out[k] = shots[k]
        return out

    def summary(self):
        return self._summary_all(self.loss_sum, self.counts, self.class_correct, self.class_total)

    def compute(self, distributed=False):
        loss_sum, counts = self.loss_sum.clone(), self.counts.clone()
        cc, ct = self.class_correct.clone(), self.class_total.clone()
        if distributed:
            for t in (loss_sum, counts, cc, ct):
                dist.all_reduce(t)
        return self._summary_all(loss_sum, counts, cc, ct)


# ---- train.py glue ----

def add_longtail_args(parser: argparse.ArgumentParser) -> None:
    """``--imb-factor RHO`` (long-tailed training subset, 1 / None = off) and ``--imb-seed`` (subset seed).

    Does nothing if ``--imb-factor`` is already registered (so several task modules may call it).
    """
    if '--imb-factor' in getattr(parser, '_option_string_actions', {}):
        return
    g = parser.add_argument_group('Long-tailed data (CIFAR-LT profile)')
    g.add_argument('--imb-factor', type=float, default=None, metavar='RHO',
                   help='keep n_c = int(n_max * RHO^(-c/(C-1))) training images of class c (e.g. 100, 50); '
                        'evaluation then also reports many/medium/few-shot top-1')
    g.add_argument('--imb-seed', type=int, default=0, metavar='S',
                   help='seed of the long-tailed subset (fixed by default so every --seed trains on the same data)')


def apply_longtail(dataset, args: argparse.Namespace, num_classes: Optional[int] = None):
    """The long-tailed subset of a training dataset for ``args.imb_factor`` (unchanged if unset or <= 1)."""
    rho = getattr(args, 'imb_factor', None)
    if not rho or rho <= 1 or isinstance(dataset, LongTailSubset):
        return dataset
    targets = get_targets(dataset)
    idx = make_longtail_indices(targets, rho, seed=getattr(args, 'imb_seed', 0) or 0,
                                num_classes=num_classes or getattr(args, 'num_classes', None))
    return LongTailSubset(dataset, idx, targets=targets, imb_factor=rho)
