"""One compare per ``--output``, and never a second train.py in a run folder that one still trains.

* compare holds an exclusive lock on ``OUT/.compare.lock`` (``fcntl.flock``, released by the operating system
  on any exit, ``kill -9`` too) with its pid inside; a second compare on the same ``--output`` stops with one
  line naming the holder. A lock file left by a compare that is gone is taken over, said in one line.
* While a train.py child trains, its pid is in ``OUT/runs/<run>.pid``. A compare killed with ``kill -9``
  leaves its children training; the next compare finds each one (its recorded pid still runs that run, or
  train.py's own lock on the run folder is held) and refuses in one line before it deletes or starts anything.
* Without ``fcntl`` (Windows) there are no locks; the pid records still hold.
"""
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.runs import Run
from timm_mixplug.utils.pid_lock import LockHeld, lock_holder, release_lock, take_lock

__all__ = ['LOCK_FILE', 'TRAIN_LOCK', 'OutputLock', 'process_runs', 'live_children', 'check_no_live_children']

LOCK_FILE = '.compare.lock'
TRAIN_LOCK = '.train.lock'  # train.py's lock on its run folder (timm_mixplug.train.run_folder.LOCK_FILE)


def process_runs(pid: int, markers: Sequence[str] = ()) -> bool:
    """Whether process ``pid`` exists (not a zombie) and, where ``/proc`` shows its command line, has every one
    of ``markers`` among its arguments (a recycled pid of another program does not count)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    try:
        words = Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
    except OSError:
        return True  # no /proc here: the pid alone
    return bool(words[0]) and all(m.encode() in words for m in markers)


def _train_lock_holder(run_dir: Path) -> Optional[str]:
    """The pid written in the run folder's train.py lock while a process holds it, else None."""
    return lock_holder(str(run_dir / TRAIN_LOCK))


def _recorded_pid(run: Run) -> Optional[int]:
    try:
        return int(run.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def live_children(runs: Sequence[Run]) -> List[Tuple[Run, str]]:
    """(run, pid) of each run that a train.py process still trains."""
    busy = []
    for run in runs:
        pid = _recorded_pid(run)
        if pid is not None and process_runs(pid, (str(run.run_dir.parent), run.name)):
            busy.append((run, str(pid)))
            continue
        holder = _train_lock_holder(run.run_dir)
        if holder is not None:
            busy.append((run, holder))
    return busy


def check_no_live_children(runs: Sequence[Run]) -> None:
    """Raises CompareError when a train.py left running (by a compare killed with ``kill -9``) still trains one
    of ``runs``: its folder is neither deleted nor given a second process."""
    busy = live_children(runs)
    if busy:
        (run, pid), more = busy[0], len(busy) - 1
        others = f' (and {more} more run(s): {", ".join(f"{r.name} pid {p}" for r, p in busy[1:])})' if more else ''
        raise CompareError(f'{run.name} is still being trained by train.py pid {pid}{others}, left running by an '
                           f'earlier compare; wait for it to end or stop it (kill {pid}), then run this again')


class OutputLock:
    """The exclusive lock of one compare on its ``--output`` folder (a context manager; creates the folder)."""

    def __init__(self, out: Path):
        self.out, self.path = out, out / LOCK_FILE
        self._file = None

    def __enter__(self) -> 'OutputLock':
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._file, old = take_lock(str(self.path))
        except LockHeld as e:
            raise CompareError(f'--output {self.out} is in use by another compare (pid {e.holder}); wait for it to '
                               f'end, or give this one another --output') from None
        except OSError as e:
            raise CompareError(f'--output {self.out}: cannot write {self.path} ({e.strerror or e}); give a folder '
                               f'compare may write to') from None
        if old and old != str(os.getpid()):
            print(f'compare: taking over {self.path}: the compare that held it (pid {old}) is gone', flush=True)
        return self

    def __exit__(self, *exc) -> None:
        release_lock(self._file)
        self._file = None