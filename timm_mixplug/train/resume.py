"""What a resumed or evaluated run takes from its checkpoint and what from the command line.

Training (``--resume RUN``), as in timm: weights, EMA, optimizer *state* (momentum buffers...), task state,
RNG, epoch and best metric come from the checkpoint; every setting comes from the current command line. The
optimizer's hyper-parameters (lr, weight decay, betas...) are the command line's, and the LR schedule is
rebuilt from it (``--epochs``, ``--lr``, ``--sched``, warm-up...) and stepped to the resumed epoch. A timm
scheduler is a pure function of (settings, step) except ``plateau``, whose history (best metric, bad-epoch
counter, reduced LR) is restored when the checkpoint was trained with ``plateau`` too; LR noise is seeded by
(seed, step), so it needs no state. An unchanged command line therefore resumes bit-exactly, and a changed
one continues exactly as an uninterrupted run with the new settings would.

Evaluation (``validate --resume RUN``): the run's ``args.yaml`` (next to the state) provides the defaults,
so the weights get the model, classes and preprocessing they were trained with; an explicit flag that
contradicts what the weights need is an error.
"""
import argparse
import os
from typing import Any, Dict, List, Optional

import yaml

from timm_mixplug.data.mixing import get_mixer_spec
from timm_mixplug.errors import UsageError

__all__ = ['saved_args', 'changed_settings', 'restore_optimizer', 'restore_plateau', 'apply_run_settings',
           'data_record', 'check_classes', 'check_data_config', 'WEIGHT_SETTINGS']

# Settings the weights depend on: ``validate --resume`` refuses an explicit flag that contradicts them.
WEIGHT_SETTINGS = ('model', 'task', 'num_classes', 'in_chans', 'mean', 'std', 'gp', 'model_kwargs', 'dml_peers',
                   'aux_tasks', 'aux_random_classes', 'aux_seg_grid', 'glmc_proj_dim', 'glmc_clr')
# Settings of this machine or invocation, never taken from the run for evaluation.
_LOCAL = ('device', 'dist_backend', 'dist_url', 'workers', 'pin_mem', 'output', 'experiment',
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
    from timm_mixplug.utils.checkpoint import StateDictValue
    inner = (saved_sched or {}).get('lr_scheduler')
    if not isinstance(inner, StateDictValue) or not hasattr(lr_scheduler, 'lr_scheduler'):
        return False
    lr_scheduler.lr_scheduler.load_state_dict(inner.value)
    restore = saved_sched.get('restore_lr')
    lr_scheduler.restore_lr = [v * lr_ratio for v in restore] if restore else None
    for group, lr in zip(optimizer.param_groups, saved_lrs):
        group['lr'] = lr * lr_ratio
    return True


def apply_run_settings(argv, args: argparse.Namespace):
    """For ``validate --resume RUN``: parse ``argv`` again with the run's settings as defaults (a ``-c`` config
    and the command line still win) and refuse values that contradict what the weights need."""
    from timm_mixplug.train.timm_checkpoint import load_resume_meta
    from timm_mixplug.utils.checkpoint import resolve_resume_path
    from timm_mixplug.train.config import create_parser
    from timm_mixplug.train.config import _coerce, parse_args
    state_path = resolve_resume_path(args.resume)
    meta = load_resume_meta(state_path)
    run = saved_args(state_path, meta)
    parser = create_parser()
    actions = {a.dest: a for a in parser._actions}
    defaults = {k: _coerce(actions[k], k, v, state_path) for k, v in run.items()
                if k in actions and k not in _LOCAL and actions[k].help is not argparse.SUPPRESS}
    parser.set_defaults(**defaults)
    new = parse_args(argv, parser=parser)
    for k in WEIGHT_SETTINGS + ('mix',):
        if k not in run or not hasattr(new, k):
            continue
        mine, theirs = getattr(new, k), run[k]
        mine = list(mine) if isinstance(mine, tuple) else mine
        if k == 'mix':  # only BC+'s zero-mean input changes what the weights see
            mine, theirs = (mix != 'none' and get_mixer_spec(mix).zero_mean_input for mix in (mine, theirs))
            if mine != theirs:
                raise UsageError(f'--mix {new.mix}: the weights in {state_path} were trained with --mix {run["mix"]}'
                                 f', which {"" if theirs else "does not "}zero-means the input; drop --mix')
        elif mine != theirs:
            raise UsageError(f'--{k.replace("_", "-")} {mine}: the weights in {state_path} were trained with '
                             f'{theirs}; drop the flag')
    return new
