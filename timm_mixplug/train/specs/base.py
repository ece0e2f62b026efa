"""Objective registry: how ``train.py`` builds the training objective selected by ``--task``.

Contract for contributors (DML, GLMC, importance sampling, auxiliary heads, ...)
------------------------------------------------------------------------------
Register a ``TaskSpec`` subclass (or instance) with ``@register_task('name')``. ``train.py`` calls, in order:

1. ``add_args(parser)`` at start-up for *every* registered spec: add one argument group with your flags
   (dests must be unique; they are then valid CLI flags and YAML ``-c`` keys, and land in ``args.yaml``).
2. ``check_args(args)`` for the selected spec only, before anything is written: raise ``ValueError`` with
   one clear sentence for a bad combination (train.py turns it into ``error: ...`` and exit code 2).
3. ``wrap_dataset(dataset, args, info, is_training)``: return the dataset the loader should use (multi-view
   datasets, transforms that record targets, re-balanced sampling...). It is called *before* timm's
   ``create_loader`` sets ``dataset.transform``, so a wrapper must forward a ``transform`` attribute.
4. ``create_model(args, info, create_fn)``: return whatever ``create_task`` takes as ``model``
   (``create_fn(**overrides)`` builds ``--model`` with the user's timm options; DML calls it N times,
   auxiliary heads wrap its result).
5. ``create_collate(args, info, collate)``: return the training collate (``collate`` is what train.py
   would use: timm's ``fast_collate`` / ``default_collate`` or a mixing collate).
6. ``create_task(args, model, criterion, mixer, info, device)``: return a ``timm.task.TrainingTask``
   (see docs/CONTRACTS.md): ``forward(input, target) -> dict`` with ``'loss'``, ``'output'`` and optional
   extra scalar tensors (averaged and logged per epoch under their key);
   ``get_trainable_module()`` feeds the optimizer, DDP, EMA and the resumable state;
   ``get_eval_model()`` returns plain (B, C) logits and is what ``best.safetensors`` holds;
   optional ``set_epoch(epoch, num_epochs)`` is called at the start of every epoch (epoch from 0);
   ``get_task_state()`` / ``load_task_state()`` (tensors and JSON-able values) go into the resumable state.

Mixing: if ``mixes_itself`` is False, train.py applies ``--mix`` before calling the task (in the collate or
on the device) and ``mixer`` is None; if True, train.py never mixes and passes the device-side mixer (or
None for ``--mix none``) to ``create_task`` (importance sampling mixes after choosing views, GLMC mixes
itself). ``criterion`` is the loss for the selected ``--mix`` (soft targets when mixing).

Validation: the engine calls ``task.create_evaluator(max_samples=...)`` (timm's API: ``update(output,
target)``, ``compute(distributed) -> dict``) and, per batch, ``task.eval_forward(input, ema=False)`` if the
task defines it, else ``task.get_eval_model(ema)(input)``. A task reporting more than loss / top-1 / top-5
(each DML peer and the ensemble; many/medium/few-shot accuracy) returns its own evaluator and, if needed, an
``eval_forward`` whose output that evaluator understands. All returned metrics go to summary.csv.

``info`` is a :class:`DataInfo` (number of classes, class names, per-class training counts).
"""
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from timm.task import ClassificationTask
from timm.utils import unwrap_model

__all__ = ['DataInfo', 'TaskSpec', 'register_task', 'list_tasks', 'get_task_spec', 'create_task',
           'ClassificationSpec', 'load_builtin_tasks']


@dataclass
class DataInfo:
    """What a task may need to know about the training data."""
    num_classes: int
    class_names: Optional[List[str]] = None
    class_counts: Optional[List[int]] = None  # training images per class (long-tailed tasks)
    dataset_name: str = ''
    extra: Dict[str, Any] = field(default_factory=dict)


class TaskSpec:
    """Default hooks: one timm model, no dataset/collate change, timm's ``ClassificationTask``."""
    name: str = ''
    help: str = ''
    mixes_itself: bool = False  # True: train.py passes the mixer to create_task and does not mix
    use_prefetcher: Optional[bool] = None  # False: force the plain loader path (targets stay on the host)

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        pass

    def check_args(self, args: argparse.Namespace) -> None:
        pass

    def wrap_dataset(self, dataset, args: argparse.Namespace, info: DataInfo, is_training: bool):
        return dataset

    def create_model(self, args: argparse.Namespace, info: DataInfo, create_fn: Callable[..., nn.Module]):
        return create_fn()

    def create_collate(self, args: argparse.Namespace, info: DataInfo, collate: Callable) -> Callable:
        return collate

    def create_task(self, args, model, criterion, mixer, info: DataInfo, device: torch.device):
        return ClassificationTask(model, criterion=criterion, device=device, verbose=False)


_TASKS: Dict[str, TaskSpec] = {}
_BUILTIN_MODULES = ('task.dml', 'task.glmc', 'task.nonharmonic', 'task.aux')


def register_task(name: str, spec=None):
    """Register a ``TaskSpec`` subclass or instance under ``name`` (decorator or call)."""
    def _add(obj):
        inst = obj() if isinstance(obj, type) else obj
        if not isinstance(inst, TaskSpec):
            raise TypeError(f'register_task({name!r}) expects a TaskSpec subclass or instance, got {obj!r}.')
        inst.name = name
        _TASKS[name] = inst
        return obj
    return _add(spec) if spec is not None else _add


def load_builtin_tasks() -> None:
    """Import the package's task modules so they register themselves."""
    import importlib
    for mod in _BUILTIN_MODULES:
        importlib.import_module(f'timm_mixplug.{mod}')


def list_tasks() -> Sequence[str]:
    load_builtin_tasks()
    return sorted(_TASKS)


def get_task_spec(name: str) -> TaskSpec:
    if name not in _TASKS:
        load_builtin_tasks()
    if name not in _TASKS:
        raise ValueError(f'Unknown --task {name!r}; known tasks: {", ".join(list_tasks())}.')
    return _TASKS[name]


def create_task(name: str, args, model, criterion=None, mixer=None, info: Optional[DataInfo] = None,
                device=None):
    """Build the registered objective ``name`` for an already created model (library use)."""
    spec = get_task_spec(name)
    info = info or DataInfo(num_classes=getattr(args, 'num_classes', None) or 0)
    return spec.create_task(args, model, criterion, mixer, info, device or torch.device('cpu'))


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


@register_task('classification')
class ClassificationSpec(TaskSpec):
    help = "timm's ClassificationTask with the --mix method's loss (default)"

    def create_task(self, args, model, criterion, mixer, info, device):
        if (getattr(args, 'imb_factor', None) or 0) > 1 and info.class_counts:
            return LongTailClassificationTask(model, info.class_counts, criterion=criterion, device=device,
                                              verbose=False)
        return super().create_task(args, model, criterion, mixer, info, device)


class LongTailClassificationTask(ClassificationTask):
    """timm's ``ClassificationTask`` whose evaluator adds many / medium / few-shot top-1 (long-tailed training)."""

    def __init__(self, model, train_counts, **kwargs):
        super().__init__(model, **kwargs)
        self.train_counts = list(train_counts)

    def create_evaluator(self, **kwargs):
        from timm_mixplug.data.longtail import ShotAccuracyEvaluator
        return ShotAccuracyEvaluator(self.train_counts, device=self.device, **kwargs)
