"""``validate --resume RUN/best.safetensors``: the weights a run folder holds, evaluated with the run's settings.

train.py writes plain weights (``best.safetensors``, ``last.safetensors``, ``best-ema.safetensors``,
``checkpoint-<epoch>.safetensors``: the eval model's state dict) beside one training state,
``last-state.safetensors``, which records the settings the weights need (model, classes, preprocessing). Given
one of those weight files, evaluation takes the settings from the run's state and the weights from the file.
"""
import os
from typing import Optional

from timm_mixplug.utils.checkpoint import STATE_SUFFIX, CheckpointError, load_weights

__all__ = ['run_weights_file', 'settings_source', 'load_eval_weights']

_RUN_STATE = 'last' + STATE_SUFFIX


def run_weights_file(path: Optional[str]) -> Optional[str]:
    """``path`` when it is a plain weights file (``.safetensors``, not a training state) lying in a run folder
    that holds a training state (``last-state.safetensors``); else None."""
    if not path or not path.endswith('.safetensors') or path.endswith(STATE_SUFFIX) or not os.path.isfile(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    return path if os.path.isfile(os.path.join(folder, _RUN_STATE)) else None


def settings_source(resume: str) -> str:
    """What ``--resume`` takes the run's settings from: the run folder for a weights file in it, else ``resume``."""
    weights = run_weights_file(resume)
    return os.path.dirname(os.path.abspath(weights)) if weights else resume


def load_eval_weights(task, path: str) -> None:
    """Load the weights file ``path`` strictly into ``task``'s eval model (what train.py saved it from); a
    mismatch raises ``CheckpointError`` naming the file and the first keys that differ."""
    model = task.get_eval_model()
    sd, own = load_weights(path), model.state_dict()
    problems = [f'missing {k}' for k in own if k not in sd] + [f'unexpected {k}' for k in sd if k not in own] + [
        f'{k}: {tuple(sd[k].shape)} in the file, {tuple(v.shape)} in the model' for k, v in own.items()
        if k in sd and sd[k].shape != v.shape]
    if problems:
        raise CheckpointError(f'--resume {path}: these weights do not fit the model of the run beside them '
                              f'({len(problems)} problems, first: {problems[0]})')
    model.load_state_dict(sd, strict=True)
