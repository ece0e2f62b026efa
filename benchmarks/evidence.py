"""The README evidence: each method against its own baseline, in the regime its paper claims an effect, run
with ``python -m timm_mixplug compare`` (3 seeds, paired deltas with 95 % intervals).

    python benchmarks/evidence.py --data ../shared/data --regimes noaug    # one regime (resumable)
    python benchmarks/evidence.py --report                                 # tables of everything finished
    python benchmarks/evidence.py --data ../shared/data --regimes aug_long --seeds 0,1,2,3,4,5,6,7   # 8 seeds
    python benchmarks/evidence.py --data ../shared/data --regimes aug_long --seeds 0,1,2,3,4,5,6,7 --methods bcplus
    python benchmarks/evidence.py --data ../shared/data --regimes aug_long --fp32 --test10k   # final weights, 10,000 images

Development data: ``--data`` is the CIFAR-10 folder of this project's development layout (``cifar10_train_subset10k``,
1,000 training images per class, and ``cifar10_test``); substitute any folder with those two npz files.
Regimes (all ResNet-20, SGD with momentum 0.9, cosine, 1 warm-up epoch (``dml``: 5), bf16 autocast except
``aux``, batch 64, 1 thread per run, evaluation on 3,000 test images, 300 per class, every 5 epochs and at the
end):

* ``noaug``: 500 images per class, no augmentation, 30 epochs: plain CE overfits; BC, BC+, mixup against CE.
* ``aug_long``: the same with pad-crop 4 + flip for 120 epochs, long enough for the augmented CE to overfit.
* ``dml``: two ResNet-20 peers with and without superclass mixup, against one model (pad-crop + flip, 60
  epochs, 5 warm-up epochs: with 1, the jump to lr 0.1 sent every DML run's peers to chance, loss ln 10, and
  one seed's peer never left it; those runs are kept in ``benchmarks/evidence/dml-warmup1/``). CIFAR-10's
  classes grouped by their WordNet hypernyms into 4 superclasses: motor vehicles (automobile, truck), craft
  (airplane, ship), mammals (cat, deer, dog, horse), other vertebrates (bird, frog).
* ``nh``: importance-sampled views (M = 4, device pad-crop + flip) against the same views sampled uniformly
  (M = 1: one random view has the distribution of a uniform choice among M i.i.d. views), 60 epochs.
* ``aux``: auxiliary superclass + crop-position heads (device pad-crop + flip) against CE with the loader's
  pad-crop + flip (the same augmentation: both pad with the mean colour), 60 epochs, in fp32: it was first run
  on a CPU without native bf16 (AVX2), where bf16 autocast is emulated and a step takes 10x its fp32 time.
* ``lt``: CIFAR-10-LT at one fifth scale: all 1,000 images per class made long-tailed with imbalance 100
  (1000 ... 10 images per class, 2,478 in all); CE, GLMC and GLMC + NT-Xent on GLMC's schedule shape (lr 0.01,
  weight decay 5e-3, batch 64, cosine; 100 epochs instead of 200), with many / medium / few-shot top-1.
* ``lt_clr``: the ``lt`` setup, diagnosing GLMC + NT-Xent against GLMC: NT-Xent weight 0.1 and 0.3, GLMC's
  consistency weight 1 (its CIFAR-10-LT value) without and with the NT-Xent, and two of ours: the NT-Xent
  without same-class negatives, and with its own projection; it reuses the ``lt`` runs of ``glmc`` and ``glmc_clr``. Per-term gradient norms: ``benchmarks/glmc_grad_norms.py``.

Every finished run's small result file is copied to ``benchmarks/evidence/<regime>/`` (committed), so a later
sitting continues where this one stopped and the tables can be rebuilt without the run folders. On a GPU,
``--device cuda --jobs 8`` trains 8 runs at once on it, kept apart (``output/evidence-cuda``,
``benchmarks/evidence/cuda/<regime>/``): a regime's runs are never a mix of devices; there every run evaluates on
all 10,000 CIFAR-10 test images (``test10k``) and warms up for at least 5 epochs, stepped every update
(``--sched-on-updates``: no run starts with a jump in the learning rate). ``--fp32`` drops the bf16 autocast (for a CPU without native bf16),
its runs kept apart the same way (``benchmarks/evidence/fp32/<regime>/``). ``--test10k`` trains nothing: it
evaluates the final weights of the finished CPU runs whose run folders are still there on all 10,000 test images
(``test10k.json`` beside their results; ``--report`` writes ``test10k.md``, the primary comparison on them).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from timm_mixplug.compare.stats import paired_delta, t_quantile

REPO = Path(__file__).resolve().parents[1]
KEEP = REPO / 'benchmarks' / 'evidence'
AUG = ['--pad-crop', '4', '--hflip', '0.5', '--color-jitter', '0']


def setup(train_split: str, epochs: int, lr: str, wd: str, aug, extra=(), bf16: bool = True, warmup: int = 1):
    """train.py flags of a regime (``{data}`` is the data folder)."""
    return (['--dataset', 'npz', '--data-dir', '{data}', '--train-split', train_split, '--val-split', 'test3k',
             '--model', 'resnet20_cifar', '--img-size', '32', '--epochs', str(epochs), '-b', '64', '--opt', 'sgd',
             '--momentum', '0.9', '--lr', lr, '--sched', 'cosine', '--warmup-epochs', str(warmup), '--weight-decay', wd,
             '--smoothing', '0'] + list(aug) + (['--amp', '--amp-dtype', 'bfloat16'] if bf16 else [])
            + ['--workers', '0', '--val-interval', '5', '--log-interval', '1000'] + list(extra))


WORDNET4 = {'motor_vehicle': ['automobile', 'truck'], 'craft': ['airplane', 'ship'],
            'mammal': ['cat', 'deer', 'dog', 'horse'], 'other_vertebrate': ['bird', 'frog']}
# regime: (methods, baseline, other baselines, setup flags, methods-file entries)
REGIMES = {
    'noaug': (['ce', 'bc', 'bcplus', 'mixup'], 'ce', [], setup('train500', 30, '0.1', '5e-4', ['--no-aug']), {}),
    'aug_long': (['ce', 'bc', 'bcplus', 'mixup'], 'ce', [], setup('train500', 120, '0.1', '5e-4', AUG), {}),
    'dml': (['dml', 'dml_superclass', 'ce'], 'dml', ['ce'], setup('train500', 60, '0.1', '5e-4', AUG, warmup=5),
            {'dml_superclass': ['--task', 'dml', '--mix', 'superclass', '--superclass-map', '{data}/wordnet4.yaml']}),
    'nh': (['nh_uniform', 'nh'], 'nh_uniform', [], setup('train500', 60, '0.1', '5e-4', []), {}),
    'aux': (['ce', 'aux'], 'ce', [], setup('train500', 60, '0.1', '5e-4', [], bf16=False),
            {'ce': AUG, 'aux': ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--no-aug',
                                '--superclass-map', '{data}/wordnet4.yaml']}),
    'lt': (['ce', 'glmc', 'glmc_clr'], 'ce', ['glmc'],
           setup('train1000', 100, '0.01', '5e-3', AUG, ['--imb-factor', '100']), {}),
    'lt_clr': (['glmc', 'glmc_clr', 'glmc_clr_w01', 'glmc_clr_w03', 'glmc_cw1', 'glmc_clr_excl', 'glmc_clr_cw1',
                'glmc_clr_own'], 'glmc', [],
               setup('train1000', 100, '0.01', '5e-3', AUG, ['--imb-factor', '100']),
               {'glmc_clr_w01': ['--task', 'glmc', '--glmc-clr', '--glmc-clr-weight', '0.1'],
                'glmc_clr_w03': ['--task', 'glmc', '--glmc-clr', '--glmc-clr-weight', '0.3'],
                'glmc_cw1': ['--task', 'glmc', '--glmc-contrast-weight', '1'],
                'glmc_clr_excl': ['--task', 'glmc', '--glmc-clr', '--glmc-clr-exclude-same-class'],
                'glmc_clr_cw1': ['--task', 'glmc', '--glmc-clr', '--glmc-contrast-weight', '1'],
                'glmc_clr_own': ['--task', 'glmc', '--glmc-clr', '--glmc-clr-own-projector']}),
}
# regime -> a regime whose committed runs of the same methods it reuses (identical setup and method flags)
REUSE = {'lt_clr': 'lt'}
# the primary comparison of each seed paper, fixed before the runs: (label, regime, method, baseline, shot group)
PRIMARY = (
    ('BC+ vs CE', 'aug_long', 'bcplus', 'ce', None),
    ('GLMC + NT-Xent vs GLMC, few-shot top-1', 'lt', 'glmc_clr', 'glmc', 'few'),
    ('DML + superclass mixup vs DML', 'dml', 'dml_superclass', 'dml', None),
    ('importance sampling vs uniform', 'nh', 'nh', 'nh_uniform', None),
    ('auxiliary heads vs none', 'aux', 'aux', 'ce', None),
)


def make_data(src: Path, dst: Path) -> None:
    """train500 / train1000 (per class, seeded) and test3k (300 per class) npz files, and the WordNet map."""
    dst.mkdir(parents=True, exist_ok=True)
    tr, te = np.load(src / 'cifar10_train_subset10k.npz'), np.load(src / 'cifar10_test.npz')
    rng = np.random.RandomState(0)
    perm = [rng.permutation(np.where(tr['y'] == c)[0]) for c in range(10)]  # the file is sorted by class
    for n in (500, 1000):
        if not (dst / f'train{n}.npz').is_file():
            idx = np.concatenate([p[:n] for p in perm])
            np.savez(dst / f'train{n}.npz', x=tr['x'][idx], y=tr['y'][idx], classes=tr['classes'])
    if not (dst / 'test3k.npz').is_file():
        idx = np.concatenate([np.where(te['y'] == c)[0][:300] for c in range(10)])
        np.savez(dst / 'test3k.npz', x=te['x'][idx], y=te['y'][idx], classes=te['classes'])
    if not (dst / 'test10k.npz').is_file():
        np.savez(dst / 'test10k.npz', x=te['x'], y=te['y'], classes=te['classes'])
    import yaml
    (dst / 'wordnet4.yaml').write_text(yaml.safe_dump(WORDNET4))


def _variant(device: str, fp32: bool) -> str:
    """'' for the committed CPU + bf16 runs, else the folder that keeps a variant's runs apart."""
    return '-'.join(p for p in ('' if device == 'cpu' else device, 'fp32' if fp32 else '') if p)


