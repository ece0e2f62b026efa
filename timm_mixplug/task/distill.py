"""Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015)
through timm's own tasks, for teachers that see the student's (mixed) batch.

timm's ``LogitDistillationTask`` trains ``task_w * CE(student, target) + distill_w * T^2 * KL(softmax(t / T) ||
softmax(s / T))`` (batch mean) with the teacher frozen under ``no_grad``; ``FeatureDistillationTask`` matches the
pooled pre-logits features by MSE (with a learned projection when the sizes differ); ``TokenDistillationTask``
trains a distillation head (DeiT). :func:`create_distillation_task` builds one of them around a teacher module
wrapped by :class:`FrozenTeacher`, which

* freezes the teacher (``requires_grad`` False, kept in eval mode by timm's task),
* renormalises the student's input to the teacher's mean / std only where they differ (timm's rule), with the
  student's mean / std taken from the data pipeline (``--mean`` / ``--std`` included) instead of the model's
  default config,
* keeps BC+'s zero-mean input (Tokozume et al., formula (2): images are zero-meaned per image before mixing)
  zero-mean after that renormalisation, so a teacher trained with BC+ sees what it was trained on.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from timm.task import FeatureDistillationTask, LogitDistillationTask, TokenDistillationTask
from timm.task.distillation import DistillationTeacher

from timm_mixplug.data.mixing import zero_mean

__all__ = ['FrozenTeacher', 'create_distillation_task', 'set_student_normalization', 'DISTILL_TYPES']

DISTILL_TYPES = ('logit', 'feature', 'token')


class FrozenTeacher(DistillationTeacher):
    """timm's ``DistillationTeacher`` around ``model`` with frozen parameters; with ``zero_mean_input`` a
    renormalised input is zero-meaned again (BC+).

    Args:
        model: the teacher (its ``pretrained_cfg`` mean / std, else ImageNet's, as timm).
        zero_mean_input: the student's input is zero-mean per image (``--mix bcplus``).
        device, dtype: of the normalisation buffers.
    """

    def __init__(self, model: nn.Module, zero_mean_input: bool = False, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(model, device=device, dtype=dtype)
        self.zero_mean_input = zero_mean_input
        self.requires_grad_(False)

    def normalize_input(self, input, student_mean=None, student_std=None):
        out = super().normalize_input(input, student_mean, student_std)
        if self.zero_mean_input and out is not input:
            out = zero_mean(out)
        return out


def create_distillation_task(student: nn.Module, teacher: nn.Module, distill_type: str = 'logit', *,
                             criterion: Optional[nn.Module] = None, mean: Optional[Sequence[float]] = None,
                             std: Optional[Sequence[float]] = None, zero_mean_input: bool = False,
                             loss_type: str = 'kl', distill_loss_weight: Optional[float] = None,
                             task_loss_weight: Optional[float] = None, temperature: float = 4.0,
                             student_feature_dim: Optional[int] = None, teacher_feature_dim: Optional[int] = None,
                             token_distill_type: str = 'soft', device: Optional[torch.device] = None,
                             dtype: Optional[torch.dtype] = None):
    """timm's distillation task of ``distill_type`` (upstream train.py's ``--kd-*`` options as keywords) with
    ``teacher`` frozen; ``mean`` / ``std``: the normalisation of the student's input (default: the student's
    pretrained config, as timm)."""
    if distill_type not in DISTILL_TYPES:
        raise ValueError(f'distill_type must be one of {", ".join(DISTILL_TYPES)}, got {distill_type!r}')
    wrapped = FrozenTeacher(teacher, zero_mean_input=zero_mean_input, device=device, dtype=dtype)
    common = dict(student_model=student, teacher_model=wrapped, criterion=criterion, device=device, dtype=dtype,
                  distill_loss_weight=distill_loss_weight, task_loss_weight=task_loss_weight, verbose=False)
    if distill_type == 'logit':
        task = LogitDistillationTask(loss_type=loss_type, temperature=temperature, **common)
    elif distill_type == 'feature':
        task = FeatureDistillationTask(student_feature_dim=student_feature_dim,
                                       teacher_feature_dim=teacher_feature_dim, **common)
    else:
        task = TokenDistillationTask(distill_type=token_distill_type, temperature=temperature, **common)
    set_student_normalization(task, mean, std)
    return task


def set_student_normalization(task, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> None:
    """Tell a timm distillation task how the student's input is normalised (what the teacher's input is
    renormalised from); ``None`` keeps the task's default (the student's pretrained config)."""
    for name, value in (('student_mean', mean), ('student_std', std)):
        if value is not None:
            buf = getattr(task, name)
            buf.copy_(torch.tensor(value, dtype=buf.dtype, device=buf.device).view_as(buf))
