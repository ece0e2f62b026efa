"""Between-class learning, BC and BC+ (Tokozume et al., CVPR 2018).

Every element i is mixed with a partner j(i) of a *different* class drawn uniformly from the batch, with
r ~ U(0, 1) per element; the target is r t_i + (1 - r) t_j (eq. (2)'s label rule, r not p).

* BC:  x = r x_i + (1 - r) x_j.
* BC+ (formula (2)): x = (p (x_i - mu_i) + (1 - p)(x_j - mu_j)) / sqrt(p^2 + (1 - p)^2),
  p = 1 / (1 + sigma_i / sigma_j * (1 - r) / r), mu and sigma the mean and population standard deviation over
  all C*H*W values of each (normalised) image.

Difference from the reference code (documented): partners are drawn from the current batch, not from the
whole training set, so the method is a vectorised batch operation that plugs in where timm's ``Mixup`` goes.
A batch that holds a single class (possible with small batches) draws its partners from up to ``POOL_SIZE``
images of other classes kept, unmixed, from the previous batch -- images of the training set, as the
reference's partners are; only the first batch a mixer sees has no such pool, and train.py refuses a batch
size for which that batch is single-class with a non-negligible chance (``single_class_chance``).
"""
from typing import Optional, Sequence, Tuple

import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from timm_mixplug.loss.kl import SoftTargetKLDiv
from timm_mixplug.data.mixing.base import PairMixCollate, PairMixer, bshape, chunks, register_mixup

_EPS = 1e-8
POOL_SIZE = 16  # images of distinct classes kept from the previous batch, for a single-class batch


def sample_other_class_partner(target: torch.Tensor, source: Optional[torch.Tensor] = None) -> torch.Tensor:
    """For each i, an index j uniform over the elements of ``source`` (default: ``target``) whose label differs
    from target[i].

    Sort the source labels; target[i]'s class occupies the sorted block [start_i, end_i); a uniform k over the
    N - n_i positions outside that block, shifted past it, is the partner's sorted position. Raises if an
    element has no different-class partner.
    """
    source = target if source is None else source
    n, m = target.numel(), source.numel()
    sorted_y, order = torch.sort(source)
    start = torch.searchsorted(sorted_y, target)
    size = torch.searchsorted(sorted_y, target, right=True).sub_(start)
    if bool((size == m).any()):
        raise ValueError(f'BC learning mixes images of different classes, but all {m} images to draw partners '
                         f'from have class {int(source[0])}; shuffle the training set (and use a larger batch) '
                         f'so batches hold at least two classes.')
    # float64 keeps floor(u * m) < m for u < 1 (float32 rounding could reach m)
    k = torch.rand(n, device=target.device, dtype=torch.float64).mul_(m - size).long()
    return order[torch.where(k >= start, k + size, k)]


def single_class_chance(class_counts: Sequence[int], batch_size: int) -> float:
    """The chance that a batch of ``batch_size`` images drawn without replacement from a training set with these
    per-class counts holds one class only: sum_c prod_{k<B} (n_c - k) / (N - k)."""
    n_total = float(sum(class_counts))
    chance = 0.0
    for n_c in class_counts:  # per class, not per sample
        p = 1.0
        for k in range(batch_size):
            p *= max(n_c - k, 0) / max(n_total - k, 1.0)
            if p == 0.0:
                break
        chance += p
    return chance