def _accelerator_setup(flags):
    """An accelerator's runs (kept apart): evaluation on all 10,000 test images, and a warm-up of at least 5
    epochs stepped every update, so that no run starts with a jump in the learning rate."""
    out = [('test10k' if f == 'test3k' else f) for f in flags]
    i = out.index('--warmup-epochs')
    out[i + 1] = str(max(5, int(out[i + 1])))
    return out + ['--sched-on-updates']


def _kept(regime: str, variant: str) -> Path:
    """The committed folder of a regime's runs of one variant ('' for CPU + bf16)."""
    return KEEP / variant / regime if variant else KEEP / regime


def _committed(sources, methods):
    """The committed result files (``<method>-s<seed>.json``) of these methods in these folders."""
    return sorted(f for src in sources for f in src.glob('*-s*.json') if f.name.rsplit('-s', 1)[0] in methods)


def compare(regime: str, data: Path, out: Path, report_only: bool, baseline=None, jobs: int = 1,
            device: str = 'cpu', seeds: str = '0,1,2', only=None, fp32: bool = False) -> int:
    methods, base, _, flags, extra = REGIMES[regime]
    if only:  # a subset to train now, the baseline last; the report covers them all again
        methods = [m for m in methods if m in only and m != (baseline or base)] + [baseline or base]
    if device != 'cpu':
        flags = _accelerator_setup(flags) + ['--device', device]
    if fp32:
        flags = [f for f in flags if f not in ('--amp', '--amp-dtype', 'bfloat16')]
    keep = _kept(regime, _variant(device, fp32))
    results = out / regime / 'results'
    committed = _committed([keep] + ([keep.parent / REUSE[regime]] if regime in REUSE else []), methods)
    for f in committed:  # not trained again
        if not (results / f.name).is_file():
            results.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, results / f.name)
    if report_only:  # every committed seed of these methods
        seeds = ','.join(sorted({f.stem.rsplit('-s', 1)[1] for f in committed}, key=int)) or seeds
    cmd = [sys.executable, '-m', 'timm_mixplug', 'compare', '--methods', ','.join(methods), '--seeds', seeds,
           '--baseline', baseline or base, '--jobs', str(jobs), '--threads', '1', '--output', str(out / regime)]
    if extra:
        mf = out / f'{regime}-methods.yaml'
        import yaml
        mf.write_text(yaml.safe_dump({k: [a.replace('{data}', str(data)) for a in v] for k, v in extra.items()}))
        cmd += ['--methods-file', str(mf)]
    if report_only:
        cmd.append('--report-only')
    cmd += ['--'] + [a.replace('{data}', str(data)) for a in flags]
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:  # compare has the Ctrl-C too: it waits for its runs to save their state
        proc.wait()
        raise
    finally:  # every finished run is kept, also after Ctrl-C
        _keep(out, regime, keep, results, baseline)
    return rc


