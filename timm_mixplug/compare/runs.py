"""One (method, seed) run of a comparison: where its files go, what its finished run folder says, and its
result file (``OUT/results/<method>-s<seed>.json``), which records a fingerprint of everything the run was
trained from (its train.py arguments and the content of every ``-c`` config among them)."""
import csv
import hashlib
import json
import os
import shlex
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.stats import metric_value, peer_values

__all__ = ['Run', 'SHOT_GROUPS', 'config_files', 'fingerprint', 'read_summary', 'state_progress', 'metric_fields',
           'write_json', 'load_result', 'check_result_matches']

SHOT_GROUPS = ('many', 'medium', 'few')


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
    def pid_file(self) -> Path:
        """The pid of the train.py process training this run, while it trains (left by a killed compare)."""
        return self.out / 'runs' / f'{self.name}.pid'

    @property
    def result(self) -> Path:
        return self.out / 'results' / f'{self.name}.json'

    def train_args(self) -> List[str]:
        """The run's full train.py argument list."""
        return [*self.args, '--seed', str(self.seed), '--output', str(self.out / 'runs'), '--experiment', self.name]

    def command(self) -> List[str]:
        return [sys.executable, '-m', 'timm_mixplug', *self.train_args()]


def config_files(args: Sequence[str]) -> List[str]:
    """The ``-c`` / ``--config`` files named in a train.py argument list, in order."""
    out = []
    for i, a in enumerate(args):
        if a in ('-c', '--config') and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith('--config='):
            out.append(a.split('=', 1)[1])
        elif a.startswith('-c') and len(a) > 2 and not a.startswith('--'):
            out.append(a[2:])
    return out


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        return f'unreadable: {e.strerror or e}'


def fingerprint(args: Sequence[str]) -> str:
    """sha256 of a run's train.py arguments and the content of each config file among them."""
    doc = [list(args), [[p, _file_digest(p)] for p in config_files(args)]]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def read_summary(path: Path) -> List[Dict[str, float]]:
    """summary.csv rows as {column: float}, empty cells left out; raises CompareError on an unreadable file."""
    if not path.is_file():
        return []
    try:
        with open(path, newline='') as f:
            return [{k: float(v) for k, v in r.items() if k and v not in ('', None)} for r in csv.DictReader(f)]
    except (OSError, ValueError, TypeError, csv.Error) as e:
        raise CompareError(f'{path}: unreadable summary ({str(e).splitlines()[0]})') from None


def state_progress(run_dir: Path) -> Optional[Tuple[int, int]]:
    """(epochs done, epochs in all) of ``last-state.safetensors``, read from the JSON document in its
    safetensors header (``__metadata__['state']``); None if there is no readable state."""
    try:
        with open(run_dir / 'last-state.safetensors', 'rb') as f:
            n = struct.unpack('<Q', f.read(8))[0]
            header = json.loads(f.read(n))
        meta = json.loads(header['__metadata__']['state'])['meta']
        return int(meta['epoch']), int(meta['num_epochs'])
    except (OSError, ValueError, KeyError, TypeError, struct.error, MemoryError, OverflowError):
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


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a killed compare never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(obj, indent=1) + '\n')
    os.replace(tmp, path)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _result_problem(res, run: Run) -> Optional[str]:
    """What makes a parsed result file unusable for ``run``, or None."""
    if not isinstance(res, dict):
        return f'expected a JSON object, got {type(res).__name__}'
    for key, ok in (('method', lambda v: v == run.method), ('seed', lambda v: v == run.seed),
                    ('metric', lambda v: isinstance(v, str)), ('final', _number),
                    ('curve', lambda v: isinstance(v, list) and all(x is None or _number(x) for x in v)),
                    ('args', lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))):
        if key not in res:
            return f'no {key!r}'
        if not ok(res[key]):
            return f'{key!r} is {res[key]!r}'
    return None


def _read_result(run: Run) -> dict:
    try:
        res = json.loads(run.result.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise CompareError(f'{run.result}: unreadable result file ({str(e).splitlines()[0]}); delete it to train '
                           f'the run again') from None
    problem = _result_problem(res, run)
    if problem:
        raise CompareError(f'{run.result}: not a result of run {run.name} ({problem}); delete it to train the run '
                           f'again')
    return res


def load_result(run: Run, metric: str) -> Optional[dict]:
    """The run's result file, None if there is none. One recorded for another ``--metric`` gets that metric's
    fields from the run's ``summary.csv``. Raises CompareError when neither can be read."""
    if not run.result.exists():
        return None
    if not run.result.is_file():
        raise CompareError(f'{run.result} is not a file; remove it to train the run again')
    res = _read_result(run)
    if res['metric'] != metric:
        rows = read_summary(run.run_dir / 'summary.csv')
        fields = metric_fields(rows, metric) if rows else None
        if fields is None or fields['final'] is None:
            have = f'columns: {", ".join(rows[-1])}' if rows else 'its summary.csv is gone'
            raise CompareError(f'--metric {metric}: {run.result} was recorded for {res["metric"]} and '
                               f'{run.run_dir} has no {metric} ({have})')
        for k in ('shots', 'ensemble'):
            res.pop(k, None)
        res.update(fields)
    return res


def check_result_matches(run: Run, res: dict) -> None:
    """Raises CompareError when a reused result was trained from other arguments or another config content
    than ``run`` would be: it is never reused silently."""
    if res['args'] != run.args:
        raise CompareError(f'{run.result} was trained with other train.py arguments ({shlex.join(res["args"])}); '
                           f'use another --output, or delete it to train the run again')
    configs = config_files(run.args)
    if configs and res.get('fingerprint') != fingerprint(run.args):
        how = ('records no fingerprint of its config' if 'fingerprint' not in res
               else 'was trained from another content of')
        raise CompareError(f'{run.result} {how} {" / ".join(configs)}; use another --output, or delete it to '
                           f'train the run again')
