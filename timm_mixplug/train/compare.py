"""``python -m timm_mixplug compare``: a method bake-off on your own data.

Every (method, seed) pair is one ``python -m timm_mixplug`` training process with the same training setup
(train.py flags after ``--``, ``--base-args`` and / or a ``--config`` YAML) plus the method's flags. The
final value of a ``summary.csv`` column (``--metric``, default ``eval_top1``) is compared across methods:
mean ± std over seeds and, against ``--baseline``, the paired per-seed difference with a 95 % Student-t
interval. Everything lands in ``--output``::

    runs/<method>-s<seed>/       train.py's run folder        runs/<method>-s<seed>.log   its stdout / stderr
    results/<method>-s<seed>.json  one finished run            compare.md / .json / .png    the report

A run with a result file is reused; an unfinished run folder (an interrupted compare) is continued with
train.py's ``--resume``, one without a saved state is started again. This module needs only the standard
library, PyYAML and, for the figure, matplotlib: training happens in the child processes.
"""
import argparse
import json
import math
import os
import queue
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

__all__ = ['METHODS', 'CompareError', 't_critical', 'mean_std', 'paired_delta', 'peer_values', 'metric_value',
           'summarize', 'markdown', 'main']

_NH = ['--task', 'nonharmonic', '--nh-device-views', '--no-aug']
# built-in methods: name -> train.py arguments added to the training setup
METHODS: Dict[str, List[str]] = {
    'ce': [],
    'mixup': ['--mix', 'mixup'],
    'cutmix': ['--mix', 'cutmix'],
    'bc': ['--mix', 'bc'],
    'bcplus': ['--mix', 'bcplus'],
    'superclass': ['--mix', 'superclass'],
    'dml': ['--task', 'dml'],
    'dml_superclass': ['--task', 'dml', '--mix', 'superclass'],
    'nh': _NH + ['--nh-views', '4'],
    'nh_uniform': _NH + ['--nh-views', '1'],
    'aux': ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--no-aug'],
    'glmc': ['--task', 'glmc'],
    'glmc_clr': ['--task', 'glmc', '--glmc-clr'],
}
# train.py flags that compare sets for every run itself
RESERVED = ('--seed', '--output', '--experiment', '--resume', '--overwrite-experiment')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')
SHOT_GROUPS = ('many', 'medium', 'few')

# two-sided 95 % quantiles t_{0.975}(df) of Student's t for df = 1..30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


class CompareError(Exception):
    """Bad input: ``compare: error: <message>``, exit code 2, nothing written."""


def t_critical(df: int) -> float:
    """t_{0.975}(df), the half-width factor of a two-sided 95 % interval: a table for df <= 30, beyond it the
    Cornish-Fisher expansion around the normal quantile (error < 1e-4)."""
    if df < 1:
        raise ValueError(f'df must be >= 1, got {df}')
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mean_std(xs: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample std); std is None for one value, both None for none."""
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def paired_delta(values: Dict[int, float], base: Dict[int, float]) -> dict:
    """Per-seed differences ``values[s] - base[s]`` over the seeds both have: their mean, std, 95 % t-interval
    (df = n - 1) and whether it excludes 0 (``effect``; None below two seeds)."""
    seeds = [s for s in values if s in base]
    d = [values[s] - base[s] for s in seeds]
    mu, sd = mean_std(d)
    ci = t = effect = None
    if sd is not None:
        t = t_critical(len(d) - 1)
        half = t * sd / math.sqrt(len(d))
        ci = [mu - half, mu + half]
        effect = ci[0] > 0 or ci[1] < 0
    return dict(seeds=seeds, values=d, n=len(d), mean=mu, std=sd, t=t, ci95=ci, effect=effect)


def peer_values(row: Dict[str, float], metric: str) -> List[float]:
    """The DML peers' values of ``metric`` in a summary row: ``eval_peer<k>_<m>`` for ``eval_<m>`` (also under
    ``ema_``); empty for other tasks."""
    head, sep, tail = metric.rpartition('eval_')
    if not sep:
        return []
    peer = re.compile(re.escape(head) + r'eval_peer\d+_' + re.escape(tail))
    return [v for k, v in row.items() if peer.fullmatch(k)]


def metric_value(row: Dict[str, float], metric: str) -> Optional[float]:
    """``row[metric]``, except for DML, whose ``eval_<m>`` is the ensemble: the mean of the peers (as in
    the evidence tables). None if absent."""
    peers = peer_values(row, metric)
    return statistics.mean(peers) if peers else row.get(metric)


# ---- command line ----

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CompareError(message)


EXAMPLE = """\
example (3 methods x 3 seeds on the offline digits set, 2 runs at a time):
  python -m timm_mixplug compare --methods ce,bc,bcplus --seeds 0,1,2 --baseline ce --jobs 2 \\
      --output out/cmp -- --dataset mixplug/digits --model resnet20_cifar --img-size 32 --epochs 8 -b 64

