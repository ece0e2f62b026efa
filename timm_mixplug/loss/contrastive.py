"""The consistency and contrastive losses of GLMC (Du et al., CVPR 2023) and of its mix-ratio contrastive extension.

``negative_cosine`` is SimSiam's criterion (Chen and He, CVPR 2021), GLMC's global-local consistency term;
``nt_xent`` is SimCLR's NT-Xent and ``mixed_nt_xent`` weights it by the mixing ratio between the features of
the two source images and those of their mixup / CutMix mixture.

``labels`` (ours, not the papers'; seed 004's stated future work, "use the labels to choose what is pushed
apart"): with the class of every vector given, a negative that shares a class with its anchor is left out of
the anchor's denominator (a mixed feature holds both source classes). On CIFAR-10-LT a batch of 64 gives a
head-class anchor about 25 same-class negatives of 63, about 10x CIFAR-100-LT's.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['negative_cosine', 'nt_xent', 'mixed_nt_xent', 'shares_class']


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam criterion S(p, z) = -mean_b cos(p_b, stop_grad(z_b))."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


def shares_class(labels: torch.Tensor) -> torch.Tensor:
    """(M, M) bool: vectors i and k hold a common class. ``labels`` (M,) or (M, K): the classes of each vector
    (a mixed feature lists both source classes; repeat a class to fill a row)."""
    lab = labels.reshape(labels.shape[0], -1)
    return (lab[:, None, :, None] == lab[None, :, None, :]).flatten(2).any(-1)


def nt_xent(z: torch.Tensor, z_tilde: torch.Tensor, tau: float = 0.5,
            labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020; the contrastive GLMC paper's eq. (1)) between paired batches z, z~ (N, d).

    u = normalize(cat(z, z~)) (2N, d); for every anchor i of the 2N, the positive is its pair (i +- N), the
    denominator sums exp(cos / tau) over the 2N - 1 other vectors; the loss is the mean over the 2N anchors.
    ``labels`` (2N,) or (2N, K), the classes of cat(z, z~) (ours, not the paper's): the denominator then leaves
    out every negative that shares a class with the anchor (the positive always stays).
    """
    N = z.shape[0]
    u = F.normalize(torch.cat([z, z_tilde]).float(), dim=-1)
    sim = u @ u.t() / tau
    pos = torch.arange(2 * N, device=sim.device).roll(N)
    drop = torch.eye(2 * N, dtype=torch.bool, device=sim.device)
    if labels is not None:
        if labels.shape[0] != 2 * N:
            raise ValueError(f'labels must give the classes of the {2 * N} vectors cat(z, z_tilde), got '
                             f'{tuple(labels.shape)}.')
        keep_pos = F.one_hot(pos, 2 * N).bool()
        drop = drop | (shares_class(labels.to(sim.device)) & ~keep_pos)
    return F.cross_entropy(sim.masked_fill(drop, float('-inf')), pos)


def mixed_nt_xent(z1: torch.Tensor, z2: torch.Tensor, z_mix: torch.Tensor, z_cut: torch.Tensor, lam: float,
                  tau: float = 0.5, labels: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contrastive GLMC paper's eqs. (2)-(3): (L_CLR, L_mixup, L_cutmix) with the mixing ratio lam of both mixes.

    ``labels`` = (y1, y2), the (N,) classes of the two source batches (ours): each NT-Xent then leaves
    same-class negatives out of its denominators, a mixed feature holding both y1 and y2.
    """
    if labels is None:
        l1 = l2 = None
    else:
        y1, y2 = labels
        lm = torch.stack([y1, y2], 1)
        l1 = torch.cat([torch.stack([y1, y1], 1), lm])
        l2 = torch.cat([torch.stack([y2, y2], 1), lm])
    l_mix = lam * nt_xent(z1, z_mix, tau, l1) + (1 - lam) * nt_xent(z2, z_mix, tau, l2)
    l_cut = lam * nt_xent(z1, z_cut, tau, l1) + (1 - lam) * nt_xent(z2, z_cut, tau, l2)
    return 0.5 * (l_mix + l_cut), l_mix, l_cut