class BetweenClassMixer(PairMixer):
    """BC: linear mix with a different-class partner, r ~ U(0, 1) per element (see the module docstring for
    single-class batches)."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        super().__init__(num_classes, label_smoothing)
        self._pool: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def partner_source(self, x, target):
        """The batch; for a single-class batch, the batch and the pool kept from the previous batch. Keeps the
        first image of up to ``POOL_SIZE`` classes of this (still unmixed) batch as the next pool."""
        pool = self._pool
        sorted_y, order = torch.sort(target, stable=True)
        first = torch.ones_like(sorted_y, dtype=torch.bool)
        first[1:] = sorted_y[1:] != sorted_y[:-1]
        keep = order[first][:POOL_SIZE]
        self._pool = (x.index_select(0, keep), target.index_select(0, keep))
        if len(keep) > 1 or pool is None:  # two classes in the batch (or nothing else to draw from)
            return x, target
        return torch.cat([x, pool[0].to(device=x.device, dtype=x.dtype)]), torch.cat([target, pool[1].to(x.device)])

    def sample(self, target, source=None):
        partner = sample_other_class_partner(target, source)
        return partner, torch.rand(target.numel(), device=target.device)


class BetweenClassPlusMixer(BetweenClassMixer):
    """BC+: zero-mean images mixed with their standard deviations as weights (formula (2)).

    On the device (``collate=False``) the input is the normalised batch. A zero-mean image is not
    representable in uint8, so the collate (``collate=True``) emits the BC+ image in *pixel space* as float
    (``out_dtype``, float16 by default), unclipped: the image whose timm normalisation (``mean``/``std``)
    is the BC+ result. timm's ``PrefetchLoader`` normalises any floating batch it receives, so that path
    yields the device result up to float rounding.
    """

    def __init__(self, num_classes, label_smoothing=0.0, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 std: Sequence[float] = IMAGENET_DEFAULT_STD, out_dtype: torch.dtype = torch.float16):
        super().__init__(num_classes, label_smoothing)
        if out_dtype not in (torch.float16, torch.float32):  # bfloat16 would round pixels coarser than uint8
            raise ValueError(f'out_dtype must be torch.float16 or torch.float32, got {out_dtype}')
        self.mean = torch.tensor([float(m) * 255 for m in mean])
        self.std = torch.tensor([float(s) * 255 for s in std])
        self.out_dtype = out_dtype

    @staticmethod
    def ratios(sigma, mu, partner, r):
        """(a, b, c) per element with BC+(x_i, x_j) = a_i x_i + b_i x_j + c_i (formula (2) expanded); ``sigma`` and
        ``mu`` are those of the partner source, whose first ``len(partner)`` images are the batch."""
        n = len(partner)
        w2 = r * sigma[partner]
        p = w2 / torch.addcmul(w2, 1 - r, sigma[:n])  # = 1 / (1 + s_i/s_j * (1-r)/r)
        q = 1 - p
        inv_d = torch.hypot(p, q).reciprocal_()
        a, b = p.mul_(inv_d), q.mul_(inv_d)
        return a, b, torch.addcmul(a * mu[:n], b, mu[partner]).neg_()

    def coefficients(self, x, partner, r):
        """Population mean and std over C*H*W from one pass of sums (var = E[x^2] - E[x]^2)."""
        v = x.reshape(len(x), -1)
        n = v.shape[1]
        mu = v.sum(1, dtype=torch.float32) / n
        var = torch.linalg.vector_norm(v, dim=1, dtype=torch.float32).square_().div_(n).sub_(mu * mu)
        sigma = var.clamp_min_(0).sqrt_().clamp_min_(_EPS)
        return tuple(bshape(t, x.ndim) for t in self.ratios(sigma, mu, partner, r))

    def mix_chunk(self, x1, x2, coef, out):
        a, b, c = (t.to(x1.dtype) for t in coef)
        return torch.addcmul(x2.mul_(b).add_(c), x1, a, out=out)

    def collate_uint8(self, images, target):
        """BC+ in timm's normalised space n = (u - M)/S, written in pixel space: a u_i + b u_j + K with
        K = M (1 - a - b) + S c, as ``out_dtype`` (B, C, H, W), unclipped; normalising it gives BC+."""
        src, src_t = self.partner_source(images, target)
        b_, ch = images.shape[:2]
        mean, std = self.mean.view(1, ch), self.std.view(1, ch)
        s, q = [], []  # per-image, per-channel sums of u and u^2 (of the partner source)
        for sl in chunks(src):
            v = src[sl].reshape(len(src[sl]), ch, -1).float()
            s.append(v.sum(-1))
            q.append(torch.linalg.vector_norm(v, dim=-1).square_())
        s, q = torch.cat(s), torch.cat(q)
        hw = images[0, 0].numel()
        mu = ((s - hw * mean) / std).sum(1) / (ch * hw)
        ex2 = ((q - 2 * mean * s + hw * mean * mean) / (std * std)).sum(1) / (ch * hw)
        sigma = (ex2 - mu * mu).clamp_min_(0).sqrt_().clamp_min_(_EPS)
        partner, r = self._sample(target, src_t)
        a, b, c = self.ratios(sigma, mu, partner, r)
        k = mean * (1 - a - b).view(-1, 1) + std * c.view(-1, 1)
        a, b, k = bshape(a, 4), bshape(b, 4), k.view(b_, ch, 1, 1)
        u2 = self._partners(src, partner)
        out = torch.empty(images.shape, dtype=self.out_dtype)
        parts = chunks(images)
        buf = None if self.out_dtype == torch.float32 else torch.empty((parts[0].stop, *images.shape[1:]))
        for sl in parts:  # cache-sized chunks: the float temporary stays in cache
            n = len(images[sl])
            y = out[sl] if buf is None else buf[:n]
            torch.mul(u2[sl], b[sl], out=y).add_(k[sl]).addcmul_(images[sl], a[sl])
            if buf is not None:
                out[sl] = y
        return out, self.targets(target, partner, r, src_t)


def zero_mean(x: torch.Tensor) -> torch.Tensor:
    """Subtract each image's mean over C*H*W in place (BC+ preprocessing at train and test time)."""
    return x.sub_(x.reshape(len(x), -1).mean(dim=1).view(-1, *([1] * (x.ndim - 1))))


@register_mixup('bc', loss=SoftTargetKLDiv, distinct_classes=True)
def create_bc(num_classes, label_smoothing=0.0, collate=False):
    mixer = BetweenClassMixer(num_classes, label_smoothing)
    return PairMixCollate(mixer) if collate else mixer


@register_mixup('bcplus', loss=SoftTargetKLDiv, zero_mean_input=True, collate_needs_norm=True,
                distinct_classes=True)
def create_bcplus(num_classes, label_smoothing=0.0, collate=False, mean=IMAGENET_DEFAULT_MEAN,
                  std=IMAGENET_DEFAULT_STD, out_dtype=torch.float16):
    """``mean``/``std`` (timm's data config values, in [0, 1]) and ``out_dtype`` (the float dtype of the
    pixel-space images it emits) are used only by the collate."""
    mixer = BetweenClassPlusMixer(num_classes, label_smoothing, mean=mean, std=std, out_dtype=out_dtype)
    return PairMixCollate(mixer) if collate else mixer
