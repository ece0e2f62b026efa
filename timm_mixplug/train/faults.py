"""Faults while a run writes its folder, each reported in one line (exit 1) with what is left to resume.

* A full disk, a quota, a file-size limit (``ulimit -f``: EFBIG, also from safetensors' writer), a folder that
  became read-only or unwritable: every file is written to a temporary file and moved into place, so the
  previous files stay complete; the line names the file and the state to resume.
* The run folder deleted (or moved) under a running job: the line says so; nothing more can be written there.
"""
import errno
import os
from typing import Optional

__all__ = ['WRITE_ERRNOS', 'write_fault_message']

WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def write_fault_message(e: OSError, run_dir: Optional[str]) -> Optional[str]:
    """The one line for an ``OSError`` raised while a run writes ``run_dir``, or None where it is no such fault
    (then it is a bug to show in full)."""
    if run_dir and not os.path.isdir(run_dir):
        return (f'the run folder {run_dir} was deleted or moved while the run was writing to it ({e.strerror or e}); '
                f'the run stopped: start it again, or --resume the folder where it was moved')
    if e.errno not in WRITE_ERRNOS:
        return None
    state = os.path.join(run_dir or '', 'last-state.safetensors')
    kept = (f'; the last complete state is {state}, resume with --resume {run_dir}'
            if run_dir and os.path.isfile(state) else '')
    return f'{e.filename or "file access"}: {e.strerror or e}{kept}'
