"""Between-class learning, BC and BC+ (Tokozume et al., CVPR 2018).

Every element i is mixed with a partner j(i) of a *different* class drawn uniformly from the batch, with
r ~ U(0, 1) per element; the target is r t_i + (1 - r) t_j (eq. (2)'s label rule, r not p).

* BC:  x = r x_i + (1 - r) x_j.
* BC+ (formula (2)): x = (p (x_i - mu_i) + (1 - p)(x_j - mu_j)) / sqrt(p^2 + (1 - p)^2),
  p = 1 / (1 + sigma_i / sigma_j * (1 - r) / r), mu and sigma the mean and population standard deviation over
  all C*H*W values of each (normalised) image.

Partners come from the current batch, a vectorised stand-in for the paper's draw from the whole training set
(it plugs in where timm's ``Mixup`` goes). A batch that holds a single class (likely with small batches or
imbalanced classes) draws its partners from up to ``POOL_SIZE`` images of other classes kept, unmixed, from the
previous batch; when that memory holds no other class (a worker's first batch, or a run of single-class
batches), from the training set itself, the paper's own definition (``partners``: items of other classes
drawn uniformly from a map-style dataset, or the next ones of a stream; ``partners.py``). So BC is defined for
every batch size >= 1, every class balance and either kind of dataset.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch.utils.data import IterableDataset
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from timm_mixplug.loss.kl import SoftTargetKLDiv
from timm_mixplug.data.mixing.base import PairMixCollate, PairMixer, bshape, register_mixup
from timm_mixplug.data.mixing.collate_ops import affine_mix, uint8_channel_sums
from timm_mixplug.data.mixing.partners import DatasetPartners, Partners, StreamPartners

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
                         f'from have class {int(source[0])}; give the mixer partners=DatasetPartners(training set) '
                         f'(StreamPartners for a stream) to draw them from the training set.')
    # float64 keeps floor(u * m) < m for u < 1 (float32 rounding could reach m)
    k = torch.rand(n, device=target.device, dtype=torch.float64).mul_(m - size).long()
    return order[torch.where(k >= start, k + size, k)]


class BetweenClassMixer(PairMixer):
    """BC: linear mix with a different-class partner, r ~ U(0, 1) per element. A single-class batch takes its
    partners from the memory of the previous batch, else from ``partners`` (the training set, see the module
    docstring); without ``partners`` such a batch is an error."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, partners: Optional[Partners] = None):
        super().__init__(num_classes, label_smoothing)
        self._pool: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.partners = partners

    def partner_source(self, x, target):
        """The batch; for a single-class batch, the batch and the pool kept from the previous batch, or, when
        that holds no other class, the batch and items drawn from ``partners``. Keeps the first image of up to
        ``POOL_SIZE`` classes of this (still unmixed) batch as the next pool."""
        pool = self._pool
        sorted_y, order = torch.sort(target, stable=True)
        first = torch.ones_like(sorted_y, dtype=torch.bool)
        first[1:] = sorted_y[1:] != sorted_y[:-1]
        keep = order[first][:POOL_SIZE]
        self._pool = (x.index_select(0, keep), target.index_select(0, keep))
        if len(keep) > 1:  # two classes in the batch
            return x, target
        cls = int(sorted_y[0])
        if pool is not None and bool((pool[1] != cls).any()):
            extra = pool[0].to(device=x.device, dtype=x.dtype), pool[1].to(x.device)
        elif self.partners is not None:
            extra = self.partners.draw(cls, min(len(target), POOL_SIZE), like=x)
        else:  # nothing else to draw from: sample() names the fix
            return x, target
        return torch.cat([x, extra[0]]), torch.cat([target, extra[1]])

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
                 std: Sequence[float] = IMAGENET_DEFAULT_STD, out_dtype: torch.dtype = torch.float16,
                 partners: Optional[Partners] = None):
        super().__init__(num_classes, label_smoothing, partners=partners)
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
        acc = torch.promote_types(x.dtype, torch.float32)  # float32 sums for half / bf16 / float32 batches
        mu = v.sum(1, dtype=acc) / n
        var = torch.linalg.vector_norm(v, dim=1, dtype=acc).square_().div_(n).sub_(mu * mu)
        sigma = var.clamp_min_(0).sqrt_().clamp_min_(_EPS)
        return tuple(bshape(t, x.ndim) for t in self.ratios(sigma, mu, partner, r))

    def mix_chunk(self, x1, x2, coef, out):
        a, b, c = (t.to(x1.dtype) for t in coef)
        return torch.addcmul(x2.mul_(b).add_(c), x1, a, out=out)

    def collate_uint8(self, images, target):
        """BC+ in timm's normalised space n = (u - M)/S, written in pixel space: a u_i + b u_j + K with
        K = M (1 - a - b) + S c, as ``out_dtype`` (B, C, H, W), unclipped; normalising it gives BC+."""
        src, src_t = self.partner_source(images, target)
        ch, hw = images.shape[1], images[0, 0].numel()
        mean, std = self.mean.double().view(1, ch), self.std.double().view(1, ch)
        s, q = uint8_channel_sums(src, self._buffers)  # per image and channel: sums of u and u^2, float64
        mu = ((s - hw * mean) / std).sum(1) / (ch * hw)
        ex2 = ((q - 2 * mean * s + hw * mean * mean) / (std * std)).sum(1) / (ch * hw)
        sigma = (ex2 - mu * mu).clamp_min_(0).sqrt_().clamp_min_(_EPS)
        partner, r = self._sample(target, src_t)
        a, b, c = self.ratios(sigma, mu, partner, r.double())
        k = mean * (1 - a - b).view(-1, 1) + std * c.view(-1, 1)
        out = affine_mix(images, partner, a, b, k, self.out_dtype, self._buffers, src)
        return out, self.targets(target, partner, r, src_t)


