"""Batch-level augmentations that record their parameters: random crop + flip, Cutout, RICAP.

They run on the batch's device, vectorized (no per-sample Python loop), and return what they drew so that
auxiliary targets are exact (Yamada, Iwamura & Kise, "画像分類精度を向上させる追加タスクの検討", IEICE tech.
report, Yamada, Iwamura and Kise, sec. 3.2):

* ``random_crop_flip``: zero-pad ``padding`` then a random HxW crop at offset (dx, dy) in [0, 2p]^2, then a
  horizontal flip with probability 1/2. ``crop_position_class`` turns the offset into the seed's 9-way
  target (3x3 grid over the 9x9 offset range: class = 3 * (dy // 3) + dx // 3 for padding 4).
* ``cutout`` (DeVries & Taylor 2017): one square hole of side ``length``, centre uniform over the image
  (may lie on the border, the square is clipped), filled with 0 (after normalization). Returns the mask.
* ``ricap`` (Takahashi et al. 2018): boundary w = round(W * Beta(b, b)), h = round(H * Beta(b, b)); patches
  (w, h), (W-w, h), (w, H-h), (W-w, H-h) tiled top-left, top-right, bottom-left, bottom-right; patch k comes
  from an independent batch permutation with one random crop offset for the whole batch; the label is
  sum_k area_k / (W H) * onehot(y_perm_k). Returns the per-pixel region map (0 TL, 1 TR, 2 BL, 3 BR).
  ``border_margin`` m > 0 keeps the boundary off the border (w = m + round((W - 2m) Beta)), which the auxiliary-task paper
  needs for its 4-way segmentation to be learnable.

Randomness comes from torch's global generators (CPU for per-batch scalars, the batch's device for per-sample
draws), so everything is reproducible under ``torch.manual_seed``.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    'random_crop_flip', 'crop_position_class', 'cutout', 'cutout_mask', 'ricap', 'ricap_boundary',
    'ricap_region_map', 'RICAPMixer', 'create_ricap', 'Cutout', 'DeviceAugment',
]


def _hard_or_soft(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Smoothed one-hot for int labels (timm's convention: off = s/C, on = 1 - s + s/C); float passes."""
    if target.is_floating_point():
        return target
    out = F.one_hot(target, num_classes).float()
    if smoothing:
        out = out * (1.0 - smoothing) + smoothing / num_classes
    return out