def _keep(out: Path, regime: str, keep: Path, results: Path, baseline) -> None:
    keep.mkdir(parents=True, exist_ok=True)
    for f in sorted(results.glob('*.json')):
        shutil.copy2(f, keep / f.name)
    for f in ('compare.md', 'compare.json', 'compare.png'):
        if (out / regime / f).is_file():
            shutil.copy2(out / regime / f, keep / (f if baseline is None else f.replace('compare', f'vs-{baseline}')))


def _recorded_data(regime: str, default: Path) -> Path:
    """The data folder a regime's committed runs recorded (their ``--data-dir``): a report rebuilt from any
    output folder prints the setup they were trained with."""
    for f in sorted((KEEP / regime).glob('*-s*.json')):
        args = json.loads(f.read_text()).get('args', [])
        if '--data-dir' in args:
            return Path(args[args.index('--data-dir') + 1])
    return default


# The CPU runs of a regime, pooled in the primary table: the same data, schedule and 3,000 test images, with
# and without bf16 autocast (``--fp32``, for a CPU without native bf16); each seed's pair shares its precision.
# The accelerator's runs (10,000 test images, longer warm-up) are another setup and stay apart.
POOLED = (('', 'bf16'), ('fp32', 'fp32'))


def _finals(regime: str, method: str, shot) -> dict:
    """(precision, seed) -> final top-1 (or a shot group's top-1) of a method's committed CPU runs."""
    out = {}
    for variant, precision in POOLED:  # in POOLED's order, by seed within each
        runs = [json.loads(f.read_text()) for f in (KEEP / variant / regime).glob(f'{method}-s*.json')]
        for r in sorted(runs, key=lambda r: r['seed']):
            out[precision, r['seed']] = r['shots'][shot] if shot else r['final']
    return out


