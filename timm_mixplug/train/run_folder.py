"""Run-folder rules and the ways a run stops early (Ctrl-C, a non-finite loss).

* A new run gets ``<--output>/<--experiment>`` (default name: date-time, model, image size). An existing
  folder that holds a run (checkpoints or a summary) is refused, unless ``--overwrite-experiment`` asks for
  it (the run's files are then deleted first); ``--resume RUN`` continues in RUN. timm's ``train.py``
  reuses the folder silently (``get_outdir(..., inc=False)``), and with ``inc=True`` adds a -1, -2 suffix:
  we refuse instead, so neither overwritten results nor a surprise folder name can happen.
* One process at a time: a training run holds an exclusive lock on ``<run>/.train.lock`` (``fcntl.flock``,
  released by the operating system on any exit, also ``kill -9``); a second ``train.py`` in the same folder,
  a new run or a ``--resume`` of it, stops with one line naming the folder and the holder's pid.
* Temporary files a killed checkpoint write left behind are removed when a run starts in the folder (after
  the lock is taken, so never another process's); temporary names are unique per write.
* Ctrl-C ends with one line giving the last state and the exact command that resumes it (exit 130); SIGTERM
  (what torchrun and job schedulers send) the same, exit 143.
* A NaN / inf loss stops the run with one line naming epoch and step; the last good state stays.
"""
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from timm_mixplug.utils.checkpoint_history import RECOVERY_FILE, history_files
from timm_mixplug.utils.pid_lock import LockHeld, take_lock
from timm_mixplug.errors import UsageError

__all__ = ['RUN_FILES', 'LOCK_FILE', 'RunProgress', 'NonFiniteLoss', 'Terminated', 'lock_run_folder',
           'prepare_run_folder', 'interrupted_message', 'resume_command', 'without_flag']

LOCK_FILE = '.train.lock'

# What a run writes into its folder (``--overwrite-experiment`` deletes these, the ``--checkpoint-hist``
# files ``checkpoint-<epoch>.safetensors``, the ``--save-images`` files ``train-batch-<epoch>.png`` and nothing
# else).
RUN_FILES = ('args.yaml', 'summary.csv', 'summary.png', 'train.log', 'last.safetensors', 'best.safetensors',
             'last-ema.safetensors', 'best-ema.safetensors', 'last-state.safetensors', RECOVERY_FILE)
_RESULTS = tuple(f for f in RUN_FILES if f not in ('args.yaml', 'train.log'))


@dataclass
class RunProgress:
    """Where a run writes (rank 0, once its folder exists) and how far it got: what the exit lines report."""
    path: Optional[str] = None
    epochs_done: int = 0
    world_size: int = 1
    lock: Any = None  # the held lock file (kept open for the run's lifetime)
    args_yaml_pending: Optional[str] = None  # a continued run rewrites args.yaml with its first state


class NonFiniteLoss(Exception):
    """The training loss became NaN or inf (train.py: one line, exit code 1, last good state kept)."""

    def __init__(self, epoch: int, step: Optional[int]):
        where = f'step {step}' if step is not None else 'a step of another process'
        super().__init__(f'the training loss became NaN or inf at epoch {epoch}, {where}; stopped without saving '
                         f'this epoch (lower --lr, add --clip-grad, or check the data)')
        self.epoch, self.step = epoch, step


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (train.py exits 143 with the resume line)."""


def lock_run_folder(folder: str):
    """Take the run folder's exclusive lock for this process (kept until it exits); raises UsageError naming
    the holder when another process has it. Returns the open lock file (keep a reference; None without flock)."""
    try:
        return take_lock(os.path.join(folder, LOCK_FILE))[0]
    except LockHeld as e:
        raise UsageError(f'{folder} is in use by another train.py (pid {e.holder}); wait for it to end, or give this '
                         f'run another --experiment / --output') from None


def existing_run(folder: str) -> List[str]:
    """The run results (checkpoints, summary) in ``folder``."""
    return [f for f in _RESULTS if os.path.isfile(os.path.join(folder, f))]


def prepare_run_folder(folder: str, args, resuming: bool, clear: bool = True) -> None:
    """Check (and with ``--overwrite-experiment`` and ``clear``, empty) the folder of a new run; raises
    UsageError."""
    if resuming or not os.path.isdir(folder):
        return
    found = existing_run(folder)
    if found and not args.overwrite_experiment:
        raise UsageError(f'--experiment {args.experiment}: {folder} already holds a run ({", ".join(found[:3])}); '
                         f'continue it with --resume {folder}, choose another --experiment, or add '
                         f'--overwrite-experiment to replace it')
    if args.overwrite_experiment and clear:
        for f in RUN_FILES:
            if os.path.isfile(os.path.join(folder, f)):
                os.remove(os.path.join(folder, f))
        for path in history_files(folder):  # an old run's kept epochs would count in the new run's history
            os.remove(path)
        for name in os.listdir(folder):  # --save-images pictures
            if re.fullmatch(r'train-batch-\d+\.png', name):
                os.remove(os.path.join(folder, name))


_DROP_WITH_VALUE = ('--resume', '--experiment', '--output', '--start-epoch')
_DROP = ('--overwrite-experiment',)


def resume_command(argv: Sequence[str], run_dir: str, world_size: int = 1) -> str:
    """The command line that resumes ``run_dir``: ``argv`` without the run-folder flags, plus --resume."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split('=', 1)[0]
        if name in _DROP_WITH_VALUE:
            skip = '=' not in a
            continue
        if name in _DROP:
            continue
        out.append(a)
    launcher = (f'torchrun --nproc_per_node={world_size} train.py' if world_size > 1 else 'python train.py')
    return f'{launcher} {shlex.join(out + ["--resume", run_dir])}'


def interrupted_message(progress: RunProgress, argv: Optional[Sequence[str]], how: str = 'interrupted') -> str:
    """The one line printed on Ctrl-C (``how``: 'terminated (SIGTERM)' for SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run_dir = progress.path
    if not run_dir:
        return f'train.py: {how} before the run folder was created; nothing was written'
    state = os.path.join(run_dir, 'last-state.safetensors')
    if not os.path.isfile(state):
        return (f'train.py: {how} before the first epoch ended; {run_dir} holds no state; run the same '
                f'command again to start over')
    n = progress.epochs_done
    return (f'train.py: {how}; the last state is {state} ({n} epoch{"" if n == 1 else "s"} done); '
            f'resume with: {resume_command(argv, run_dir, progress.world_size)}')


def without_flag(argv: Sequence[str], flag: str) -> List[str]:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + '='):
            out.append(a)
    return out