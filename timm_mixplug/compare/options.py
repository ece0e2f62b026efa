"""compare's command line: its options, the training setup (train.py flags after ``--``, flags compare does
not know, ``--base-args``, ``--config``) and the (method, seed) runs they make."""
import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Sequence

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.methods import builtin_methods, check_reserved, load_methods_file
from timm_mixplug.compare.runs import Run

__all__ = ['create_parser', 'parse_options']


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CompareError(message)


EXAMPLE = """\
example (3 methods x 3 seeds on the offline digits set, 2 runs at a time):
  python -m timm_mixplug compare --methods ce,bc,bcplus --seeds 0,1,2 --baseline ce --jobs 2 \\
      --output out/cmp -- --dataset mixplug/digits --model resnet20_cifar --img-size 32 --epochs 8 -b 64

The training setup is the train.py flags after --; flags compare does not know (e.g. --dataset, --model)
go to train.py too, so the -- may be left out. Before any run starts, every method's full train.py
arguments are parsed with train.py's own parser: a mistyped flag stops compare at once (exit 2).

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
methods or seeds. A result records its train.py arguments and the content of its -c config files: one
trained from others is refused, never reused. One compare at a time holds OUT (OUT/.compare.lock);
while a train.py left running by a killed compare still trains a run, compare names its pid and stops.
SIGTERM stops the running train.py processes too (they save their state). A failed run is reported with
its log and command and is not kept; compare then exits 1.
Exit codes: 0 done, 1 a run failed, 2 bad input (nothing written), 130 interrupted, 143 terminated.
"""


def create_parser() -> argparse.ArgumentParser:
    """The ``compare`` options (the training setup comes after ``--``)."""
    methods = '\n'.join(f'  {n:<15} {shlex.join(a) or "(nothing: the training setup as it is)"}'
                        for n, a in builtin_methods().items())
    p = _Parser(prog='python -m timm_mixplug compare', allow_abbrev=False,
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


def _parse_devices(text: str) -> List[int]:
    try:
        ids = [int(d) for d in _split_list(text, 'devices')]
    except ValueError:
        raise CompareError(f'--devices {text!r}: expected comma-separated CUDA device indices, e.g. 0,1') from None
    if any(d < 0 for d in ids):
        raise CompareError(f'--devices {text!r}: device indices are >= 0')
    return ids


def _check_output(out: Path) -> None:
    """``--output`` must be a folder or not exist yet below a folder."""
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        where = '' if p == out else f' ({p} is a file)'
        raise CompareError(f'--output {out}: not a folder{where}; give a folder for the runs and the report')


def _seeds(text: str) -> List[int]:
    try:
        seeds = [int(s) for s in _split_list(text, 'seeds')]
    except ValueError:
        raise CompareError(f'--seeds {text!r}: expected comma-separated integers') from None
    if any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise CompareError(f'--seeds {text!r}: expected different seeds >= 0')
    return seeds


def _check_jobs(opts) -> None:
    opts.device_list = _parse_devices(opts.devices) if opts.devices is not None else None
    if opts.jobs is None:
        opts.jobs = len(opts.device_list) if opts.device_list else 1
    if opts.jobs < 1:
        raise CompareError(f'--jobs {opts.jobs}: must be >= 1')
    n = len(opts.device_list or ())
    if opts.device_list and opts.jobs < n:
        raise CompareError(f'--devices {opts.devices} names {n} devices but --jobs {opts.jobs} runs only {opts.jobs} '
                           f'at once, so {n - opts.jobs} would stay idle; use --jobs {n} or more (or name fewer '
                           f'devices)')
    if opts.threads is not None and opts.threads < 1:
        raise CompareError(f'--threads {opts.threads}: must be >= 1')


def _setup(opts, passed: List[str], after_dash: List[str]) -> List[str]:
    """The training setup of every run: ``-c CONFIG``, ``--base-args``, the flags compare does not know and the
    flags after ``--``."""
    try:
        setup = shlex.split(opts.base_args) + passed + after_dash
    except ValueError as e:
        raise CompareError(f'--base-args: {e}') from None
    check_reserved(setup, 'training setup')
    if opts.config:
        if not os.path.isfile(opts.config):
            raise CompareError(f'--config {opts.config}: no such file')
        setup = ['-c', opts.config] + setup
    if not setup and not opts.report_only:
        raise CompareError('no training setup: give train.py flags after -- (or --base-args / --config), e.g. '
                           '-- --dataset mixplug/digits --model resnet20_cifar --epochs 8')
    return setup


def parse_options(argv: Sequence[str]):
    """(options, runs) from compare's command line; raises CompareError on bad input. ``options.passed`` holds
    the flags compare does not know, which go to train.py."""
    argv = list(argv)
    after_dash: List[str] = []
    if '--' in argv:
        i = argv.index('--')
        argv, after_dash = argv[:i], argv[i + 1:]
    opts, passed = create_parser().parse_known_args(argv)
    opts.passed = passed
    methods = builtin_methods()
    if opts.methods_file:
        methods.update(load_methods_file(opts.methods_file))
    names = _split_list(opts.methods, 'methods')
    unknown = [n for n in names if n not in methods]
    if unknown:
        raise CompareError(f'unknown method {", ".join(map(repr, unknown))} (known: {", ".join(methods)}; '
                           f'more with --methods-file)')
    seeds = _seeds(opts.seeds)
    opts.baseline = opts.baseline or names[0]
    if opts.baseline not in names:
        raise CompareError(f'--baseline {opts.baseline!r} is not one of --methods ({", ".join(names)})')
    _check_jobs(opts)
    _check_output(Path(opts.output))
    setup = _setup(opts, passed, after_dash)
    for n in names:
        check_reserved(methods[n], f'method {n}')
    opts.names, opts.seed_list, opts.setup = names, seeds, setup
    opts.method_args = {n: methods[n] for n in names}
    out = Path(opts.output)
    runs = [Run(m, s, setup + methods[m], out) for s in seeds for m in names]  # seed by seed
    return opts, runs
