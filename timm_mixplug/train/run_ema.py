"""A run that keeps an EMA of its weights keeps it when continued in its own folder.

Its folder holds ``last-ema.safetensors`` / ``best-ema.safetensors`` beside ``last.safetensors``. Continued
without ``--model-ema`` (timm's default is off), the run would update the plain weights and leave the EMA files
of the earlier epochs beside them, describing another run. ``--model-ema`` is a default the user did not set
there, so it is adjusted to the run's: the EMA goes on with the run's EMA settings (those the user gives win),
and the run says so in one line. A run continued into a new folder (``--experiment``) follows the command line,
as timm's resume does: its folder has no stale files.
"""
import argparse
from typing import Any, Dict, Optional, Tuple

from timm_mixplug.train.resume import saved_args

__all__ = ['keep_run_ema']

_EMA_SETTINGS = ('model_ema_decay', 'model_ema_warmup', 'model_ema_force_cpu')


def keep_run_ema(args: argparse.Namespace, opened: Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]) -> None:
    """``opened``: the resumed state (path, sections, meta) or None. Turns ``args.model_ema`` on, with the run's
    EMA settings where the user gave none (``args.given``), when the state holds an EMA, the run continues in its
    own folder and the user did not ask for ``--model-ema``; the note goes to ``args.process_notes``."""
    if opened is None or args.model_ema or args.experiment:
        return
    state_path, sections, meta = opened
    if sections.get('ema') is None or meta.get('_format') == 'timm':
        return
    saved, given = saved_args(state_path, meta), getattr(args, 'given', None) or ()
    args.model_ema = True
    for k in _EMA_SETTINGS:
        if k in saved and k not in given:
            setattr(args, k, saved[k])
    args.process_notes = list(getattr(args, 'process_notes', None) or []) + [
        f'{state_path} holds an EMA of the weights: --model-ema stays on as in the run (decay '
        f'{args.model_ema_decay}), so its -ema files keep up with its weights; to continue without the EMA, resume '
        f'into a new folder with --experiment NAME']
