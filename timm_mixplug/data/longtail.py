"""Long-tailed training sets (exponential profile) and their shot groups.

Long-tailed subsets (CIFAR-10-LT / CIFAR-100-LT of Cao et al. 2019, used by GLMC and its contrastive extension) keep, for class
c = 0 .. C-1 (class 0 is the head),

    n_c = int(n_max * (1 / rho) ** (c / (C - 1)))                                   (exponential profile)

images, drawn without replacement from that class with a seeded generator; the test set stays balanced.
With n_max = 500 / C = 100 this gives 10,847 images for rho = 100 and 12,608 for rho = 50; with n_max = 5000 /
C = 10 and rho = 100, 12,406 images. Shot groups by training count: many n > 100, medium 20 < n <= 100,
few n <= 20 (35 / 34 / 31 classes for CIFAR-100-LT rho = 100). Group accuracy is the mean of the per-class
top-1 accuracies of the group's classes (as in the GLMC / OLTR evaluation code); ``overall`` is the usual
per-sample top-1.

The many / medium / few-shot evaluation is ``timm_mixplug.task.evaluators.ShotAccuracyEvaluator``.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch

from timm_mixplug.data.wrappers import ForwardingDatasetWrapper

__all__ = [
    'longtail_counts', 'get_targets', 'class_counts', 'make_longtail_indices', 'LongTailSubset',
    'shot_groups', 'MANY_THRESHOLD', 'FEW_THRESHOLD', 'SHOT_NAMES',
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
