"""--task classification (default): timm's ``ClassificationTask``, with shot-group evaluation on long-tailed data."""
from timm_mixplug.task.classification import LongTailClassificationTask
from timm_mixplug.train.specs.base import TaskSpec, register_task
from timm_mixplug.train.data import is_longtail


@register_task('classification')
class ClassificationSpec(TaskSpec):
    help = "timm's ClassificationTask with the --mix method's loss (default)"

    def create_task(self, args, model, criterion, mixer, info, device):
        if is_longtail(args) and info.class_counts:
            return LongTailClassificationTask(model, info.class_counts, criterion=criterion, device=device,
                                              verbose=False)
        return super().create_task(args, model, criterion, mixer, info, device)
