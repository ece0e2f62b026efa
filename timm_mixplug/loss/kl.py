"""Soft-target losses."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SoftTargetKLDiv(nn.Module):
    """BC learning's loss: KL(t || softmax(y)) averaged over the batch (Tokozume et al., sec. 2).

    KL(t || p) = sum_c t_c (log t_c - log p_c) = H(t, p) - H(t), so its gradient with respect to the logits
    equals that of timm's ``SoftTargetCrossEntropy``; the reported value is the KL itself (0 for a perfect
    prediction), not the cross-entropy. Terms with t_c = 0 contribute 0 (x log x -> 0).
    """

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != x.shape:
            raise ValueError(
                f'SoftTargetKLDiv expects soft targets shaped like the logits {tuple(x.shape)}, got '
                f'{tuple(target.shape)}; pass the mixer\'s soft targets (or one-hot) instead of class indices.')
        log_p = F.log_softmax(x.float(), dim=-1)
        target = target.float()
        return (torch.xlogy(target, target) - target * log_p).sum(dim=-1).mean()
