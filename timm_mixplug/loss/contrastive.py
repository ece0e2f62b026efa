"""The consistency and contrastive losses of GLMC (Du et al., CVPR 2023) and of its mix-ratio contrastive extension.

``negative_cosine`` is SimSiam's criterion (Chen and He, CVPR 2021), GLMC's global-local consistency term;
``nt_xent`` is SimCLR's NT-Xent and ``mixed_nt_xent`` weights it by the mixing ratio between the features of
the two source images and those of their mixup / CutMix mixture.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ['negative_cosine', 'nt_xent', 'mixed_nt_xent']


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam criterion S(p, z) = -mean_b cos(p_b, stop_grad(z_b))."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def nt_xent(z: torch.Tensor, z_tilde: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020; the contrastive GLMC paper's eq. (1)) between paired batches z, z~ (N, d).

    u = normalize(cat(z, z~)) (2N, d); for every anchor i of the 2N, the positive is its pair (i +- N), the
    denominator sums exp(cos / tau) over the 2N - 1 other vectors; the loss is the mean over the 2N anchors.
    """
    N = z.shape[0]
    u = F.normalize(torch.cat([z, z_tilde]).float(), dim=-1)
    sim = u @ u.t() / tau
    sim = sim.masked_fill(torch.eye(2 * N, dtype=torch.bool, device=sim.device), float('-inf'))
    pos = torch.arange(2 * N, device=sim.device).roll(N)
    return F.cross_entropy(sim, pos)


def mixed_nt_xent(z1: torch.Tensor, z2: torch.Tensor, z_mix: torch.Tensor, z_cut: torch.Tensor, lam: float,
                  tau: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive GLMC paper's eqs. (2)-(3): (L_CLR, L_mixup, L_cutmix) with the mixing ratio lam of both mixes."""
    l_mix = lam * nt_xent(z1, z_mix, tau) + (1 - lam) * nt_xent(z2, z_mix, tau)
    l_cut = lam * nt_xent(z1, z_cut, tau) + (1 - lam) * nt_xent(z2, z_cut, tau)
    return 0.5 * (l_mix + l_cut), l_mix, l_cut