def _by_precision(delta: dict):
    """(n, per-seed text) of a paired delta, split by precision where it pools more than one."""
    groups = {}
    for (precision, _), v in zip(delta['seeds'], delta['values']):
        groups.setdefault(precision, []).append(_signed(v))
    if len(groups) == 1:
        return str(delta['n']), ', '.join(next(iter(groups.values())))
    n = f'{delta["n"]} ({", ".join(f"{len(v)} {p}" for p, v in groups.items())})'
    return n, '; '.join(f'{p}: {", ".join(v)}' for p, v in groups.items())


def _signed(v: float) -> str:
    return f'{v:+.2f}'.replace('-', '\u2212')


def _bonferroni(delta: dict, k: int):
    """(low, high) of ``paired_delta``'s interval widened to level 1 - 0.05 / k (k comparisons)."""
    half = t_quantile(1 - 0.05 / (2 * k), delta['n'] - 1) * delta['std'] / delta['n'] ** 0.5
    return delta['mean'] - half, delta['mean'] + half


def primary_table() -> str:
    """README's primary comparisons: the paired per-seed difference of each, its 95 % t-interval and the
    Bonferroni interval over all of them (level 1 - 0.05 / k each), from the committed runs."""
    k = len(PRIMARY)
    rows = [f'| comparison (regime) | n | mean Δ | 95 % interval | {100 - 5 / k:g} % interval ({k} comparisons) '
            f'| per seed | called |', '|---|---|---|---|---|---|---|']
    for label, regime, method, base, shot in PRIMARY:
        delta = paired_delta(_finals(regime, method, shot), _finals(regime, base, shot))
        ci = [delta['ci95'], _bonferroni(delta, k)]
        lo, hi = ci[1]
        n, per_seed = _by_precision(delta)
        rows.append(f'| {label} (`{regime}`) | {n} | {_signed(delta["mean"])} | '
                    + ' | '.join(f'[{_signed(l)}, {_signed(h)}]' for l, h in ci)
                    + f' | {per_seed} | {"yes" if lo > 0 or hi < 0 else "no"} |')
    return '\n'.join(rows) + '\n'


