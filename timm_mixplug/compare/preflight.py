"""The check of a comparison's setup before any run starts: each method's full train.py argument list goes
through train.py's own parser and checks (``train.config.parse_args``), no two methods may train with identical
settings, and each ``--devices`` index must be a CUDA device here. The first problem is one CompareError line (compare exits 2, no run started).
Runs that would train with emulated bf16 on this CPU get one line of warning (train.py says it only in each run's log)."""
import io
import shlex
from contextlib import redirect_stderr, redirect_stdout
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.runs import Run
from timm_mixplug.errors import UsageError
from timm_mixplug.train.config import parse_args
from timm_mixplug.utils.precision import emulated_bf16_cpu

__all__ = ['device_problem', 'setup_problem', 'emulated_bf16_note', 'check_setup']


def device_problem(ids: Sequence[int]) -> Optional[str]:
    """Why a ``--devices`` index does not name a CUDA device this process sees, or None."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = ','.join(map(str, ids))
    if n == 0:
        return (f'--devices {given}: no CUDA device is visible here (torch.cuda.is_available() is False); drop '
                f'--devices to train on the CPU')
    bad = [d for d in ids if d >= n]
    if bad:
        return (f'--devices {given}: {", ".join(map(str, bad))} is not among the {n} CUDA device(s) visible '
                f'here (0..{n - 1})')
    return None


# settings of one run rather than of its training (compare sets them per run)
_PER_RUN = ('seed', 'output', 'experiment', 'resume', 'overwrite_experiment', 'given', 'argv', 'notes')


def _train_py_parse(args: List[str]) -> Tuple[Optional[str], Optional[Dict]]:
    """(train.py's one-line refusal of ``args`` or None, the resolved settings or None); what its parser prints
    on the way is not shown (the runs' logs get it)."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            parsed = parse_args(args)
    except UsageError as e:
        return str(e), None
    except SystemExit:  # argparse's --help / --version
        return 'the train.py flags ask for --help or --version; run train.py --help itself', None
    return None, {k: v for k, v in vars(parsed).items() if k not in _PER_RUN}


def _same_training(settings: Dict[str, Dict], method_args: Dict[str, List[str]]) -> Optional[str]:
    """Two methods whose runs would train with identical settings (the setup already selects what one of them
    adds, e.g. a config with ``mix: bcplus`` makes ``ce`` BC+): the comparison would be silently void."""
    names = list(settings)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if settings[a] == settings[b]:
                return (f'methods {a} ({shlex.join(method_args[a]) or "no method arguments"}) and {b} '
                        f'({shlex.join(method_args[b]) or "no method arguments"}) train with identical settings: the '
                        f'setup already selects what one of them adds; make the setup method-neutral (e.g. -- --mix '
                        f'none --task classification) or drop one (no run was started)')
    return None


def _first_runs_parsed(runs: Sequence[Run]) -> Dict[str, Tuple[Optional[str], Optional[Dict]]]:
    """method -> train.py's parse of its first run (refusal or None, settings or None)."""
    first: Dict[str, Run] = {}
    for r in runs:
        first.setdefault(r.method, r)
    return {m: _train_py_parse(r.train_args()) for m, r in first.items()}


def setup_problem(parsed: Dict[str, Tuple[Optional[str], Optional[Dict]]],
                  method_args: Dict[str, List[str]]) -> Optional[str]:
    """What train.py refuses in the first run of each method (``parsed``): named as the training setup's when it
    refuses every method the same way, else as the first refused method's."""
    problems = {m: why for m, (why, _) in parsed.items() if why}
    if not problems:
        return _same_training({m: settings for m, (_, settings) in parsed.items()}, method_args)
    name = next(iter(problems))
    if len(problems) == len(parsed) and len(set(problems.values())) == 1:
        return f'train.py refuses the training setup: {problems[name]} (no run was started)'
    margs = shlex.join(method_args[name]) or 'no method arguments'
    return f'train.py refuses method {name} ({margs}): {problems[name]} (no run was started)'


def emulated_bf16_note(settings: Dict[str, Dict]) -> Optional[str]:
    """One line naming the methods whose runs use bf16 autocast on this CPU where it has no native bf16
    (AVX512-BF16 or AMX) and torch emulates it, or None."""
    slow = [m for m, s in settings.items() if s.get('amp') and s.get('amp_dtype') == 'bfloat16'
            and emulated_bf16_cpu(s['device'])]
    if not slow:
        return None
    return (f'compare: {", ".join(slow)} train with --amp --amp-dtype bfloat16 on a CPU without native bf16 '
            f'(AVX512-BF16 or AMX): autocast emulates it, several times slower than fp32; drop --amp for speed')


def check_setup(runs: Sequence[Run], method_args: Dict[str, List[str]], devices: Optional[List[int]]) -> Optional[str]:
    """Raises CompareError when a ``--devices`` index or a method's train.py arguments would fail its runs;
    returns the emulated-bf16 warning line (or None)."""
    why = device_problem(devices) if devices else None
    parsed = {} if why else _first_runs_parsed(runs)
    why = why or setup_problem(parsed, method_args)
    if why is not None:
        raise CompareError(why)
    return emulated_bf16_note({m: settings for m, (_, settings) in parsed.items()})