def zero_mean(x: torch.Tensor) -> torch.Tensor:
    """Subtract each image's mean over C*H*W in place (BC+ preprocessing at train and test time)."""
    return x.sub_(x.reshape(len(x), -1).mean(dim=1).view(-1, *([1] * (x.ndim - 1))))


@register_mixup('bc', loss=SoftTargetKLDiv, distinct_classes=True)
def create_bc(num_classes, label_smoothing=0.0, collate=False, partners=None):
    """``partners``: a :class:`DatasetPartners` or :class:`StreamPartners` for single-class batches (see the
    module docstring)."""
    mixer = BetweenClassMixer(num_classes, label_smoothing, partners=partners)
    return PairMixCollate(mixer) if collate else mixer


@register_mixup('bcplus', loss=SoftTargetKLDiv, zero_mean_input=True, collate_needs_norm=True,
                distinct_classes=True)
def create_bcplus(num_classes, label_smoothing=0.0, collate=False, mean=IMAGENET_DEFAULT_MEAN,
                  std=IMAGENET_DEFAULT_STD, out_dtype=torch.float16, partners=None):
    """``mean``/``std`` (timm's data config values, in [0, 1]) and ``out_dtype`` (the float dtype of the
    pixel-space images it emits) are used only by the collate; ``partners`` as for ``bc``."""
    mixer = BetweenClassPlusMixer(num_classes, label_smoothing, mean=mean, std=std, out_dtype=out_dtype,
                                  partners=partners)
    return PairMixCollate(mixer) if collate else mixer


def set_dataset_partners(mixer, dataset, mean: Optional[Sequence[float]] = None,
                         std: Optional[Sequence[float]] = None) -> bool:
    """Give a BC / BC+ mixer (or its collate) the training set ``dataset`` to draw partners from where a batch
    and the memory hold one class (:class:`DatasetPartners` for a map-style dataset, :class:`StreamPartners`
    for an ``IterableDataset``); returns False for any other mixer or a dataset that is neither."""
    inner = getattr(mixer, 'mixer', mixer)
    if not isinstance(inner, BetweenClassMixer):
        return False
    if isinstance(dataset, IterableDataset):
        inner.partners = StreamPartners(dataset, mean=mean, std=std)
    elif hasattr(dataset, '__len__') and hasattr(dataset, '__getitem__'):
        inner.partners = DatasetPartners(dataset, mean=mean, std=std)
    else:
        return False
    return True