built-in methods (train.py arguments added to the training setup):
{methods}

superclass, dml_superclass and aux need a hierarchy for data other than CIFAR-100: add --superclass-map to
the training setup. nh, nh_uniform and aux make their own crops and flips on the device (--no-aug), so
compare them with each other or with a baseline given the same augmentation (--methods-file).

--methods-file FILE.yaml defines more methods (or redefines built-in ones), name: list or string of
train.py arguments, e.g.
  ce_smooth: --smoothing 0.1
  bc_long: [--mix, bc, --epochs, "30"]

Each run: {python} -m timm_mixplug [-c CONFIG] SETUP METHOD-ARGS --seed S --output OUT/runs
--experiment METHOD-sS, with OMP_NUM_THREADS = MKL_NUM_THREADS = --threads (default cores // jobs). On GPUs,
--devices 0,1,2,3 gives each run one device (CUDA_VISIBLE_DEVICES), --jobs runs spread over them in turn
(default --jobs: one per device); add --device cuda to the training setup. Finished
runs (OUT/results/*.json) are reused: run the same command again after an interruption, or with more
methods or seeds. A failed run is reported with its log and command and is not kept; compare then exits 1.
Exit codes: 0 done, 1 a run failed, 2 bad input (nothing written), 130 interrupted.
"""


def create_parser() -> argparse.ArgumentParser:
    """The ``compare`` options (the training setup comes after ``--``)."""
    methods = '\n'.join(f'  {n:<15} {shlex.join(a) or "(nothing: the training setup as it is)"}'
                        for n, a in METHODS.items())
    p = _Parser(prog='python -m timm_mixplug compare',
                usage='%(prog)s --methods A,B,... [options] [-- train.py flags]',
                description='Train each method with each seed on the same setup and report the final metric: '
                            'mean ± std over seeds and the paired per-seed difference to the baseline with '
                            'a 95 % t-interval.',
                epilog=EXAMPLE.format(methods=methods, python=os.path.basename(sys.executable)),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--methods', required=True, help='comma-separated method names (built-in or --methods-file)')
    p.add_argument('--methods-file', metavar='FILE', help='YAML mapping of more methods: name -> train.py arguments')
    p.add_argument('--seeds', default='0,1,2', help='comma-separated seeds, each method trains once per seed '
                                                   '(default: 0,1,2)')
    p.add_argument('--baseline', help='the method every other is compared with (default: the first)')
    p.add_argument('--metric', default='eval_top1',
                   help='summary.csv column whose final-epoch value is compared (default: eval_top1; DML: the '
                        'mean of its peers, the ensemble is listed beside it)')
    p.add_argument('--config', metavar='FILE', help='train.py YAML config, passed to every run as -c FILE')
    p.add_argument('--base-args', default='', metavar='"FLAGS"',
                   help='train.py flags for every run, as one string (with the flags after --, which follow it)')
    p.add_argument('--output', default='output/compare', help='folder for runs, results and report '
                                                              '(default: output/compare)')
    p.add_argument('--jobs', type=int, help='training processes at once (default: one per --devices entry, else 1)')
    p.add_argument('--devices', metavar='IDS',
                   help='comma-separated CUDA device indices (as this process sees them); each run is given one '
                        'as its only device (CUDA_VISIBLE_DEVICES), the --jobs runs at once take them in turn, '
                        'several per device when --jobs is larger (default: every run sees every device)')
    p.add_argument('--threads', type=int, help='OMP / MKL threads per process (default: max(1, cores // jobs))')
    p.add_argument('--report-only', action='store_true', help='train nothing: rebuild the report from the '
                                                              'result files in --output')
    return p


def _split_list(text: str, what: str) -> List[str]:
    items = [x.strip() for x in text.split(',') if x.strip()]
    if not items:
        raise CompareError(f'--{what}: no {what} given')
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise CompareError(f'--{what}: listed twice: {", ".join(dup)}')
    return items


def load_methods_file(path: str) -> Dict[str, List[str]]:
    """``name: [args]`` or ``name: "args"`` from a YAML file; raises CompareError."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise CompareError(f'--methods-file {path}: {str(e).splitlines()[0]}') from None
    if not isinstance(doc, dict) or not doc:
        raise CompareError(f'--methods-file {path}: expected a mapping of method name -> train.py arguments')
    out = {}
    for name, val in doc.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CompareError(f'--methods-file {path}: bad method name {name!r} (letters, digits, _ . + -)')
        if val is None:
            val = []
        elif isinstance(val, str):
            val = shlex.split(val)
        elif isinstance(val, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                           for v in val):
            val = [str(v) for v in val]
        else:
            raise CompareError(f'--methods-file {path}: method {name}: expected a list or string of train.py '
                               f'arguments, got {val!r}')
        out[name] = val
    return out


def _check_reserved(args: Sequence[str], where: str) -> None:
    for a in args:
        if a.split('=', 1)[0] in RESERVED:
            raise CompareError(f'{where}: {a.split("=", 1)[0]} is set by compare for every run '
                               f'(use --seeds / --output)')


@dataclass
class Run:
    """One (method, seed) training run and where its files go."""
    method: str
    seed: int
    args: List[str]  # train.py arguments: config, training setup, method
    out: Path

    @property
    def name(self) -> str:
        return f'{self.method}-s{self.seed}'

    @property
    def run_dir(self) -> Path:
        return self.out / 'runs' / self.name

    @property
    def log(self) -> Path:
        return self.out / 'runs' / f'{self.name}.log'

    @property
    def result(self) -> Path:
        return self.out / 'results' / f'{self.name}.json'

    def command(self) -> List[str]:
        return [sys.executable, '-m', 'timm_mixplug', *self.args, '--seed', str(self.seed),
                '--output', str(self.out / 'runs'), '--experiment', self.name]


def parse_options(argv: Sequence[str]):
    """(options, runs) from compare's command line; raises CompareError on bad input."""
    argv = list(argv)
    train: List[str] = []
    if '--' in argv:
        i = argv.index('--')
        argv, train = argv[:i], argv[i + 1:]
    opts = create_parser().parse_args(argv)
    methods = dict(METHODS)
    if opts.methods_file:
        methods.update(load_methods_file(opts.methods_file))
    names = _split_list(opts.methods, 'methods')
    unknown = [n for n in names if n not in methods]
    if unknown:
        raise CompareError(f'unknown method {", ".join(map(repr, unknown))} (known: {", ".join(methods)}; '
                           f'more with --methods-file)')
    try:
        seeds = [int(s) for s in _split_list(opts.seeds, 'seeds')]
    except ValueError:
        raise CompareError(f'--seeds {opts.seeds!r}: expected comma-separated integers') from None
    if any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise CompareError(f'--seeds {opts.seeds!r}: expected different seeds >= 0')
    opts.baseline = opts.baseline or names[0]
    if opts.baseline not in names:
        raise CompareError(f'--baseline {opts.baseline!r} is not one of --methods ({", ".join(names)})')
    opts.device_list = _parse_devices(opts.devices) if opts.devices is not None else None
    if opts.jobs is None:
        opts.jobs = len(opts.device_list) if opts.device_list else 1
    if opts.jobs < 1:
        raise CompareError(f'--jobs {opts.jobs}: must be >= 1')
    if opts.device_list and opts.jobs < len(opts.device_list):
        raise CompareError(f'--devices {opts.devices} names {len(opts.device_list)} devices but --jobs {opts.jobs} '
                           f'runs only {opts.jobs} at once, so {len(opts.device_list) - opts.jobs} would stay idle; '
                           f'use --jobs {len(opts.device_list)} or more (or name fewer devices)')
    if opts.threads is not None and opts.threads < 1:
        raise CompareError(f'--threads {opts.threads}: must be >= 1')
    try:
        setup = shlex.split(opts.base_args) + train
    except ValueError as e:
        raise CompareError(f'--base-args: {e}') from None
    _check_reserved(setup, 'training setup')
    for n in names:
        _check_reserved(methods[n], f'method {n}')
    if opts.config:
        if not os.path.isfile(opts.config):
            raise CompareError(f'--config {opts.config}: no such file')
        setup = ['-c', opts.config] + setup
    if not setup and not opts.report_only:
        raise CompareError('no training setup: give train.py flags after -- (or --base-args / --config), e.g. '
                           '-- --dataset mixplug/digits --model resnet20_cifar --epochs 8')
    opts.names, opts.seed_list, opts.setup = names, seeds, setup
    opts.method_args = {n: methods[n] for n in names}
    out = Path(opts.output)
    runs = [Run(m, s, setup + methods[m], out) for s in seeds for m in names]  # seed by seed
    return opts, runs


def _parse_devices(text: str) -> List[int]:
    try:
        ids = [int(d) for d in _split_list(text, 'devices')]
    except ValueError:
        raise CompareError(f'--devices {text!r}: expected comma-separated CUDA device indices, e.g. 0,1') from None
    if any(d < 0 for d in ids):
        raise CompareError(f'--devices {text!r}: device indices are >= 0')
    return ids


def check_devices(ids: Sequence[int]) -> None:
    """Raises CompareError unless every index names a CUDA device this process sees (imports torch: only
    called when ``--devices`` is given and runs are to be trained)."""
    import torch
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = ','.join(map(str, ids))
    if n == 0:
        raise CompareError(f'--devices {given}: no CUDA device is visible here (torch.cuda.is_available() is '
                           f'False); drop --devices to train on the CPU')
    bad = [d for d in ids if d >= n]
    if bad:
        raise CompareError(f'--devices {given}: {", ".join(map(str, bad))} is not among the {n} CUDA device(s) '
                           f'visible here (0..{n - 1})')


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


# ---- one run ----

def read_summary(path: Path) -> List[Dict[str, float]]:
    """summary.csv rows as {column: float}, empty cells left out."""
    import csv
    if not path.is_file():
        return []
    with open(path, newline='') as f:
        return [{k: float(v) for k, v in r.items() if k and v not in ('', None)} for r in csv.DictReader(f)]


def state_progress(run_dir: Path) -> Optional[Tuple[int, int]]:
    """(epochs done, epochs in all) of ``last-state.safetensors``, read from the JSON document in its
    safetensors header (``__metadata__['state']``); None if there is no readable state."""
    try:
        with open(run_dir / 'last-state.safetensors', 'rb') as f:
            n = struct.unpack('<Q', f.read(8))[0]
            header = json.loads(f.read(n))
        meta = json.loads(header['__metadata__']['state'])['meta']
        return int(meta['epoch']), int(meta['num_epochs'])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def metric_fields(rows: List[Dict[str, float]], metric: str) -> dict:
    """What a result records of a finished run's summary rows for ``metric``: the final value, the per-epoch
    curve (None where an epoch was not evaluated), the shot-group accuracies and the DML ensemble."""
    last = rows[-1]
    out = dict(metric=metric, final=metric_value(last, metric), epochs=len(rows),
               curve=[metric_value(r, metric) for r in rows], final_row=last)
    if all(f'eval_{g}' in last for g in SHOT_GROUPS):
        out['shots'] = {g: last[f'eval_{g}'] for g in SHOT_GROUPS}
    if peer_values(last, metric) and metric in last:
        out['ensemble'] = last[metric]
    return out


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

    def _say(self, text: str) -> None:
        with self._lock:
            print(f'compare: {text}', flush=True)

    def _fail(self, run: Run, why: str, cmd: List[str]) -> None:
        with self._lock:
            self.failed.append(dict(run=run.name, why=why, log=str(run.log), command=shlex.join(cmd)))
        self._say(f'{run.name} FAILED ({why}); log {run.log}; command: {shlex.join(cmd)}')

    def __call__(self, run: Run) -> None:
        if self.stop.is_set():
            return
        progress = state_progress(run.run_dir)
        if run.run_dir.exists() and progress is None:  # stopped before its first epoch ended
            shutil.rmtree(run.run_dir)
        cmd = run.command()
        wall = cpu = resumed_from = None
        if progress is None or progress[0] < progress[1]:
            if progress is not None:
                resumed_from = progress[0]
                cmd += ['--resume', str(run.run_dir)]
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
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                    rc, cpu = _wait(proc)
                wall = time.perf_counter() - t0
            if rc in (130, -signal.SIGINT):  # Ctrl-C: the run saved its state; start nothing more
                self.stop.set()
            if rc != 0:
                if not self.stop.is_set():
                    self._fail(run, f'exit code {rc}', cmd)
                return
            progress = state_progress(run.run_dir)
            if progress is None or progress[0] < progress[1]:
                done = 'no state' if progress is None else f'{progress[0]} of {progress[1]} epochs'
                self._fail(run, f'stopped unfinished: {done}', cmd)
                return
        rows = read_summary(run.run_dir / 'summary.csv')
        fields = metric_fields(rows, self.metric) if rows else None
        if fields is None or fields['final'] is None:
            have = ', '.join(rows[-1]) if rows else 'no rows'
            self._fail(run, f'summary.csv has no {self.metric} in its last row ({have})', cmd)
            return
        _write_json(run.result, dict(method=run.method, seed=run.seed, args=run.args, command=cmd, **fields,
                                     wall_s=wall, cpu_s=cpu, resumed_from_epoch=resumed_from))
        times = ('result rebuilt from its finished run folder' if wall is None
                 else f'wall {wall:.0f} s' + (f', CPU {cpu:.0f} s' if cpu is not None else ''))
        self._say(f'{run.name}: {self.metric} {fields["final"]:.2f} ({times})')


def _write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a killed compare never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(obj, indent=1) + '\n')
    os.replace(tmp, path)


def load_result(run: Run, metric: str) -> Optional[dict]:
    """The run's result file, None if there is none. One recorded for another ``--metric`` gets that metric's
    fields from the run's ``summary.csv``. Raises CompareError when neither can be read."""
    if not run.result.is_file():
        return None
    try:
        res = json.loads(run.result.read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f'{run.result}: unreadable result file ({e}); delete it to train the run again') from None
    if res.get('metric') != metric:
        rows = read_summary(run.run_dir / 'summary.csv')
        fields = metric_fields(rows, metric) if rows else None
        if fields is None or fields['final'] is None:
            have = f'columns: {", ".join(rows[-1])}' if rows else 'its summary.csv is gone'
            raise CompareError(f'--metric {metric}: {run.result} was recorded for {res.get("metric")} and '
                               f'{run.run_dir} has no {metric} ({have})')
        for k in ('shots', 'ensemble'):
            res.pop(k, None)
        res.update(fields)
    return res


def run_all(runner: Runner, todo: List[Run], jobs: int) -> None:
    """``runner`` on every run, ``jobs`` at a time in the order given. On Ctrl-C (which the children get too,
    from the terminal) it starts nothing more and waits for the running ones to save their state; then
    ``runner.stop`` is set."""
    ex = ThreadPoolExecutor(jobs)
    try:
        for f in as_completed([ex.submit(runner, r) for r in todo]):
            f.result()
    except KeyboardInterrupt:
        runner.stop.set()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ---- report ----

def _known_mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _stats(xs: Sequence[float]) -> dict:
    mu, sd = mean_std(xs)
    return dict(mean=mu, std=sd)


def summarize(results: Dict[str, Dict[int, dict]], methods: Dict[str, List[str]], seeds: List[int],
              baseline: str, metric: str, setup: List[str]) -> dict:
    """The report's numbers (compare.json): per method (in order) its per-seed values, mean ± std, the paired
    delta to ``baseline``, mean wall / CPU seconds per run, shot-group and DML-ensemble means."""
    base = {s: r['final'] for s, r in results[baseline].items()}
    out = dict(metric=metric, baseline=baseline, seeds=seeds, setup=setup, methods={})
    for m, margs in methods.items():
        rs = [results[m][s] for s in seeds if s in results[m]]
        vals = {r['seed']: r['final'] for r in rs}
        e = dict(args=margs, seeds=list(vals), values=list(vals.values()), n=len(vals),
                 **_stats(list(vals.values())),
                 delta=None if m == baseline else paired_delta(vals, base),
                 wall_s=_known_mean(r.get('wall_s') for r in rs), cpu_s=_known_mean(r.get('cpu_s') for r in rs),
                 resumed_seeds=[r['seed'] for r in rs if r.get('resumed_from_epoch')],
                 missing_seeds=[s for s in seeds if s not in vals])
        if rs and all('shots' in r for r in rs):
            e['shots'] = {g: _stats([r['shots'][g] for r in rs]) for g in SHOT_GROUPS}
        if rs and all('ensemble' in r for r in rs):
            e['ensemble'] = _stats([r['ensemble'] for r in rs])
        out['methods'][m] = e
    return out


def _ms(s: dict) -> str:
    if s['mean'] is None:
        return 'n/a'
    return f'{s["mean"]:.2f}' + (f' ± {s["std"]:.2f}' if s['std'] is not None else '')


def _sec(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x:.0f}'


def markdown(summary: dict, failed: Sequence[dict] = ()) -> str:
    """compare.md: the method table (mean ± std, paired delta with its 95 % t-interval, times), shot groups
    when the runs report them, the method arguments and any missing or failed runs."""
    metric, base, ms = summary['metric'], summary['baseline'], summary['methods']
    lines = [f'# Method comparison: final `{metric}`', '',
             f'Training setup of every run: `{shlex.join(summary["setup"])}`; seeds '
             f'{", ".join(map(str, summary["seeds"]))}. Δ: the per-seed difference to the baseline `{base}` (same '
             f'seed), its mean and 95 % t-interval (df = n - 1); "effect" when the interval excludes 0.', '',
             f'| method | {metric} (mean ± std) | n | Δ vs {base}: mean [95 % CI] | effect | wall / run (s) | '
             f'CPU / run (s) | notes |', '|---|---|---|---|---|---|---|---|']
    for m, e in ms.items():
        d = e['delta']
        if d is None:
            delta, effect = '(baseline)', ''
        elif d['n'] == 0:
            delta, effect = 'n/a', 'n/a'
        elif d['ci95'] is None:
            delta, effect = f'{d["mean"]:+.2f} (1 seed)', 'n/a'
        else:
            delta = f'{d["mean"]:+.2f} [{d["ci95"][0]:+.2f}, {d["ci95"][1]:+.2f}]'
            effect = 'effect' if d['effect'] else 'no effect shown'
        notes = []
        if 'ensemble' in e:
            notes.append(f'mean of the DML peers; ensemble {_ms(e["ensemble"])}')
        if e['resumed_seeds']:
            notes.append(f'resumed (seed {",".join(map(str, e["resumed_seeds"]))}): times of the resumed part')
        if e['missing_seeds']:
            notes.append(f'no result for seed {",".join(map(str, e["missing_seeds"]))}')
        lines.append(f'| {m} | {_ms(e)} | {e["n"]} | {delta} | {effect} | {_sec(e["wall_s"])} | '
                     f'{_sec(e["cpu_s"])} | {"; ".join(notes)} |')
    shots = {m: e['shots'] for m, e in ms.items() if 'shots' in e}
    if shots:
        lines += ['', 'Final top-1 (%) per shot group (training images per class: many > 100, medium, few <= 20):',
                  '', '| method | many | medium | few |', '|---|---|---|---|']
        lines += [f'| {m} | {" | ".join(_ms(s[g]) for g in SHOT_GROUPS)} |' for m, s in shots.items()]
    lines += ['', 'Method arguments: ' + '; '.join(f'`{m}`: ' + (f'`{shlex.join(e["args"])}`' if e['args'] else
                                                                  'none') for m, e in ms.items()) + '.']
    if failed:
        lines += ['', 'Failed runs (not kept; run the command again to retry them):', '']
        lines += [f'* {f["run"]}: {f["why"]}; log `{f["log"]}`; command `{f["command"]}`' for f in failed]
    return '\n'.join(lines) + '\n'


def figure(summary: dict, results: Dict[str, Dict[int, dict]], path: Path) -> bool:
    """compare.png: final metric per method (bar: mean, error bar: std, dots: seeds; the baseline grey) and
    the metric per epoch averaged over seeds. False (one printed line) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('compare: matplotlib is not installed, so no compare.png (pip install -e ".[plot]")', flush=True)
        return False
    metric, base = summary['metric'], summary['baseline']
    names = [m for m, e in summary['methods'].items() if e['n']]
    if not names:
        return False
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(5 + 0.5 * len(names) + 5, 4))
    lo, hi = math.inf, -math.inf
    for i, m in enumerate(names):
        e = summary['methods'][m]
        colour = '0.6' if m == base else f'C{i}'
        bars.bar(i, e['mean'], yerr=e['std'] or 0, capsize=4, color=colour)
        bars.plot([i] * e['n'], e['values'], 'k.', ms=5)
        lo = min(lo, min(e['values']), e['mean'] - (e['std'] or 0))
        hi = max(hi, max(e['values']), e['mean'] + (e['std'] or 0))
        seeds = [results[m][s]['curve'] for s in e['seeds']]
        epochs = [j for j in range(min(map(len, seeds))) if all(c[j] is not None for c in seeds)]
        curves.plot([j + 1 for j in epochs], [statistics.mean(c[j] for c in seeds) for j in epochs],
                    color=colour, ls='--' if m == base else '-', marker='.', label=m)
    pad = 0.3 * (hi - lo) + 1
    bars.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    bars.set_xticks(range(len(names)))
    bars.set_xticklabels(names, rotation=25, ha='right')
    bars.set_ylabel(f'final {metric}: mean ± std, dots: seeds')
    bars.grid(axis='y', alpha=0.3)
    curves.set_xlabel('epoch')
    curves.xaxis.get_major_locator().set_params(integer=True)
    curves.set_ylabel(f'{metric}, mean over seeds')
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    fig.suptitle(f'{len(summary["seeds"])} seed(s); grey: baseline {base}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m timm_mixplug compare ...``: 0 done, 1 a run failed, 2 bad input (one ``compare: error:``
    line, nothing written), 130 interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts, runs = parse_options(argv)
        cached = {r.name: load_result(r, opts.metric) for r in runs}
        if opts.device_list and not opts.report_only and not all(cached.values()):
            check_devices(opts.device_list)
        if opts.report_only:
            if not any(cached.values()):
                raise CompareError(f'--report-only: no result files for these runs in {Path(opts.output) / "results"}')
        else:
            for r in runs:
                res = cached[r.name]
                if res is not None and res.get('args') != r.args:
                    raise CompareError(f'{r.result} was trained with other train.py arguments '
                                       f'({shlex.join(res.get("args") or [])}); use another --output, or delete '
                                       f'it to train the run again')
    except CompareError as e:
        print(f'compare: error: {e}', file=sys.stderr)
        return 2
    out = Path(opts.output)
    failed: List[dict] = []
    todo = [r for r in runs if cached[r.name] is None]
    if not opts.report_only:
        if len(todo) < len(runs):
            print(f'compare: reused {len(runs) - len(todo)} finished run(s) from {out / "results"}', flush=True)
        if todo:
            threads = opts.threads or max(1, _cores() // opts.jobs)
            print(f'compare: {len(todo)} run(s) to train, {opts.jobs} at a time, {threads} thread(s) each',
                  flush=True)
            pool = DevicePool(opts.device_list, opts.jobs) if opts.device_list else None
            runner = Runner(opts.metric, threads, len(todo), pool)
            run_all(runner, todo, opts.jobs)
            if runner.stop.is_set():
                print('compare: interrupted; run the same command again to continue (finished runs are reused, '
                      'unfinished ones resumed)', file=sys.stderr)
                return 130
            failed = runner.failed
    results: Dict[str, Dict[int, dict]] = {m: {} for m in opts.names}
    for r in runs:
        res = cached[r.name] or load_result(r, opts.metric)
        if res is not None:
            results[r.method][r.seed] = res
    summary = summarize(results, opts.method_args, opts.seed_list, opts.baseline,
                        opts.metric, opts.setup)
    summary['failed'] = failed
    text = markdown(summary, failed)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.md').write_text(text)
    _write_json(out / 'compare.json', summary)
    figure(summary, results, out / 'compare.png')
    print(text, end='', flush=True)
    return 1 if failed else 0
