"""Each method's kernels on a device against the same code on the CPU in float64: the exactness part of gpu_check.

Every check draws its inputs (and the method's random draws: partners, ratios, boxes, centres) once on the CPU,
replays them on ``device`` in float32 (the dtype training uses) and on the CPU in float64, and reports the
largest absolute difference against a float32 tolerance. On the CPU device (the smoke mode) the same checks
compare CPU float32 with CPU float64, so they cannot rot where no GPU is lent.

Methods: BC / BC+ (Tokozume et al., CVPR 2018, formula (2)), superclass mixup, DML's mimicry term (Zhang et al.,
CVPR 2018), GLMC's global mixup + local CutMix (Du et al., CVPR 2023), NT-Xent (Chen et al., ICML 2020) and its
mix-ratio form, RICAP (Takahashi et al., ACML 2018) and Cutout (DeVries & Taylor, 2017).
"""
from typing import Callable, Dict, List

import torch

from timm_mixplug import create_mixup
from timm_mixplug.data.transforms import cutout_mask, ricap
from timm_mixplug.loss.contrastive import mixed_nt_xent, nt_xent
from timm_mixplug.loss.mutual import dml_losses
from timm_mixplug.task.glmc import glmc_mix

TOL = 1e-4  # float32 against float64 on values of order 1


def _pair_mixer(name: str, **kw) -> Callable:
    """f(x, y, dev) -> (mixed image, soft target) with partners and ratios drawn once (CPU) and replayed."""
    g = torch.Generator().manual_seed(1)
    n = 16
    partner = (torch.arange(n) + 1 + torch.randint(0, n // 4, (n,), generator=g) * 4) % n  # other class (y = i % 4)
    lam = torch.rand(n, generator=g)

    def run(x, y, dev):
        mixer = create_mixup(name, 8, **kw)
        mixer.sample = lambda target, source=None: (partner.to(dev), lam.to(dev))
        return mixer(x, y)
    return run


def _inputs(dev, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 12, 12, generator=g) * torch.rand(16, 1, 1, 1, generator=g) * 2
    return x.to(dev, dtype), (torch.arange(16) % 4).to(dev)


def _check_bc(dev, dtype, name='bc', **kw):
    x, y = _inputs(dev, dtype)
    return _pair_mixer(name, **kw)(x, y, dev)


def _check_dml(dev, dtype):
    logits = torch.randn(3, 16, 10, generator=torch.Generator().manual_seed(2)) * 3
    return (dml_losses(logits.to(dev, dtype), kl_weight=1.0, temperature=2.0),)


def _check_glmc(dev, dtype):
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(8, 3, 12, 12, generator=g).to(dev, dtype) for _ in range(4)]
    torch.manual_seed(3)  # the CutMix box is drawn from the global generator: the same box on both sides
    x_mix, x_cut, _ = glmc_mix(*views, lam=0.37)
    return x_mix, x_cut


def _check_nt_xent(dev, dtype):
    g = torch.Generator().manual_seed(4)
    z = [torch.randn(8, 16, generator=g).to(dev, dtype) for _ in range(4)]
    y1, y2 = (torch.arange(8) % 3).to(dev), (torch.arange(8) % 2).to(dev)
    return (nt_xent(z[0], z[1], 0.5), *mixed_nt_xent(*z, lam=0.3, tau=0.5, labels=(y1, y2)))


def _check_ricap(dev, dtype):
    x, y = _inputs(dev, dtype)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(16, generator=g) for _ in range(4)]
    out, soft, record = ricap(x, y, 8, boundary=(5, 7), perms=perms, offsets=[(1, 2), (0, 3), (4, 0), (2, 1)])
    return out, soft, record['ricap_region']


def _check_cutout(dev, dtype):
    x, _ = _inputs(dev, dtype)
    g = torch.Generator().manual_seed(6)
    centres = torch.randint(0, 12, (16,), generator=g), torch.randint(0, 12, (16,), generator=g)
    mask = cutout_mask(16, 12, 12, 5, device=dev, centres=centres)
    return x.masked_fill(mask[:, None], 0.0), mask


CHECKS: Dict[str, Callable] = {
    'bc': _check_bc,
    'bcplus': lambda dev, dtype: _check_bc(dev, dtype, 'bcplus'),
    'superclass': lambda dev, dtype: _check_bc(dev, dtype, 'superclass', hierarchy=[0, 0, 1, 1, 2, 2, 3, 3]),
    'dml': _check_dml,
    'glmc': _check_glmc,
    'nt_xent': _check_nt_xent,
    'ricap': _check_ricap,
    'cutout': _check_cutout,
}


def max_difference(got, ref) -> float:
    """The largest absolute difference between two tuples of tensors (bool / integer ones must be equal: inf)."""
    worst = 0.0
    for a, b in zip(got, ref):
        a, b = a.detach().cpu(), b.detach().cpu()
        if not a.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, b) else float('inf'))
        else:
            worst = max(worst, float((a.double() - b.double()).abs().max()))
    return worst


def run_exactness(device: torch.device) -> List[dict]:
    """[{name, max_abs_diff, tol, ok}] for every check: ``device`` float32 against CPU float64."""
    rows = []
    for name, check in CHECKS.items():
        ref = check(torch.device('cpu'), torch.float64)
        got = check(device, torch.float32)
        diff = max_difference(got, ref)
        rows.append(dict(name=name, max_abs_diff=diff, tol=TOL, ok=diff <= TOL))
    return rows
