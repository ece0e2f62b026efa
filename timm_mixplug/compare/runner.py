"""Training the runs: one ``python -m timm_mixplug`` child process per run, ``--jobs`` at a time, each with its
share of the CPU threads and, with ``--devices``, one CUDA device; then the run's result file.

A run folder without a saved state (stopped before its first epoch ended) is started again, one with an
unfinished state is resumed (``--resume``), a finished one only gets its result file rebuilt. Ctrl-C (which the
children get from the terminal too) starts nothing more and waits for the running children to save their
state; SIGTERM (which only compare gets) is passed on to every running child, then waited for the same way.
"""
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.runs import Run, fingerprint, metric_fields, read_summary, state_progress, write_json

__all__ = ['Terminated', 'DevicePool', 'child_device', 'Runner', 'run_all']


class Terminated(KeyboardInterrupt):
    """SIGTERM to compare: its running children get SIGTERM too, compare exits 143."""


def child_device(index: int, visible: Optional[str]) -> str:
    """CUDA_VISIBLE_DEVICES for a run given device ``index`` as this process numbers it: through this
    process's own CUDA_VISIBLE_DEVICES (``visible``) when that is set."""
    if visible is None or not visible.strip():
        return str(index)
    return [v.strip() for v in visible.split(',')][index]


class DevicePool:
    """``jobs`` slots over the devices, in turn (0, 1, ..., 0, 1, ...): a run holds one while it trains, so
    the runs at once spread evenly over the devices."""

    def __init__(self, devices: Sequence[int], jobs: int):
        self._free: queue.Queue = queue.Queue()
        for i in range(jobs):
            self._free.put(devices[i % len(devices)])

    @contextmanager
    def lease(self):
        d = self._free.get()
        try:
            yield d
        finally:
            self._free.put(d)


def _wait(proc: subprocess.Popen) -> Tuple[int, Optional[float]]:
    """(exit code, CPU seconds of the child) without psutil: ``os.wait4`` where there is one."""
    if not hasattr(os, 'wait4'):
        return proc.wait(), None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


