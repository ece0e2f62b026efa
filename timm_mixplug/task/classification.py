"""Classification objectives beside timm's own ``ClassificationTask``."""
from typing import Callable, Optional, Sequence

import torch.nn as nn
from timm.task import ClassificationTask
from timm.utils import unwrap_model

from timm_mixplug.task.evaluators import ShotAccuracyEvaluator

__all__ = ['LongTailClassificationTask', 'resolve_eval_model']


class LongTailClassificationTask(ClassificationTask):
    """timm's ``ClassificationTask`` whose evaluator adds many / medium / few-shot top-1 (long-tailed training).

    Args:
        model: the timm model.
        train_counts: training images per class (the shot groups' source).
        **kwargs: ``ClassificationTask``'s (criterion, device, dtype, verbose).
    """

    def __init__(self, model: nn.Module, train_counts: Sequence[int], **kwargs):
        super().__init__(model, **kwargs)
        self.train_counts = list(train_counts)

    def create_evaluator(self, **kwargs):
        return ShotAccuracyEvaluator(self.train_counts, device=self.device, **kwargs)


def resolve_eval_model(task, module: Optional[nn.Module], ema: bool,
                       to_eval: Callable[[nn.Module], nn.Module]) -> Optional[nn.Module]:
    """``get_eval_model`` for a task whose trainable module is not itself the eval model: timm's lookup (a
    cached -- e.g. compiled -- ``eval_model`` / ``eval_model_ema`` is returned as it is, else ``module`` or the
    trainable module), with ``to_eval`` mapping the unwrapped module to the eval model. None without a module."""
    if module is None:
        attr = 'eval_model_ema' if ema else 'eval_model'
        if hasattr(task, attr):
            return getattr(task, attr)
        module = task.get_trainable_module(ema=ema)
        if module is None:
            return None
    return to_eval(unwrap_model(module))
