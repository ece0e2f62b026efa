"""What a resumed or evaluated run takes from its checkpoint and what from the command line.

Training (``--resume RUN``), as in timm: weights, EMA, optimizer *state* (momentum buffers...), task state,
RNG, epoch and best metric come from the checkpoint; every setting comes from the current command line. The
optimizer's hyper-parameters (lr, weight decay, betas...) are the command line's, and the LR schedule is
rebuilt from it (``--epochs``, ``--lr``, ``--sched``, warm-up...) and stepped to the resumed epoch. A timm
scheduler is a pure function of (settings, step) except ``plateau``, whose history (best metric, bad-epoch
counter, reduced LR) is restored when the checkpoint was trained with ``plateau`` too; LR noise is seeded by
(seed, step), so it needs no state. An unchanged command line therefore resumes bit-exactly, and a changed
one continues exactly as an uninterrupted run with the new settings would.

Evaluation (``validate --resume RUN``, ``run_settings.py``): the run's settings provide the defaults, so the
weights get the model, classes and preprocessing they were trained with; an explicit flag that contradicts what
the weights need (``WEIGHT_SETTINGS``) is an error.
"""
import argparse
import os
from typing import Any, Dict, List, Optional

import yaml

from timm_mixplug.errors import UsageError
from timm_mixplug.utils.checkpoint import StateDictValue

__all__ = ['saved_args', 'changed_settings', 'restore_optimizer', 'restore_plateau', 'data_record', 'check_classes',
           'check_data_config', 'WEIGHT_SETTINGS', 'LOCAL_SETTINGS']

# Settings the weights depend on: ``validate --resume`` refuses an explicit flag that contradicts them (with each
# method's own, ``MethodSpec.weight_settings``).
WEIGHT_SETTINGS = ('model', 'task', 'num_classes', 'in_chans', 'mean', 'std', 'gp', 'model_kwargs')
# Settings of this machine or invocation, never taken from the run for evaluation.
LOCAL_SETTINGS = ('device', 'dist_backend', 'dist_url', 'workers', 'pin_mem', 'output', 'experiment',
          'overwrite_experiment', 'amp', 'amp_dtype')


# What a state records about its data (``data_record``); compared on resume and validate.
_DATA_KEYS = ('input_size', 'mean', 'std', 'interpolation', 'crop_pct', 'crop_mode')


def data_record(info, data_config: Dict[str, Any], zero_mean_input: bool) -> Dict[str, Any]:
    """What the weights need of their data, kept in every training state: the class names in label order (None
    when the dataset does not name its classes), the class count, the timm data config and BC+'s zero-mean
    input."""
    rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_config.items() if k in _DATA_KEYS}
    rec.update(classes=info.class_names, num_classes=info.num_classes, zero_mean_input=bool(zero_mean_input))
    return rec


def check_classes(trained: Optional[Dict[str, Any]], names: Optional[List[str]], what: str) -> None:
    """Refuse data whose class names (in label order) differ from those the weights were trained on: a renamed
    or reordered class folder permutes every label silently."""
    want = (trained or {}).get('classes')
    if not want or names is None or names == want:
        return
    if len(names) != len(want):
        raise UsageError(f'{what} has {len(names)} classes, the weights were trained on {len(want)} '
                         f'({", ".join(want[:5])}{" ..." if len(want) > 5 else ""}): use the same data')
    i = next(i for i, (a, b) in enumerate(zip(want, names)) if a != b)
    raise UsageError(f'{what} names label {i} {names[i]!r}, the weights were trained with {want[i]!r} there '
                     f'(classes are matched by name, in label order): use the data the run was trained on, '
                     f'with the same class names')


def check_data_config(trained: Optional[Dict[str, Any]], data_config: Dict[str, Any], zero_mean_input: bool,
                      state_path: str) -> Optional[str]:
    """Compare the data config of this run with the one the state was trained with: a different zero-mean input
    is refused (the weights never saw such images); a different input size, mean/std or crop is what the user
    asked for explicitly (the state's settings are the defaults), so it is said in one returned line."""
    if not trained:
        return None
    if 'zero_mean_input' in trained and bool(trained['zero_mean_input']) != bool(zero_mean_input):
        raise UsageError(f'the weights in {state_path} were trained '
                         f'{"with" if trained["zero_mean_input"] else "without"} zero-mean input (--mix bcplus); '
                         f'use the --mix they were trained with')
    diff = []
    for k in _DATA_KEYS:
        if k in trained:
            now = data_config.get(k)
            now = list(now) if isinstance(now, tuple) else now
            if now != trained[k]:
                diff.append(f'{k} {trained[k]} -> {now}')
    if diff:
        return f'Data config differs from the one {state_path} was trained with: {", ".join(diff)}'
    return None


def saved_args(state_path: str, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The settings that produced the state: kept in the state itself (since the states record them), else
    ``args.yaml`` next to the state file, else the few older states kept in their metadata."""
    if meta and isinstance(meta.get('args'), dict):
        return dict(meta['args'])
    path = os.path.join(os.path.dirname(os.path.abspath(state_path)), 'args.yaml')
    if os.path.isfile(path):
        try:
            with open(path) as f:
                cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            where = getattr(e, 'problem_mark', None)
            raise UsageError(f'{path} is not valid YAML ({getattr(e, "problem", None) or "parse error"}'
                             f'{f" at line {where.line + 1}" if where else ""}): restore it, or delete it to '
                             f'use the settings kept in the state') from None
        if isinstance(cfg, dict):
            return cfg
    keys = ('model', 'task', 'mix', 'num_classes', 'sched', 'lr', 'epochs')
    return {k: meta[k] for k in keys if meta and k in meta}


def changed_settings(args: argparse.Namespace, saved: Dict[str, Any]) -> List[str]:
    """``name old -> new`` for every saved training setting the current command line changes."""
    out = []
    for k, old in saved.items():
        if k in ('output', 'experiment') or not hasattr(args, k):  # where the run lives, not how it trains
            continue
        new = getattr(args, k)
        new = list(new) if isinstance(new, tuple) else new
        if new != old:
            out.append(f'{k} {old!r} -> {new!r}')
    return out


def restore_optimizer(optimizer, state: Dict[str, Any]) -> List[float]:
    """Load the optimizer state (buffers, step counts) but keep the command line's hyper-parameters in the
    param groups; returns the checkpoint's per-group LRs (the plateau scheduler's history)."""
    fresh = [{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    saved_lrs = [g['lr'] for g in optimizer.param_groups]
    for group, hp in zip(optimizer.param_groups, fresh):
        params = group['params']
        group.clear()
        group.update(hp, params=params)
    return saved_lrs


def restore_plateau(lr_scheduler, optimizer, saved_sched: Optional[Dict[str, Any]], saved_lrs: List[float],
                    lr_ratio: float) -> bool:
    """Restore a ``plateau`` scheduler's history (ReduceLROnPlateau counters, the reduced and pre-noise LRs,
    scaled by new / old ``--lr``); True if restored."""
    inner = (saved_sched or {}).get('lr_scheduler')
    if not isinstance(inner, StateDictValue) or not hasattr(lr_scheduler, 'lr_scheduler'):
        return False
    lr_scheduler.lr_scheduler.load_state_dict(inner.value)
    restore = saved_sched.get('restore_lr')
    lr_scheduler.restore_lr = [v * lr_ratio for v in restore] if restore else None
    for group, lr in zip(optimizer.param_groups, saved_lrs):
        group['lr'] = lr * lr_ratio
    return True
