"""timm's checkpoint bookkeeping for train.py: ``--checkpoint-hist N`` keeps the weights of the N best
validated epochs (``checkpoint-<epoch>.safetensors``, as timm's ``CheckpointSaver`` keeps
``checkpoint-<epoch>.pth.tar``), and ``--recovery-interval N`` writes a recovery state every N optimizer
updates (``recovery-state.safetensors``; resuming from it continues with the next epoch, as timm does).
"""
import glob
import os
import re
from typing import Callable, List, Optional, Tuple

from safetensors import safe_open

from timm_mixplug.utils.checkpoint import save_train_state, save_weights

__all__ = ['CheckpointHistory', 'RecoveryWriter', 'RECOVERY_FILE', 'history_files']

RECOVERY_FILE = 'recovery-state.safetensors'
_PATTERN = re.compile(r'checkpoint-(\d+)\.safetensors$')


def history_files(output_dir: str) -> List[str]:
    """The ``checkpoint-<epoch>.safetensors`` files of ``--checkpoint-hist`` in ``output_dir``."""
    return [p for p in glob.glob(os.path.join(output_dir, 'checkpoint-*.safetensors')) if _PATTERN.search(p)]


def _read_metric(path: str) -> Optional[float]:
    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            return float((f.metadata() or {}).get('metric'))
    except Exception:  # unreadable or without a metric: not part of the history
        return None


class CheckpointHistory:
    """The N best epochs' weights in ``output_dir``; files already there (a resumed run) are counted in."""

    def __init__(self, output_dir: str, max_history: int, decreasing: bool = False):
        self.output_dir = output_dir
        self.max_history = max_history
        self.decreasing = decreasing
        self.files: List[Tuple[str, float]] = []
        for path in history_files(output_dir):
            metric = _read_metric(path)
            if metric is not None:
                self.files.append((path, metric))
        self._sort()

    def _sort(self) -> None:  # best first
        self.files.sort(key=lambda x: x[1], reverse=not self.decreasing)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.decreasing else a > b

    def save(self, metric: Optional[float], state_fn: Callable[[], dict], *, epoch: int, **meta) -> Optional[str]:
        """Write ``checkpoint-<epoch>.safetensors`` if ``metric`` is among the N best; drop the ones pushed out.
        Returns the written path or None."""
        if self.max_history <= 0 or metric is None:
            return None
        path = os.path.join(self.output_dir, f'checkpoint-{epoch}.safetensors')
        self.files = [f for f in self.files if f[0] != path]  # a re-run epoch replaces its file
        if len(self.files) >= self.max_history and not self._better(metric, self.files[-1][1]):
            return None
        save_weights(path, state_fn(), epoch=epoch, metric=metric, **meta)
        self.files.append((path, float(metric)))
        self._sort()
        for old, _ in self.files[self.max_history:]:
            if os.path.exists(old):
                os.remove(old)
        self.files = self.files[:self.max_history]
        return path


class RecoveryWriter:
    """Every ``interval`` optimizer updates, ``state_fn(epoch + 1, num_updates)`` -> (sections, meta) is written
    to ``recovery-state.safetensors`` (atomically, replacing the previous one); ``clear()`` removes it once
    the epoch's own state is written."""

    def __init__(self, output_dir: Optional[str], interval: int, state_fn: Callable[[int, int], tuple]):
        self.path = os.path.join(output_dir, RECOVERY_FILE) if output_dir else None
        self.interval = interval
        self.state_fn = state_fn

    def __call__(self, epoch: int, num_updates: int, batch_idx: int) -> None:
        if self.path is None or self.interval <= 0 or num_updates % self.interval:
            return
        sections, meta = self.state_fn(epoch + 1, num_updates)
        meta = dict(meta, recovery_epoch=epoch, recovery_batch=batch_idx)
        save_train_state(self.path, sections, meta)

    def clear(self) -> None:
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
