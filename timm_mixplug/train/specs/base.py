"""Method specs: how ``train.py`` turns its flags into the library pieces of a ``--task`` or a ``--mix``.

A spec is the only place that reads a method's flags. It declares them by adding them in ``add_args`` (the
parser records which spec added which option) and, for options defined elsewhere (timm's ``--mixup``, ...),
in ``reads``. After parsing, :func:`check_flags_consumed` refuses every option whose value differs from its
default while no selected spec reads it (``--nh-views 3`` without ``--task nonharmonic``, ``--mixup 0.2``
with ``--mix bc``): a new method gets that check by declaring its flags, nothing else.

Task contract (``@register_task('name')`` on a ``TaskSpec`` subclass); ``train.py`` calls, in order:

1. ``add_args(parser)`` at start-up for *every* registered spec: add one argument group with your flags.
2. ``check_args(args)`` for the selected spec only, before anything is written: raise ``ValueError`` with
   one clear sentence for a bad combination (train.py turns it into ``error: ...`` and exit code 2);
   ``unused_flags(args)`` names those of its flags that this configuration does not read.
3. ``wrap_dataset(dataset, args, info, is_training)``: return the dataset the loader should use. It is
   called *before* timm's ``create_loader`` sets ``dataset.transform``, so a wrapper must forward a
   ``transform`` attribute.
4. ``create_model(args, info, create_fn)``: what ``create_task`` takes as ``model`` (``create_fn(**overrides)``
   builds ``--model`` with the user's timm options; DML calls it per peer).
5. ``create_collate(args, info, collate)``: the training collate (``collate`` is what train.py would use).
6. ``create_task(args, model, criterion, mixer, info, device)``: a ``timm.task.TrainingTask`` built from
   keyword arguments (docs/CONTRACTS.md): ``forward(input, target) -> dict`` with ``'loss'``, ``'output'`` and
   optional extra scalar tensors (logged per epoch); ``get_trainable_module()`` feeds the optimizer, DDP,
   EMA and the state; ``get_eval_model()`` returns plain (B, C) logits; optional ``set_epoch(epoch,
   num_epochs)``; ``get_task_state()`` / ``load_task_state()`` go into the resumable state.

Mixing: if ``mixes_itself`` is False, train.py applies ``--mix`` before calling the task (in the collate or
on the device) and ``mixer`` is None; if True, train.py never mixes and passes the device-side mixer (or
None) to ``create_task``. ``criterion`` is the loss of the selected ``--mix`` (``MixerSpec.loss``).

Mixer flags (``@register_mix('name')`` on a ``MixSpec``): ``add_args`` / ``reads`` as above and
``mixer_kwargs(args, info)``, the keyword arguments of ``create_mixup(name, ...)``. A mixer registered with
``register_mixup`` alone gets a ``MixSpec`` without flags.
"""
import argparse
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.task import ClassificationTask

from timm_mixplug.data.mixing import list_mixups
from timm_mixplug.errors import UsageError
from timm_mixplug.train.rules import Rule, number

__all__ = ['DataInfo', 'MethodSpec', 'TaskSpec', 'MixSpec', 'register_task', 'register_mix', 'list_tasks',
           'get_task_spec', 'get_mix_spec', 'all_specs', 'compare_presets', 'weight_settings', 'add_method_args',
           'check_flags_consumed']


@dataclass
class DataInfo:
    """What a method spec may need to know about the training data."""
    num_classes: int
    class_names: Optional[List[str]] = None
    class_counts: Optional[List[int]] = None  # training images per class (long-tailed tasks)
    dataset_name: str = ''
    extra: Dict[str, Any] = field(default_factory=dict)


class MethodSpec:
    """Everything ``train.py`` and ``compare`` need to know about one selectable method (``--task NAME`` or
    ``--mix NAME``): its flags and which of them a run reads, their valid ranges, the settings its weights depend
    on, the defaults it fills in and its ``compare`` presets. The application collects these from the registry
    and holds no method names."""
    kind: str = ''
    name: str = ''
    help: str = ''
    reads: Tuple[str, ...] = ()  # options added elsewhere (timm's flags) that this method reads
    ranges: Mapping[str, Rule] = MappingProxyType({})  # valid range of each option it adds or reads (ranges.py)
    switches: Tuple[str, ...] = ()  # its options that cannot take a bad value (store_true)
    weight_settings: Tuple[str, ...] = ()  # options the trained weights depend on (validate refuses a change)

    def __init__(self):
        self.owned: Tuple[str, ...] = ()  # the options its add_args added (recorded by add_method_args)

    @property
    def selector(self) -> str:
        return f'--{self.kind} {self.name}'

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        pass

    def check_args(self, args: argparse.Namespace) -> None:
        pass

    def unused_flags(self, args: argparse.Namespace) -> Dict[str, str]:
        """Own options (dest -> what they need) that this configuration of the method does not read."""
        return {}

    def resolve_defaults(self, args: argparse.Namespace) -> None:
        """Fill in the defaults of its options that depend on other options (after the range checks)."""

    def compare_presets(self) -> Dict[str, List[str]]:
        """``compare`` method name -> the train.py arguments that select this method (default: its selector)."""
        return {self.name: [f'--{self.kind}', self.name]}


