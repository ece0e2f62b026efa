"""Between-class learning, BC and BC+ (Tokozume et al., CVPR 2018; seed 000).

Every element i is mixed with a partner j(i) of a *different* class drawn uniformly from the batch, with
r ~ U(0, 1) per element; the target is r t_i + (1 - r) t_j (eq. (2)'s label rule, r not p).

* BC:  x = r x_i + (1 - r) x_j.
* BC+ (formula (2)): x = (p (x_i - mu_i) + (1 - p)(x_j - mu_j)) / sqrt(p^2 + (1 - p)^2),
  p = 1 / (1 + sigma_i / sigma_j * (1 - r) / r), mu and sigma the mean and population standard deviation over
  all C*H*W values of each (normalised) image.

Difference from the reference code (documented): partners are drawn from the current batch, not from the
whole training set, so the method is a vectorised batch operation that plugs in where timm's ``Mixup`` goes.
"""
from typing import Sequence, Tuple

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .mixing import PairMixCollate, PairMixer, bshape, chunks, register_mixup

_EPS = 1e-8


def sample_other_class_partner(target: torch.Tensor) -> torch.Tensor:
    """For each i, an index j uniform over the elements whose label differs from target[i].

    Sort the labels; element i's class occupies the sorted block [start_i, end_i); a uniform k over the
    B - n_i positions outside that block, shifted past it, is the partner's sorted position. Raises if any
    element has no different-class partner (a single-class batch).
    """
    n = target.numel()
    sorted_y, order = torch.sort(target)
    if bool(sorted_y[0] == sorted_y[-1]):
        raise ValueError(f'BC learning mixes images of different classes, but all {n} images in this batch '
                         f'have class {int(target[0])}; shuffle the training set (and use a larger batch) '
                         f'so every batch holds at least two classes.')
    start = torch.searchsorted(sorted_y, target)
    size = torch.searchsorted(sorted_y, target, right=True).sub_(start)
    # float64 keeps floor(u * m) < m for u < 1 (float32 rounding could reach m)
    k = torch.rand(n, device=target.device, dtype=torch.float64).mul_(n - size).long()
    return order[torch.where(k >= start, k + size, k)]


class BetweenClassMixer(PairMixer):
    """BC: linear mix with a different-class partner, r ~ U(0, 1) per element."""

    def sample(self, target):
        partner = sample_other_class_partner(target)
        return partner, torch.rand(target.numel(), device=target.device)


class BetweenClassPlusMixer(BetweenClassMixer):
    """BC+: zero-mean images mixed with their standard deviations as weights (formula (2)).

    On the device (``collate=False``) the result is exact. A zero-mean image is not representable in uint8,
    so the collate (``collate=True``) writes the image whose timm normalisation (``mean``/``std``) equals the
    BC+ result plus the mixed image's own mean, rounded and clipped to [0, 255]; ``zero_mean`` after
    normalisation (the BC+ reference zero-means every image, at train *and* test time) then recovers the BC+
    image up to that rounding and clipping.
    """

    def __init__(self, num_classes, label_smoothing=0.0, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 std: Sequence[float] = IMAGENET_DEFAULT_STD):
        super().__init__(num_classes, label_smoothing)
        self.mean = tuple(float(m) * 255 for m in mean)
        self.std = tuple(float(s) * 255 for s in std)

    @staticmethod
    def stats(x: torch.Tensor, load=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-image population (sigma, mu) over C*H*W from sums (var = E[x^2] - E[x]^2), float32."""
        n = x[0].numel()
        parts = [x] if load is None else [load(x[sl]) for sl in chunks(x)]
        s = torch.cat([v.reshape(len(v), -1).sum(1, dtype=torch.float32) for v in parts])
        ss = torch.cat([torch.linalg.vector_norm(v.reshape(len(v), -1), dim=1, dtype=torch.float32).square_()
                        for v in parts])
        mu = s / n
        var = (ss / n - mu * mu).clamp_min_(0)
        return var.sqrt_().clamp_min_(_EPS), mu

    def prepare(self, x, partner, r, load):
        """(a, b, c) with BC+(x_i, x_j) = a_i x_i + b_i x_j + c_i (formula (2) expanded)."""
        sigma, mu = self.stats(x, load)
        w2 = r * sigma[partner]
        p = w2 / torch.addcmul(w2, 1 - r, sigma)  # = 1 / (1 + s1/s2 * (1-r)/r)
        q = 1 - p
        inv_d = torch.hypot(p, q).reciprocal_()
        a, b = p.mul_(inv_d), q.mul_(inv_d)
        return a, b, torch.addcmul(a * mu, b, mu[partner]).neg_()

    def mix_chunk(self, x1, x2, coef, sl, out):
        a, b, c = (bshape(t[sl], x1.ndim).to(x1.dtype) for t in coef)
        return torch.addcmul(x2.mul_(b).add_(c), x1, a, out=out)

    def collate_uint8(self, images, target):
        """BC+ in timm's normalised space, written back as uint8 around each mixed image's own mean."""
        shape = (1, -1) + (1,) * (images.ndim - 2)
        mean = torch.tensor(self.mean).view(shape)
        std = torch.tensor(self.std).view(shape)

        def load(t):
            return t.float().sub_(mean).div_(std)

        def store(y, sl, coef):
            a, b, c = (t[sl] for t in coef)
            # add back the p-mix's mean, p mu_i + (1 - p) mu_j = -c / (a + b), then undo the normalisation
            y.add_(bshape(-c / (a + b), y.ndim)).mul_(std).add_(mean)
            return y.round_().clamp_(0, 255)

        partner, r = self.sample(target)
        self.mix_(images, partner, r, load=load, store=store)
        return images, self.targets(target, partner, r)


def zero_mean(x: torch.Tensor) -> torch.Tensor:
    """Subtract each image's mean over C*H*W in place (BC+ preprocessing at train and test time)."""
    return x.sub_(x.reshape(len(x), -1).mean(dim=1).view(-1, *([1] * (x.ndim - 1))))


@register_mixup('bc')
def create_bc(num_classes, label_smoothing=None, collate=False):
    mixer = BetweenClassMixer(num_classes, label_smoothing or 0.0)
    return PairMixCollate(mixer) if collate else mixer


@register_mixup('bcplus')
def create_bcplus(num_classes, label_smoothing=None, collate=False, mean=IMAGENET_DEFAULT_MEAN,
                  std=IMAGENET_DEFAULT_STD):
    """``mean``/``std`` (timm's data config values, in [0, 1]) are used only by the uint8 collate."""
    mixer = BetweenClassPlusMixer(num_classes, label_smoothing or 0.0, mean=mean, std=std)
    return PairMixCollate(mixer) if collate else mixer