TEST10K = 'test10k.json'  # in a kept folder: run name -> top-1 of its final weights on all 10,000 test images


def eval_test10k(regime: str, out: Path, keep: Path) -> int:
    """Evaluate the final weights (``last.safetensors``) of each kept run of ``regime`` whose run folder is still
    under ``out`` on all 10,000 CIFAR-10 test images (the CPU runs validate on 3,000), once per run, into
    ``keep/test10k.json``. Returns 1 (after one line) where an evaluation fails, else 0."""
    path = keep / TEST10K
    done = json.loads(path.read_text()) if path.is_file() else {}
    for f in sorted(keep.glob('*-s*.json')):
        weights = out / regime / 'runs' / f.stem / 'last.safetensors'
        if f.stem in done or not weights.is_file():
            continue
        cmd = [sys.executable, '-m', 'timm_mixplug', 'validate', '--resume', str(weights), '--val-split', 'test10k',
               '--workers', '0', '--threads', '1']
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        m = re.search(r'Eval: loss: \S+\s+top1: (\d+\.\d+)', res.stdout + res.stderr)
        if res.returncode or not m:
            last = (res.stderr.strip().splitlines() or ['no output'])[-1]
            print(f'evidence.py: evaluating {weights} on test10k failed: {last}', file=sys.stderr)
            return 1
        done[f.stem] = float(m.group(1))
        path.write_text(json.dumps(dict(sorted(done.items())), indent=1) + '\n')
        print(f'evidence.py: {regime}/{f.stem}: top-1 {done[f.stem]:.2f} % on all 10,000 test images', flush=True)
    return 0