class TaskSpec(MethodSpec):
    """Default hooks: one timm model, no dataset/collate change, timm's ``ClassificationTask``."""
    kind = 'task'
    mixes_itself: bool = False  # True: train.py passes the mixer to create_task and does not mix
    use_prefetcher: Optional[bool] = None  # False: force the plain loader path (targets stay on the host)

    def wrap_dataset(self, dataset, args: argparse.Namespace, info: DataInfo, is_training: bool):
        return dataset

    def create_model(self, args: argparse.Namespace, info: DataInfo, create_fn: Callable[..., nn.Module]):
        return create_fn()

    def create_collate(self, args: argparse.Namespace, info: DataInfo, collate: Callable) -> Callable:
        return collate

    def create_task(self, args, model, criterion, mixer, info: DataInfo, device: torch.device):
        return ClassificationTask(model, criterion=criterion, device=device, verbose=False)


class MixSpec(MethodSpec):
    """A ``--mix`` method's flags; ``mixer_kwargs`` turns them into ``create_mixup`` keyword arguments."""
    kind = 'mix'
    reads = ('mixup_off_epoch',)
    ranges = MappingProxyType({'mixup_off_epoch': number(lo=0, integer=True)})

    def mixer_kwargs(self, args: argparse.Namespace, info: DataInfo) -> Dict[str, Any]:
        return {}


_TASKS: Dict[str, TaskSpec] = {}
_MIXES: Dict[str, MixSpec] = {}
_BUILTIN_MODULES = ('classification', 'dml', 'glmc', 'nonharmonic', 'aux', 'mix')


def _register(table: Dict[str, MethodSpec], base: type, name: str, spec):
    def _add(obj):
        inst = obj() if isinstance(obj, type) else obj
        if not isinstance(inst, base):
            raise TypeError(f'register({name!r}) expects a {base.__name__} subclass or instance, got {obj!r}.')
        inst.name = name
        table[name] = inst
        return obj
    return _add(spec) if spec is not None else _add


def register_task(name: str, spec=None):
    """Register a ``TaskSpec`` subclass or instance under ``name`` (decorator or call)."""
    return _register(_TASKS, TaskSpec, name, spec)


def register_mix(name: str, spec=None):
    """Register the ``MixSpec`` (flags) of the mixer registered as ``name`` with ``register_mixup``."""
    return _register(_MIXES, MixSpec, name, spec)


def load_builtin_specs() -> None:
    """Import the package's spec modules so they register themselves."""
    for mod in _BUILTIN_MODULES:
        importlib.import_module(f'timm_mixplug.train.specs.{mod}')


def list_tasks() -> Sequence[str]:
    load_builtin_specs()
    return sorted(_TASKS)


def get_task_spec(name: str) -> TaskSpec:
    load_builtin_specs()
    if name not in _TASKS:
        raise ValueError(f'Unknown --task {name!r}; known tasks: {", ".join(list_tasks())}.')
    return _TASKS[name]


def get_mix_spec(name: str) -> Optional[MixSpec]:
    """The flags of ``--mix name`` (a flag-less ``MixSpec`` for a mixer registered without one; None for none)."""
    if name in (None, '', 'none'):
        return None
    load_builtin_specs()
    if name not in _MIXES:
        register_mix(name, MixSpec)
    return _MIXES[name]


def all_specs() -> List[MethodSpec]:
    """Every registered task and mix spec (a flag-less ``MixSpec`` for each mixer registered without one)."""
    load_builtin_specs()
    for name in list_mixups():
        get_mix_spec(name)
    return list(_TASKS.values()) + list(_MIXES.values())


def compare_presets() -> Dict[str, List[str]]:
    """Every registered method's ``compare`` presets: name -> train.py arguments added to the training setup."""
    presets: Dict[str, List[str]] = {}
    order = {'task': 2, 'mix': 1}  # the default task (plain cross-entropy: 'ce') first, then mixers, then tasks
    for spec in sorted(all_specs(), key=lambda sp: 0 if sp.name == 'classification' else order[sp.kind]):
        presets.update(spec.compare_presets())
    return presets


def weight_settings() -> Tuple[str, ...]:
    """The options of any registered method that trained weights depend on."""
    return tuple(sorted({d for spec in all_specs() for d in spec.weight_settings}))


def add_method_args(parser: argparse.ArgumentParser) -> None:
    """Every registered spec's ``add_args``, recording which options each one added (``spec.owned``)."""
    for spec in all_specs():
        before = {a.dest for a in parser._actions}
        spec.add_args(parser)
        spec.owned = tuple(a.dest for a in parser._actions if a.dest not in before)


def _flag(dest: str) -> str:
    return '--' + dest.replace('_', '-')


def check_flags_consumed(args: argparse.Namespace, defaults: Dict[str, Any]) -> None:
    """Refuse (``UsageError``) the first option of a method that is set away from its default in ``defaults``
    while no selected method (``args.task``, ``args.mix``) reads it."""
    selected = [s for s in (get_task_spec(args.task), get_mix_spec(args.mix)) if s is not None]
    unused: Dict[str, str] = {}
    consumed = set()
    for s in selected:
        why = s.unused_flags(args)
        unused.update(why)
        consumed |= (set(s.owned) | set(s.reads)) - set(why)
    owners: Dict[str, List[MethodSpec]] = {}
    for s in all_specs():
        for dest in set(s.owned) | set(s.reads):
            owners.setdefault(dest, []).append(s)
    for dest, specs in owners.items():
        if dest in consumed or not hasattr(args, dest) or getattr(args, dest) == defaults.get(dest):
            continue
        flag = _flag(dest)
        if dest in unused:
            raise UsageError(f'{flag} is not read {unused[dest]}; drop {flag}')
        needs = ' or '.join(sorted(s.selector for s in specs))
        raise UsageError(f'{flag} is read only with {needs}; add that or drop {flag}')
