"""Deep Mutual Learning's mimicry loss (Zhang, Xiang, Hospedales and Lu, CVPR 2018, eqs. (1)-(3)).

For K >= 2 peers with logits z_k, peer i's mimicry term is w * T^2 * reduce_{j != i} KL(p_j || p_i) with
p_k = softmax(z_k / T) and p_j detached (a constant for peer i); reduce is the mean over the K - 1 other peers
(the paper) or their sum (the reference code). The T^2 factor (Hinton et al., 2015) keeps gradient magnitudes
comparable across temperatures.
"""
import torch
import torch.nn.functional as F

__all__ = ['dml_losses', 'KL_REDUCTIONS']

KL_REDUCTIONS = ('mean', 'sum')


def dml_losses(logits: torch.Tensor, kl_weight: float = 1.0, temperature: float = 1.0,
               kl_reduction: str = 'mean') -> torch.Tensor:
    """Mimicry term of every peer: (K,) with entry i = w * T^2 * reduce_{j != i} KL(p_j || p_i).

    sum_{j != i} KL(p_j || p_i) = sum_{j != i} sum p_j log p_j - sum (sum_{j != i} p_j) log p_i, so entry i
    depends on peer i's logits only (the other peers' probabilities are detached constants).
    """
    K = logits.shape[0]
    if K < 2:
        raise ValueError(f'DML needs at least 2 peers, got {K}.')
    if kl_reduction not in KL_REDUCTIONS:
        raise ValueError(f'kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}.')
    B = logits.shape[1]
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    logp_t = logp.detach()
    p_t = logp_t.exp()
    neg_ent = torch.xlogy(p_t, p_t).sum(dim=(1, 2)) / B               # (K,) sum_c p_j log p_j
    others_p = p_t.sum(dim=0, keepdim=True) - p_t                     # (K, B, C) sum_{j != i} p_j
    per_peer = (neg_ent.sum() - neg_ent) - (others_p * logp).sum(dim=(1, 2)) / B
    if kl_reduction == 'mean':
        per_peer = per_peer / (K - 1)
    return per_peer * (kl_weight * temperature ** 2)
