"""Exclusive lock files that hold their owner's pid: ``fcntl.flock``, released by the operating system on any exit of
the owner (``kill -9`` too). Without ``fcntl`` (Windows) there is no lock: every call succeeds and holds nothing."""
import os
from typing import IO, Optional, Tuple

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

__all__ = ['LockHeld', 'take_lock', 'release_lock', 'lock_holder']


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is the pid written in the file ('?' if none)."""

    def __init__(self, path: str, holder: str):
        super().__init__(f'{path} is held by pid {holder}')
        self.path, self.holder = path, holder


def take_lock(path: str) -> Tuple[Optional[IO], str]:
    """Take the lock of ``path`` (created if missing) for this process and write its pid there. Returns (the open
    file, to keep for as long as the lock is held; the pid the file named before, '' if none). Raises
    ``LockHeld`` when another process holds it, ``OSError`` when the file cannot be written."""
    if fcntl is None:
        return None, ''
    f = open(path, 'a+')
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or '?'
        f.close()
        raise LockHeld(path, holder) from None
    f.seek(0)
    before = f.read().strip()
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f, before


def release_lock(f: Optional[IO]) -> None:
    """Empty and release a lock taken with ``take_lock``."""
    if f is None:
        return
    f.seek(0)
    f.truncate()
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()


def lock_holder(path: str) -> Optional[str]:
    """The pid written in ``path`` while another process holds its lock, else None (also without the file)."""
    if fcntl is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return f.read().strip() or '?'
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None
