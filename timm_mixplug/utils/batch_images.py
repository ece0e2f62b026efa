"""A training batch as a picture: the (mixed) input images in a grid, each tile labelled with its classes and
their weights read from the soft target (two sources and the ratio for BC / BC+ / mixup pairs)."""
import io
import math
from typing import List, Optional, Sequence

import torch
from PIL import Image, ImageDraw

__all__ = ['batch_grid', 'tile_labels']


def tile_labels(target: Optional[torch.Tensor], class_names: Optional[Sequence[str]], n: int) -> List[str]:
    """One short label per image: ``name`` for a hard label, ``a 0.63`` and ``b 0.37`` on two lines for a soft
    target whose second class carries weight above the smoothing floor (the two mixed classes and the ratio)."""
    def name(c: int) -> str:
        return (str(class_names[c]) if class_names is not None and c < len(class_names) else str(c))[:9]
    if target is None or not isinstance(target, torch.Tensor) or target.dim() not in (1, 2):
        return [''] * n
    target = target.detach().float().cpu()
    blank = [''] * max(0, n - len(target))  # images without a target of their own (GLMC's second batch)
    if target.dim() == 1:
        return [name(int(c)) for c in target[:n].tolist()] + blank
    w, c = target[:n].topk(min(2, target.shape[1]), dim=1)
    floor = target[:n].min(dim=1).values  # the label-smoothing share of every class
    out = []
    for wi, ci, f in zip(w.tolist(), c.tolist(), floor.tolist()):
        if len(wi) > 1 and wi[1] - f > 1e-3:
            out.append(f'{name(ci[0])} {wi[0]:.2f}\n{name(ci[1])} {wi[1]:.2f}')
        else:
            out.append(name(ci[0]))
    return out + blank


def batch_grid(images: torch.Tensor, target: Optional[torch.Tensor] = None, *, mean: Sequence[float],
               std: Sequence[float], zero_mean_input: bool = False, class_names: Optional[Sequence[str]] = None,
               max_tiles: int = 64, columns: int = 8, min_tile: int = 96) -> bytes:
    """PNG bytes of the first ``max_tiles`` images of a normalised batch (B, C, H, W) in a grid.

    Pixels are de-normalised with ``mean`` / ``std``; a zero-mean (BC+) input has lost each image's mean, so
    each tile is stretched to its own min..max instead, which shows both mixed sources. Tiles smaller than
    ``min_tile`` pixels are enlarged (nearest) so that the labels under them stay readable."""
    x = images[:max_tiles].detach().float().cpu()
    n, c = x.shape[0], x.shape[1]
    if zero_mean_input:
        lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-6)
    else:
        x = x * torch.tensor(std[:c]).view(1, c, 1, 1) + torch.tensor(mean[:c]).view(1, c, 1, 1)
    x = x.clamp(0, 1)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    scale = max(1, math.ceil(min_tile / max(x.shape[-1], 1)))
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode='nearest')
    h, w = x.shape[-2:]
    labels = tile_labels(target, class_names, n)
    strip = 12 * max(ln.count('\n') + 1 for ln in labels) + 2 if any(labels) else 0
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    canvas = Image.new('RGB', (cols * (w + 2), rows * (h + strip + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        left, top = col * (w + 2) + 1, r * (h + strip + 2) + 1
        canvas.paste(Image.fromarray(pixels[i]), (left, top))
        if strip:
            draw.multiline_text((left + 1, top + h + 1), labels[i], fill=(0, 0, 0), spacing=1)
    buf = io.BytesIO()
    canvas.save(buf, format='PNG')
    return buf.getvalue()
