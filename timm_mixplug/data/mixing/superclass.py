"""Superclass-aware mixup for Deep Mutual Learning ("スーパークラスを利用した mixup" for DML, seed 001: a Japanese
conference paper whose extraction names no authors; Beta(8,8) same / Beta(0.2,0.2) different superclass).

Mixup (eqs. (1), (2): x = lam x_i + (1 - lam) x_j, y = lam y_i + (1 - lam) y_j) whose ratio depends on the
superclass relation of the pair (sec. 4): ``mode='beta'`` draws lam ~ Beta(alpha_same, alpha_same) (8.0) for
pairs in the same superclass and Beta(alpha_diff, alpha_diff) (0.2) otherwise; ``mode='choice'`` uses
lam = 0.5 for the same superclass and 0.1 or 0.9 at random otherwise. Partners are a random permutation of
the batch.
"""
from typing import Sequence, Union

import torch

from timm_mixplug.data.hierarchy import Hierarchy, load_hierarchy
from timm_mixplug.data.mixing.base import PairMixCollate, PairMixer, register_mixup


class SuperclassMixer(PairMixer):
    """Pair mixup with the ratio drawn by the pair's superclass relation."""

    def __init__(
            self,
            num_classes: int,
            hierarchy: Union[str, Hierarchy, Sequence[int], dict],
            label_smoothing: float = 0.0,
            mode: str = 'beta',
            alpha_same: float = 8.0,
            alpha_diff: float = 0.2,
            choice_same: float = 0.5,
            choice_diff: Sequence[float] = (0.1, 0.9),
    ):
        super().__init__(num_classes, label_smoothing)
        if mode not in ('beta', 'choice'):
            raise ValueError(f"Superclass mixup mode must be 'beta' or 'choice', got {mode!r}.")
        if mode == 'beta' and (alpha_same <= 0 or alpha_diff <= 0):
            raise ValueError(f'Beta parameters must be > 0, got alpha_same={alpha_same}, alpha_diff={alpha_diff}.')
        if len(choice_diff) != 2:
            raise ValueError(f'choice_diff takes two ratios (e.g. 0.1 0.9), got {choice_diff!r}.')
        if hierarchy is None:
            raise ValueError("Superclass mixup needs a superclass map: hierarchy='cifar100', 'imagenet1k' or a "
                             "YAML/JSON/CSV file mapping each class to its superclass.")
        if not isinstance(hierarchy, Hierarchy):
            hierarchy = load_hierarchy(hierarchy, num_classes=num_classes)
        elif hierarchy.num_classes != num_classes:
            raise ValueError(f'The superclass map covers {hierarchy.num_classes} classes but num_classes is '
                             f'{num_classes}; pass the map that matches the dataset.')
        self.hierarchy = hierarchy
        self.mode = mode
        self.alpha_same, self.alpha_diff = float(alpha_same), float(alpha_diff)
        self.choice_same = float(choice_same)
        self.choice_diff = tuple(float(c) for c in choice_diff)
        self._beta_cache = {}

    def _betas(self, device):
        """Beta(alpha_same, alpha_same) and Beta(alpha_diff, alpha_diff) on ``device``, made once."""
        if device not in self._beta_cache:
            self._beta_cache[device] = tuple(
                torch.distributions.Beta(torch.tensor(a, device=device), torch.tensor(a, device=device))
                for a in (self.alpha_same, self.alpha_diff))
        return self._beta_cache[device]

    def sample(self, target):
        n = target.numel()
        partner = torch.randperm(n, device=target.device)
        same = self.hierarchy.same_superclass(target, target[partner])
        if self.mode == 'beta':
            beta_same, beta_diff = self._betas(target.device)
            lam = torch.where(same, beta_same.sample((n,)), beta_diff.sample((n,)))
        else:
            lo, hi = self.choice_diff
            diff = torch.where(torch.rand(n, device=target.device) < 0.5, lo, hi)
            lam = torch.where(same, self.choice_same, diff).float()
        return partner, lam


@register_mixup('superclass')
def create_superclass(num_classes, label_smoothing=0.0, collate=False, hierarchy=None, **kwargs):
    mixer = SuperclassMixer(num_classes, hierarchy, label_smoothing, **kwargs)
    return PairMixCollate(mixer) if collate else mixer
