"""Evaluators of the training tasks: many / medium / few-shot top-1 for long-tailed training.

Shot groups by training count (Cao et al., NeurIPS 2019; GLMC, Du et al., CVPR 2023): many n > 100, medium
20 < n <= 100, few n <= 20. A group's accuracy is the mean of the per-class top-1 accuracies of its classes (as
in the GLMC / OLTR evaluation code); ``overall`` is the usual per-sample top-1.
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Union

import torch
import torch.distributed as dist
from timm.task import ClassificationEvaluator

from timm_mixplug.data.longtail import SHOT_NAMES, shot_groups

__all__ = ['shot_accuracy', 'ShotAccuracyEvaluator']


def _shot_summary(correct: torch.Tensor, total: torch.Tensor, groups: Dict[str, torch.Tensor]) -> Dict[str, float]:
    correct, total = correct.double().cpu(), total.double().cpu()
    present = total > 0
    acc = torch.where(present, correct / total.clamp_min(1), torch.zeros_like(total))
    out = OrderedDict()
    for name, mask in groups.items():
        m = mask.cpu() & present
        out[name] = 100.0 * acc[m].mean().item() if bool(m.any()) else float('nan')
    out['overall'] = 100.0 * (correct.sum() / total.sum().clamp_min(1)).item()
    return out


def shot_accuracy(logits_or_preds: torch.Tensor, targets: torch.Tensor,
                  train_counts: Union[torch.Tensor, Sequence[int]]) -> Dict[str, float]:
    """Top-1 accuracy (%) overall and per shot group (mean of per-class accuracies in the group).

    ``logits_or_preds``: logits (N, C) or predicted class indices (N,). Groups without any test class are nan.
    """
    counts = torch.as_tensor(train_counts).reshape(-1)
    C = counts.numel()
    pred = logits_or_preds.argmax(dim=-1) if logits_or_preds.ndim == 2 else logits_or_preds
    targets = targets.reshape(-1).long()
    hit = (pred.reshape(-1).long() == targets).long()
    correct = torch.bincount(targets, weights=hit.double(), minlength=C)
    total = torch.bincount(targets, minlength=C)
    return _shot_summary(correct, total, shot_groups(counts))


class ShotAccuracyEvaluator(ClassificationEvaluator):
    """timm's ``ClassificationEvaluator`` (loss / top-1 / top-5) plus many / medium / few-shot top-1 (%).

    Per-class correct / total counts accumulate on the evaluator's device (no host sync per batch) and are
    all-reduced in ``compute(distributed=True)``.
    """

    default_metric = 'top1'
    metric_names = ('loss', 'top1', 'top5') + SHOT_NAMES

    def __init__(self, train_counts, device=None, *, max_samples: Optional[int] = None, criterion=None):
        self.train_counts = torch.as_tensor(train_counts, dtype=torch.long).reshape(-1).cpu()
        self.groups = shot_groups(self.train_counts)
        super().__init__(device, max_samples=max_samples, criterion=criterion)

    def reset(self):
        super().reset()
        C = self.train_counts.numel()
        self.class_correct = torch.zeros(C, dtype=torch.int64, device=self.device)
        self.class_total = torch.zeros(C, dtype=torch.int64, device=self.device)

    @torch.no_grad()
    def update(self, output, target):
        if output.ndim != 2 or target.ndim != 1 or target.shape[0] != output.shape[0]:
            raise ValueError('Single-label evaluation expects (batch, num_classes) logits and (batch,) class indices.')
        output, target = self._prepare(output, target)
        if not output.shape[0]:
            return
        self._accumulate_loss(self.criterion(output, target), output.shape[0])
        predictions = output.topk(min(5, output.shape[-1]), dim=-1).indices
        correct = predictions.eq(target[:, None])
        self.counts[1] += correct[:, 0].sum()
        self.counts[2] += correct.any(dim=-1).sum()
        C = self.class_total.numel()
        target = target.to(self.class_total.device)
        self.class_total += torch.bincount(target, minlength=C)[:C]
        self.class_correct += torch.bincount(target, weights=correct[:, 0].to(self.device, torch.float64),
                                             minlength=C)[:C].round().long()

    def _summary_all(self, loss_sum, counts, class_correct, class_total):
        out = self._summary(loss_sum, counts)
        shots = _shot_summary(class_correct, class_total, self.groups)
        for k in SHOT_NAMES:
            out[k] = shots[k]
        return out

    def summary(self):
        return self._summary_all(self.loss_sum, self.counts, self.class_correct, self.class_total)

    def compute(self, distributed=False):
        loss_sum, counts = self.loss_sum.clone(), self.counts.clone()
        cc, ct = self.class_correct.clone(), self.class_total.clone()
        if distributed:
            for t in (loss_sum, counts, cc, ct):
                dist.all_reduce(t)
        return self._summary_all(loss_sum, counts, cc, ct)
