"""timm's own training checkpoints (``.pth.tar`` written by ``timm.utils.CheckpointSaver``) for ``--resume``,
``--initial-checkpoint`` and ``validate``.

They pickle train.py's ``args``, so they load with ``torch.load(weights_only=True)`` and ``argparse.Namespace``
as the only added global (as timm's own loader does), which refuses every other pickled object unexecuted.
"""
import argparse
import os
import re
from typing import Any, Dict, Tuple

import torch

from timm_mixplug.utils.checkpoint import (
    STATE_SUFFIX, CheckpointError, NotATrainStateError, load_train_meta, load_train_state, load_weights,
    state_dict_from_checkpoint, tensor_dict)

__all__ = ['torch_load_safe', 'is_timm_checkpoint', 'load_timm_train_state', 'load_resume_state',
           'load_resume_meta', 'load_any_weights', 'resolve_resume_path']


def torch_load_safe(path: str) -> Any:
    """``torch.load(weights_only=True)`` with only ``argparse.Namespace`` (the ``args`` entry of timm's
    checkpoints) added to torch's allowlist, as timm's own loader does; anything else that a pickle would
    construct or call is refused (CheckpointError) before it runs."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if 'weights_only' in str(e) or 'Unsupported global' in str(e):
            found = re.findall(r'(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)', str(e))
            msg = (f'it needs the non-allowlisted pickle global {found[0]}' if found else
                   'it needs non-allowlisted pickle globals') + ', refused without running it'
        raise CheckpointError(f'cannot load {path} with torch.load(weights_only=True): {msg}') from None


def is_timm_checkpoint(path: str) -> bool:
    """A file that is not safetensors: a torch/timm checkpoint (``.pth.tar``, ``.pth``, ``.pt``, ``.bin``)."""
    return os.path.isfile(path) and not path.endswith('.safetensors')


def load_timm_train_state(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(sections, meta) as ``load_train_state`` returns them, from a timm training checkpoint:
    ``state_dict`` (or ``model``) -> model, ``state_dict_ema`` -> ema (``module.`` keys), ``optimizer``,
    ``amp_scaler`` -> scaler; meta: the epoch to start at (saved epoch + 1 for version >= 2 files, as timm's
    ``resume_checkpoint``), model and classes from the saved ``args``, the best metric from the saver's history.
    No scheduler or RNG state: the schedule is stepped to the start epoch, as timm's train.py does."""
    ckpt = torch_load_safe(path)
    if not isinstance(ckpt, dict) or not any(k in ckpt for k in ('state_dict', 'model')):
        sections: Dict[str, Any] = {'model': tensor_dict(ckpt, path)}  # bare state dict: weights only
        return sections, {'epoch': 0, '_format': 'timm', '_weights_only': True}
    key = 'state_dict' if 'state_dict' in ckpt else 'model'
    sections = {'model': tensor_dict(ckpt[key], path)}
    if ckpt.get('state_dict_ema') is not None:  # keyed as the tasks' ModelEmaV3 wrapper, as our state is
        sections['ema'] = {'module.' + k: v for k, v in tensor_dict(ckpt['state_dict_ema'], path).items()}
    for src, dst in (('optimizer', 'optimizer'), ('amp_scaler', 'scaler')):
        if ckpt.get(src) is not None:
            sections[dst] = ckpt[src]
    meta: Dict[str, Any] = {'_format': 'timm'}
    if 'epoch' in ckpt:
        meta['epoch'] = int(ckpt['epoch']) + (1 if int(ckpt.get('version', 1)) > 1 else 0)
    else:
        meta['epoch'] = 0
    args = ckpt.get('args')  # the argparse.Namespace of the timm train.py run
    model = getattr(args, 'model', None)  # not 'arch': without args timm stores the class name there
    if isinstance(model, str):
        meta['model'] = model
    if isinstance(getattr(args, 'num_classes', None), int):
        meta['num_classes'] = args.num_classes
    saver = ckpt.get('saver') if isinstance(ckpt.get('saver'), dict) else {}
    best = [(saver['best_metric'], saver.get('best_epoch'))] if saver.get('best_metric') is not None else []
    if isinstance(ckpt.get('metric'), (int, float)) and 'epoch' in ckpt:  # the saved epoch's own metric
        best.append((ckpt['metric'], int(ckpt['epoch'])))
    if best:
        lower = 'loss' in str(getattr(args, 'eval_metric', 'top1'))
        meta['best_metric'], meta['best_epoch'] = (min if lower else max)(best, key=lambda mb: mb[0])
    return sections, meta


def load_resume_state(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(sections, meta) of a training-state file: ours (``save_train_state``) or timm's ``.pth.tar``."""
    try:
        return (load_timm_train_state if is_timm_checkpoint(path) else load_train_state)(path)
    except NotATrainStateError:
        raise CheckpointError(_NOT_A_STATE.format(path=path)) from None


def load_resume_meta(path: str) -> Dict[str, Any]:
    """The meta of ``load_resume_state`` alone: from the header of ours, from the whole of timm's pickle."""
    try:
        return load_timm_train_state(path)[1] if is_timm_checkpoint(path) else load_train_meta(path)
    except NotATrainStateError:
        raise CheckpointError(_NOT_A_STATE.format(path=path)) from None


_NOT_A_STATE = '{path} is not a timm_mixplug training state (model weights only? use --initial-checkpoint for those)'


def load_any_weights(path: str) -> Dict[str, torch.Tensor]:
    """``--initial-checkpoint``: weights of ours (``load_weights``) or of a timm train.py checkpoint."""
    if is_timm_checkpoint(path):
        return state_dict_from_checkpoint(torch_load_safe(path), path)
    return load_weights(path)


def resolve_resume_path(path: str) -> str:
    """A run folder (ours, or timm's with ``last.pth.tar``), ``last.safetensors``, ``last-state.safetensors``
    or a timm checkpoint file -> the training-state file."""
    if os.path.isdir(path):
        cand = os.path.join(path, 'last' + STATE_SUFFIX)
        if not os.path.isfile(cand) and os.path.isfile(os.path.join(path, 'last.pth.tar')):
            cand = os.path.join(path, 'last.pth.tar')
    elif path.endswith(STATE_SUFFIX):
        cand = path
    elif path.endswith('.safetensors'):
        cand = path[:-len('.safetensors')] + STATE_SUFFIX
    else:
        cand = path
    run = os.path.join(os.path.dirname(path) or '.', 'last' + STATE_SUFFIX)
    if not os.path.isfile(cand) and path.endswith('.safetensors') and os.path.isfile(path) and os.path.isfile(run):
        folder = os.path.dirname(path) or '.'
        raise CheckpointError(f'--resume {path}: a file of weights only (the run\'s training state is {run}); '
                              f'continue the run with --resume {folder}, start from these weights with '
                              f'--initial-checkpoint {path}, or evaluate them with validate --resume {path}')
    if not os.path.isfile(cand):
        raise CheckpointError(f'--resume {path}: no training state to resume (expected {cand})')
    return cand