def test10k_table(folder: Path, regime: str) -> str:
    """The primary comparisons of ``regime`` on all 10,000 test images, from ``folder/test10k.json`` (the runs'
    final weights), beside the same seeds' difference on the 3,000 images they validated on."""
    tops = json.loads((folder / TEST10K).read_text())
    rows = ['| comparison (regime) | seeds | mean Δ, 10,000 images | 95 % interval | per seed | mean Δ, 3,000 images '
            '(same seeds) |', '|---|---|---|---|---|---|']
    for label, reg, method, base, shot in PRIMARY:
        if reg != regime or shot:
            continue
        on = {m: {int(k.rsplit('-s', 1)[1]): v for k, v in tops.items() if k.rsplit('-s', 1)[0] == m}
              for m in (method, base)}
        delta = paired_delta(on[method], on[base])
        if delta['n'] < 2:
            continue
        finals = {m: {s: json.loads((folder / f'{m}-s{s}.json').read_text())['final'] for s in delta['seeds']}
                  for m in (method, base)}
        lo, hi = delta['ci95']
        rows.append(f'| {label} (`{regime}`) | {", ".join(map(str, delta["seeds"]))} | {_signed(delta["mean"])} | '
                    f'[{_signed(lo)}, {_signed(hi)}] | {", ".join(map(_signed, delta["values"]))} | '
                    f'{_signed(paired_delta(finals[method], finals[base])["mean"])} |')
    return '\n'.join(rows) + '\n'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', help='folder with cifar10_train_subset10k.npz and cifar10_test.npz (not needed with '
                                  '--report)')
    p.add_argument('--output', help='runs and reports (default: output/evidence, output/evidence-cuda with '
                                    '--device cuda)')
    p.add_argument('--regimes', default=','.join(REGIMES))
    p.add_argument('--seeds', default='0,1,2', help='seeds of every method (default: 0,1,2; more seeds add runs, '
                                                     'the finished ones are reused)')
    p.add_argument('--methods', help='train only these of each regime\'s methods (comma-separated; the baseline '
                                     'is always included; default: all)')
    p.add_argument('--report', action='store_true', help='rebuild the reports from the committed results only '
                                                         '(no data, no training)')
    p.add_argument('--jobs', type=int, default=1, help='runs at once, one thread each (default: 1)')
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'),
                   help='train on this device; cuda results are kept apart, in benchmarks/evidence/cuda/<regime> '
                        '(default: cpu)')
    p.add_argument('--fp32', action='store_true',
                   help='train without bf16 autocast (a CPU without native bf16 emulates it, about 16x slower); '
                        'the results are kept apart, in benchmarks/evidence/fp32/<regime>')
    p.add_argument('--test10k', action='store_true',
                   help='no training: evaluate the final weights of the finished runs still under --output on all '
                        '10,000 test images (once each; kept in benchmarks/evidence/<variant>/<regime>/test10k.json)')
    a = p.parse_args(argv)
    if a.test10k and (a.report or a.device != 'cpu'):
        p.error('--test10k evaluates the CPU runs on the data (give --data, not --report); an accelerator\'s runs '
                'already validate on all 10,000 test images')
    if not a.report:
        if not a.data:
            p.error('--data is required to train (only --report works without it)')
        src = Path(a.data)
        if not (src / 'cifar10_train_subset10k.npz').is_file() or not (src / 'cifar10_test.npz').is_file():
            p.error(f'--data {src} needs cifar10_train_subset10k.npz and cifar10_test.npz')
    regimes = a.regimes.split(',')
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        p.error(f'unknown regime {", ".join(map(repr, unknown))}; known: {", ".join(REGIMES)}')
    named = a.methods.split(',') if a.methods else []
    stray = [m for m in named if not any(m in REGIMES[r][0] for r in regimes)]
    if stray:
        p.error(f'--methods: {", ".join(map(repr, stray))} is not a method of {", ".join(regimes)}')
    if a.jobs < 1:
        p.error(f'--jobs {a.jobs}: must be >= 1')
    variant = _variant(a.device, a.fp32)
    out = Path(a.output or REPO / 'output' / ('evidence' + (f'-{variant}' if variant else '')))
    data = Path(os.path.relpath(out / 'data', REPO))  # as the runs record it
    if not a.report:
        make_data(src, data)
    if a.test10k:
        return max([eval_test10k(r, out, _kept(r, variant)) for r in regimes] + [0])
    rc = 0
    try:
        for regime in regimes:
            used = _recorded_data(regime, data) if a.report else data
            rc |= compare(regime, used, out, a.report, jobs=a.jobs, device=a.device, seeds=a.seeds, only=named,
                          fp32=a.fp32)
            for other in REGIMES[regime][2]:
                rc |= compare(regime, used, out, True, baseline=other, device=a.device, seeds=a.seeds, fp32=a.fp32)
    except KeyboardInterrupt:
        print('evidence.py: interrupted; the same command continues (finished runs are kept in '
              f'{KEEP.relative_to(REPO)}/)', file=sys.stderr)
        return 130
    if a.device == 'cpu':  # both CPU precisions feed README's primary comparisons
        (KEEP / 'primary.md').write_text(primary_table())
        for folder in [_kept(r, v) for r in regimes for v, _ in POOLED]:
            if (folder / TEST10K).is_file():
                (folder / 'test10k.md').write_text(test10k_table(folder, folder.name))
    return rc


if __name__ == '__main__':
    sys.exit(main())