# ----------------------------------------------------------------------------------------------------------
# random crop (zero padding) + horizontal flip
# ----------------------------------------------------------------------------------------------------------
def random_crop_flip(
        x: torch.Tensor,
        padding: int = 4,
        flip: bool = True,
        offsets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        flips: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Zero-pad ``padding``, crop back to (H, W) at a random offset, flip with probability 1/2.

    ``x`` (B, C, H, W) on any device. Returns ``(out, record)`` with record ``crop_dx``, ``crop_dy`` (B,)
    int64 in [0, 2 * padding] (offset of the crop in the padded image, taken *before* the flip, as in
    torchvision's RandomCrop followed by RandomHorizontalFlip) and ``flip`` (B,) bool.
    Output pixel (i, j) = padded[dy + i, dx + j], or padded[dy + i, dx + W - 1 - j] when flipped.
    ``offsets`` / ``flips`` may be given to replay recorded parameters.
    """
    B, C, H, W = x.shape
    dev = x.device
    if offsets is None:
        dx = torch.randint(0, 2 * padding + 1, (B,), device=dev)
        dy = torch.randint(0, 2 * padding + 1, (B,), device=dev)
    else:
        dx, dy = (o.to(dev, torch.long) for o in offsets)
    if flips is None:
        flips = torch.rand(B, device=dev) < 0.5 if flip else torch.zeros(B, dtype=torch.bool, device=dev)
    else:
        flips = flips.to(dev, torch.bool)
    j = torch.arange(W, device=dev)
    i = torch.arange(H, device=dev)
    cols = dx[:, None] + torch.where(flips[:, None], W - 1 - j, j)  # (B, W) in padded coordinates
    rows = dy[:, None] + i  # (B, H)
    # gather from the unpadded image; positions that fall in the zero padding read index 0 and are masked.
    r = rows - padding
    c = cols - padding
    valid = ((r >= 0) & (r < H))[:, :, None] & ((c >= 0) & (c < W))[:, None, :]  # (B, H, W)
    idx = (r.clamp(0, H - 1)[:, :, None] * W + c.clamp(0, W - 1)[:, None, :]).view(B, 1, H * W)
    out = torch.gather(x.reshape(B, C, H * W), 2, idx.expand(B, C, H * W)).view(B, C, H, W)
    out = out * valid[:, None].to(out.dtype)
    if x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out, {'crop_dx': dx, 'crop_dy': dy, 'flip': flips}


def crop_position_class(
        dx: torch.Tensor,
        dy: torch.Tensor,
        padding: int = 4,
        grid: int = 3,
        flip: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The auxiliary-task paper's crop-position target: which cell of a ``grid`` x ``grid`` partition of the (2p+1)^2 offset
    range holds the crop; class = grid * row + col (3 * (dy // 3) + dx // 3 for p = 4).

    With ``flip`` given, the horizontal offset is the one *visible in the output* (2p - dx for flipped
    samples): a flip after the crop mirrors where the zero padding shows, so the pre-flip offset is only
    half-identifiable from the image (the paper notes its crop task fits only without flip). Pass
    ``flip=None`` for the seed's pre-flip convention.
    """
    n = 2 * padding + 1
    if flip is not None:
        dx = torch.where(flip.to(torch.bool), 2 * padding - dx, dx)
    return (dy * grid // n) * grid + dx * grid // n


# ----------------------------------------------------------------------------------------------------------
# Cutout
# ----------------------------------------------------------------------------------------------------------
def cutout_mask(
        batch: int, height: int, width: int, length: int, device=None,
        centres: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """(B, H, W) bool mask of one square hole per image: centre (cy, cx) uniform over the pixels, rows
    [cy - L//2, cy + L//2) x cols [cx - L//2, cx + L//2) clipped to the image (DeVries & Taylor's code)."""
    if centres is None:
        cy = torch.randint(0, height, (batch,), device=device)
        cx = torch.randint(0, width, (batch,), device=device)
    else:
        cy, cx = (c.to(device, torch.long) for c in centres)
    half = length // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_r = (rows[None] >= (cy - half)[:, None]) & (rows[None] < (cy + length - half)[:, None])
    in_c = (cols[None] >= (cx - half)[:, None]) & (cols[None] < (cx + length - half)[:, None])
    return in_r[:, :, None] & in_c[:, None, :]


def cutout(x: torch.Tensor, length: int = 16, fill: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cutout on a (B, C, H, W) batch: returns (out, mask (B, H, W) bool, True = cut out)."""
    B, _, H, W = x.shape
    mask = cutout_mask(B, H, W, length, device=x.device)
    out = x.masked_fill(mask[:, None], fill)
    return out, mask


class Cutout:
    """Per-image Cutout transform for a dataset pipeline (after ``Normalize``): CHW tensor in, CHW out.

    Prefer the batch-level ``cutout`` (on device) where the training loop allows it.
    """

    def __init__(self, length: int = 16, fill: float = 0.0):
        self.length = length
        self.fill = fill

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return cutout(img[None], self.length, self.fill)[0][0]

    def __repr__(self):
        return f'{type(self).__name__}(length={self.length})'


# ----------------------------------------------------------------------------------------------------------
# RICAP
# ----------------------------------------------------------------------------------------------------------
def ricap_boundary(height: int, width: int, beta: float = 0.3, border_margin: int = 0) -> Tuple[int, int]:
    """Boundary (w, h): w = m + round((W - 2m) * Beta(b, b)) (m = 0: RICAP's w = round(W * Beta(b, b)))."""
    if not 0 <= 2 * border_margin < min(height, width):
        raise ValueError(f'border_margin {border_margin} leaves no room in a {height}x{width} image.')
    d = torch.distributions.Beta(torch.tensor(float(beta)), torch.tensor(float(beta)))
    bw, bh = float(d.sample()), float(d.sample())
    w = border_margin + int(round((width - 2 * border_margin) * bw))
    h = border_margin + int(round((height - 2 * border_margin) * bh))
    return w, h


def ricap_region_map(height: int, width: int, w: int, h: int, device=None) -> torch.Tensor:
    """(H, W) int64 map of the patch each pixel belongs to: 0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right."""
    rows = torch.arange(height, device=device)[:, None] >= h
    cols = torch.arange(width, device=device)[None, :] >= w
    return rows.long() * 2 + cols.long()


def ricap(
        x: torch.Tensor,
        target: torch.Tensor,
        num_classes: int,
        beta: float = 0.3,
        border_margin: int = 0,
        label_smoothing: float = 0.0,
        boundary: Optional[Tuple[int, int]] = None,
        perms: Optional[Sequence[torch.Tensor]] = None,
        offsets: Optional[Sequence[Tuple[int, int]]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """RICAP on a (B, C, H, W) batch with int labels (B,) or soft targets (B, num_classes).

    Returns ``(out, soft_target, record)``; record holds ``ricap_region`` (B, H, W) int64 (patch index per
    pixel), ``ricap_perm`` (4, B) source image of each patch, ``ricap_offsets`` (4, 2) crop (x, y) per
    patch, ``ricap_wh`` (2,) the boundary. CE against ``soft_target`` equals RICAP's
    sum_k area_k / (W H) * CE(out, y_perm_k) (CE is linear in the target).
    ``boundary`` (w, h), ``perms`` (4 permutations) and ``offsets`` (4 (x, y)) replay recorded draws.
    """
    B, C, H, W = x.shape
    dev = x.device
    w, h = ricap_boundary(H, W, beta, border_margin) if boundary is None else (int(boundary[0]), int(boundary[1]))
    sizes = [(w, h), (W - w, h), (w, H - h), (W - w, H - h)]
    places = [(0, 0), (w, 0), (0, h), (w, h)]
    out = torch.empty_like(x)
    soft = _hard_or_soft(target, num_classes, label_smoothing)
    mixed = torch.zeros_like(soft)
    used_perms, offs = [], []
    for k in range(4):  # four patches; each is one batched gather, no per-sample loop
        pw, ph = sizes[k]
        if offsets is None:
            ox = int(torch.randint(0, W - pw + 1, ()))
            oy = int(torch.randint(0, H - ph + 1, ()))
        else:
            ox, oy = (int(v) for v in offsets[k])
        perm = torch.randperm(B, device=dev) if perms is None else perms[k].to(dev)
        used_perms.append(perm)
        offs.append((ox, oy))
        if pw and ph:
            px, py = places[k]
            out[:, :, py:py + ph, px:px + pw] = x[:, :, oy:oy + ph, ox:ox + pw].index_select(0, perm)
        mixed += soft.index_select(0, perm) * (pw * ph / (W * H))
    region = ricap_region_map(H, W, w, h, device=dev).expand(B, H, W)
    record = {
        'ricap_region': region,
        'ricap_perm': torch.stack(used_perms),
        'ricap_offsets': torch.tensor(offs, device=dev),
        'ricap_wh': torch.tensor([w, h], device=dev),
    }
    return out, mixed, record


class RICAPMixer:
    """RICAP with timm's mixer contract: ``mixer(x, target) -> (x_mixed, soft_target)`` and a
    ``mixup_enabled`` switch (off: images unchanged, smoothed one-hot targets). ``last_record`` keeps the
    parameters of the latest call (region map etc.)."""

    def __init__(self, num_classes: int, beta: float = 0.3, border_margin: int = 0, label_smoothing: float = 0.0):
        self.num_classes = num_classes
        self.beta = beta
        self.border_margin = border_margin
        self.label_smoothing = float(label_smoothing)
        self.mixup_enabled = True
        self.last_record: Optional[Dict[str, torch.Tensor]] = None

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        if not self.mixup_enabled:
            return x, _hard_or_soft(target, self.num_classes, self.label_smoothing)
        out, soft, self.last_record = ricap(
            x, target, self.num_classes, self.beta, self.border_margin, self.label_smoothing)
        return out, soft


def create_ricap(num_classes: int, label_smoothing: Optional[float] = None, collate: bool = False,
                 beta: float = 0.3, border_margin: int = 0, **kwargs) -> RICAPMixer:
    """Factory with ``timm_mixplug.register_mixup``'s signature: ``register_mixup('ricap', create_ricap)``.
    RICAP's paper uses no label smoothing (default 0)."""
    if collate:
        raise ValueError('RICAP runs on the batch after the loader (on device); use collate=False.')
    if kwargs:
        raise TypeError(f'Unexpected RICAP arguments: {sorted(kwargs)}')
    return RICAPMixer(num_classes, beta, border_margin, label_smoothing or 0.0)


# ----------------------------------------------------------------------------------------------------------
# combined device-side pipeline
# ----------------------------------------------------------------------------------------------------------
class DeviceAugment:
    """The auxiliary-task paper's augmentation pipeline on the batch, recording everything: crop (zero pad) + flip, then
    Cutout, or RICAP on the cropped/flipped images. Inputs are normalized images without crop/flip.

    ``__call__(x, label) -> (x_aug, record)``; record holds ``label`` and, as configured, ``crop_dx``,
    ``crop_dy``, ``flip``, ``cutout_mask`` (B, H, W bool), ``ricap_region`` (B, H, W int64) and
    ``soft_target`` (B, num_classes) for RICAP.
    """

    def __init__(self, padding: int = 4, flip: bool = True, cutout_length: int = 0, ricap_beta: float = 0.0,
                 ricap_border_margin: int = 0, num_classes: Optional[int] = None, label_smoothing: float = 0.0):
        if cutout_length and ricap_beta:
            raise ValueError('Cutout and RICAP are separate pipelines in the auxiliary-task paper; choose one.')
        if ricap_beta and not num_classes:
            raise ValueError('RICAP needs num_classes for its area-weighted labels.')
        self.padding = padding
        self.flip = flip
        self.cutout_length = cutout_length
        self.ricap_beta = ricap_beta
        self.ricap_border_margin = ricap_border_margin
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def __call__(self, x: torch.Tensor, label: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        record: Dict[str, torch.Tensor] = {} if label is None else {'label': label}
        if self.padding or self.flip:
            x, rec = random_crop_flip(x, self.padding, self.flip)
            record.update(rec)
        if self.cutout_length:
            x, record['cutout_mask'] = cutout(x, self.cutout_length)
        if self.ricap_beta:
            if label is None:
                raise ValueError('RICAP needs the labels.')
            x, record['soft_target'], rec = ricap(
                x, label, self.num_classes, self.ricap_beta, self.ricap_border_margin, self.label_smoothing)
            record.update(rec)
        return x, record

    def __repr__(self):
        return (f'{type(self).__name__}(padding={self.padding}, flip={self.flip}, '
                f'cutout_length={self.cutout_length}, ricap_beta={self.ricap_beta}, '
                f'ricap_border_margin={self.ricap_border_margin})')