class Runner:
    """Trains the runs that have no result, ``jobs`` at a time, and writes their result files."""

    def __init__(self, metric: str, threads: int, total: int, devices: Optional[DevicePool] = None):
        self.metric, self.threads, self.total, self.devices = metric, threads, total, devices
        self.failed: List[dict] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._started = 0
        self._procs: Dict[str, subprocess.Popen] = {}
        self.terminated = False  # SIGTERM was passed on to the children

    def _say(self, text: str) -> None:
        with self._lock:
            print(f'compare: {text}', flush=True)

    def _fail(self, run: Run, why: str, cmd: List[str]) -> None:
        with self._lock:
            self.failed.append(dict(run=run.name, why=why, log=str(run.log), command=shlex.join(cmd)))
        self._say(f'{run.name} FAILED ({why}); log {run.log}; command: {shlex.join(cmd)}')

    def terminate(self) -> int:
        """Start nothing more and pass SIGTERM on to every running child; returns how many were running."""
        with self._lock:
            self.stop.set()
            self.terminated = True
            for proc in self._procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            return len(self._procs)

    def _spawn(self, run: Run, cmd: List[str], env: Dict[str, str], log) -> Optional[subprocess.Popen]:
        """The child process, its pid recorded in ``run.pid_file``; None once stopping."""
        with self._lock:
            if self.stop.is_set():
                return None
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._procs[run.name] = proc
        run.pid_file.write_text(str(proc.pid))
        return proc

    def _execute(self, run: Run, cmd: List[str], resumed_from: Optional[int]):
        """Run the child; (exit code or None when stopped before it started, wall seconds, CPU seconds)."""
        with self._lock:
            self._started += 1
            k = self._started
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        run.log.parent.mkdir(parents=True, exist_ok=True)
        with (self.devices.lease() if self.devices else nullcontext()) as device:
            where = ''
            if device is not None:
                env['CUDA_VISIBLE_DEVICES'] = child_device(device, os.environ.get('CUDA_VISIBLE_DEVICES'))
                where = f' on CUDA device {device}'
            self._say(f'[{k}/{self.total}] {run.name}: ' + ('training' if resumed_from is None else
                                                            f'resuming after epoch {resumed_from}') + where)
            t0 = time.perf_counter()
            with open(run.log, 'w' if resumed_from is None else 'a') as log:
                proc = self._spawn(run, cmd, env, log)
                if proc is None:
                    return None, None, None
                try:
                    rc, cpu = _wait(proc)
                finally:
                    with self._lock:
                        self._procs.pop(run.name, None)
                    run.pid_file.unlink(missing_ok=True)
            return rc, time.perf_counter() - t0, cpu

    def _train(self, run: Run):
        """Train (or resume) ``run`` unless its folder holds a finished run: (command, wall, CPU, resumed-from
        epoch), or None when it failed or compare is stopping."""
        progress = state_progress(run.run_dir)
        if run.run_dir.exists() and progress is None:  # stopped before its first epoch ended
            shutil.rmtree(run.run_dir)
        cmd = run.command()
        if progress is not None and progress[0] >= progress[1]:
            return cmd, None, None, None
        resumed_from = None if progress is None else progress[0]
        if resumed_from is not None:
            cmd += ['--resume', str(run.run_dir)]
        rc, wall, cpu = self._execute(run, cmd, resumed_from)
        if rc in (130, -signal.SIGINT):  # Ctrl-C: the run saved its state; start nothing more
            self.stop.set()
        if rc != 0:
            if rc is not None and not self.stop.is_set():
                self._fail(run, f'exit code {rc}', cmd)
            return None
        progress = state_progress(run.run_dir)
        if progress is None or progress[0] < progress[1]:
            done = 'no state' if progress is None else f'{progress[0]} of {progress[1]} epochs'
            self._fail(run, f'stopped unfinished: {done}', cmd)
            return None
        return cmd, wall, cpu, resumed_from

    def _record(self, run: Run, cmd: List[str], wall, cpu, resumed_from) -> None:
        rows = read_summary(run.run_dir / 'summary.csv')
        fields = metric_fields(rows, self.metric) if rows else None
        if fields is None or fields['final'] is None:
            have = ', '.join(rows[-1]) if rows else 'no rows'
            self._fail(run, f'summary.csv has no {self.metric} in its last row ({have})', cmd)
            return
        write_json(run.result, dict(method=run.method, seed=run.seed, args=run.args, fingerprint=fingerprint(run.args),
                                    command=cmd, **fields, wall_s=wall, cpu_s=cpu, resumed_from_epoch=resumed_from))
        times = ('result rebuilt from its finished run folder' if wall is None
                 else f'wall {wall:.0f} s' + (f', CPU {cpu:.0f} s' if cpu is not None else ''))
        self._say(f'{run.name}: {self.metric} {fields["final"]:.2f} ({times})')

    def __call__(self, run: Run) -> None:
        if self.stop.is_set():
            return
        try:
            done = self._train(run)
            if done is not None:
                self._record(run, *done)
        except CompareError as e:  # an unreadable summary.csv
            self._fail(run, str(e), run.command())
        except OSError as e:  # a full disk, a folder that became unwritable: the run folder keeps its state
            self._fail(run, f'{e.filename or "file access"}: {e.strerror or e}', run.command())


def _on_interrupt(runner: Runner, e: KeyboardInterrupt) -> None:
    runner.stop.set()
    if isinstance(e, Terminated):
        runner.terminate()


def run_all(runner: Runner, todo: List[Run], jobs: int) -> None:
    """``runner`` on every run, ``jobs`` at a time in the order given. On Ctrl-C or SIGTERM (``Terminated``,
    passed on to the children) it starts nothing more and waits for the running children to save their state;
    ``runner.stop`` is then set."""
    ex = ThreadPoolExecutor(jobs)
    try:
        for f in as_completed([ex.submit(runner, r) for r in todo]):
            f.result()
    except KeyboardInterrupt as e:
        _on_interrupt(runner, e)
    finally:
        _shutdown(ex, runner)


def _shutdown(ex: ThreadPoolExecutor, runner: Runner) -> None:
    """Wait for the running children, also through further Ctrl-C / SIGTERM."""
    while True:
        try:
            ex.shutdown(wait=True, cancel_futures=True)
            return
        except KeyboardInterrupt as e:
            _on_interrupt(runner, e)
