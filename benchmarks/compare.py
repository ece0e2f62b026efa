"""Evidence: each method against the baseline it claims to beat, same data / seeds / schedule, mean +- std.

    python benchmarks/compare.py --data-dir ../shared/data --output output/evidence --figure docs/evidence.png

Every run is one ``train.py`` process (what users run); ``--jobs`` runs execute at once with ``--threads``
torch threads each (2 x 1 thread beats 1 x 2 threads for ResNet-20-sized models on CPU). Regimes, all
ResNet-20 (``resnet20_cifar``), SGD + Nesterov 0.9, lr 0.05 cosine, 1 warm-up epoch, wd 5e-4, batch 32, 30 epochs,
bf16 autocast (``--precision``; one fp32 baseline run beside it):

* ``balanced``: a CIFAR-10 subset of ``--per-class`` training images per class (drawn with a fixed seed from
  ``cifar10_train_subset10k``, which is sorted by class), small enough for the baseline to overfit, tested on
  ``--test-per-class`` images per class of ``cifar10_test``. BC, BC+ and timm's mixup vs plain CE, with and
  without the standard pad-crop 4 + flip; DML (two ResNet-20 peers) with superclass mixup vs DML without
  mixing vs one model (CIFAR-10's vehicles / animals map: the only hierarchy with data here); importance-
  sampled views (M = 4, device pad-crop + flip) vs the same views sampled uniformly (M = 1: one random view,
  the same distribution as a uniform choice among M i.i.d. views); aux heads (superclass + crop position)
  vs none (the loader's pad-crop + flip, i.e. the same augmentation, since both pad with the mean colour).
* ``longtail``: ``--lt-max`` images per class made long-tailed with ``--imb-factor`` (200 and 100: 200, 119, 71,
  43, 25, 15, 9, 5, 3, 2 images, 492 in all; many > 100, few <= 20), plain CE vs GLMC vs GLMC + NT-Xent, with
  many / medium / few-shot top-1 (the GLMC and CE runs share the schedule above, not GLMC's own recipe).

Reported metric: final-epoch top-1 (DML: mean of the two peers, the ensemble in the notes). Results go to
``--output`` (runs, ``results.json``, ``evidence.md``) and the figure to ``--figure``. Finished runs are
reused, so an interrupted command continues where it stopped; ``--report-only`` only redraws.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

AUG = ['--pad-crop', '4', '--hflip', '0.5', '--color-jitter', '0']
NOAUG = ['--no-aug']
NH = ['--task', 'nonharmonic', '--nh-device-views', '--no-aug']
LT = ['--imb-factor', '{imb}']

# name: (data, train.py arguments, relative cost for scheduling)
RUNS = {
    'ce': ('balanced', AUG, 1.0),
    'ce_fp32': ('balanced', AUG, 1.7),  # the baseline without --amp: the bf16 / fp32 check
    'mixup': ('balanced', AUG + ['--mix', 'mixup'], 1.0),
    'bc': ('balanced', AUG + ['--mix', 'bc'], 1.0),
    'bcplus': ('balanced', AUG + ['--mix', 'bcplus'], 1.0),
    'ce_noaug': ('balanced', NOAUG, 1.0),
    'mixup_noaug': ('balanced', NOAUG + ['--mix', 'mixup'], 1.0),
    'bc_noaug': ('balanced', NOAUG + ['--mix', 'bc'], 1.0),
    'bcplus_noaug': ('balanced', NOAUG + ['--mix', 'bcplus'], 1.0),
    'dml': ('balanced', AUG + ['--task', 'dml', '--dml-peers', '2'], 2.0),
    'dml_superclass': ('balanced', AUG + ['--task', 'dml', '--dml-peers', '2', '--mix', 'superclass',
                                          '--superclass-map', 'cifar10'], 2.0),
    'nh_uniform': ('balanced', NH + ['--nh-views', '1'], 1.3),
    'nh': ('balanced', NH + ['--nh-views', '4'], 2.5),
    'aux': ('balanced', ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--superclass-map', 'cifar10',
                         '--no-aug'], 1.1),
    # the same four with a schedule long enough for the augmented baseline to overfit (--long-epochs)
    'ce_long': ('balanced', AUG, 3.0),
    'mixup_long': ('balanced', AUG + ['--mix', 'mixup'], 3.0),
    'bc_long': ('balanced', AUG + ['--mix', 'bc'], 3.0),
    'bcplus_long': ('balanced', AUG + ['--mix', 'bcplus'], 3.0),
    'dml_long': ('balanced', AUG + ['--task', 'dml', '--dml-peers', '2'], 6.0),
    'dml_superclass_long': ('balanced', AUG + ['--task', 'dml', '--dml-peers', '2', '--mix', 'superclass',
                                               '--superclass-map', 'cifar10'], 6.0),
    'ce_lt': ('longtail', AUG + LT, 0.5),
    'glmc_lt': ('longtail', AUG + LT + ['--task', 'glmc'], 1.0),
    'glmc_clr_lt': ('longtail', AUG + LT + ['--task', 'glmc', '--glmc-clr'], 1.1),
    'ce_lt_long': ('longtail', AUG + LT, 1.5),
    'glmc_lt_long': ('longtail', AUG + LT + ['--task', 'glmc'], 3.0),
    'glmc_clr_lt_long': ('longtail', AUG + LT + ['--task', 'glmc', '--glmc-clr'], 3.3),
}
# long runs after the main set, one comparison at a time (a stopped command leaves whole comparisons)
STAGE = {'ce_long': 1, 'mixup_long': 1, 'bc_long': 1, 'bcplus_long': 1, 'ce_lt_long': 2, 'glmc_lt_long': 2,
         'glmc_clr_lt_long': 2, 'dml_long': 3, 'dml_superclass_long': 3}

# (panel, title, [(method, baseline)]): what the table and the figure compare
COMPARISONS = [
    ('bc_noaug', 'BC / BC+ / mixup, no augmentation', [('mixup_noaug', 'ce_noaug'), ('bc_noaug', 'ce_noaug'),
                                                       ('bcplus_noaug', 'ce_noaug')]),
    ('bc_aug', 'BC / BC+ / mixup, pad-crop + flip', [('mixup', 'ce'), ('bc', 'ce'), ('bcplus', 'ce')]),
    ('bc_long', 'BC / BC+ / mixup, pad-crop + flip, long', [('mixup_long', 'ce_long'), ('bc_long', 'ce_long'),
                                                            ('bcplus_long', 'ce_long')]),
    ('nh_aux', 'importance sampling (003), aux heads (002)', [('nh', 'nh_uniform'), ('aux', 'ce')]),
    ('dml', 'DML + superclass mixup (seed 001)', [('dml', 'ce'), ('dml_superclass', 'dml'),
                                                  ('dml_superclass', 'ce')]),
    ('dml_long', 'DML + superclass mixup, long', [('dml_long', 'ce_long'), ('dml_superclass_long', 'dml_long'),
                                                  ('dml_superclass_long', 'ce_long')]),
    ('longtail', 'GLMC, GLMC + NT-Xent (seed 004)', [('glmc_lt', 'ce_lt'), ('glmc_clr_lt', 'glmc_lt'),
                                                    ('glmc_clr_lt', 'ce_lt')]),
    ('longtail_long', 'GLMC, GLMC + NT-Xent, long', [('glmc_lt_long', 'ce_lt_long'),
                                                     ('glmc_clr_lt_long', 'glmc_lt_long'),
                                                     ('glmc_clr_lt_long', 'ce_lt_long')]),
]
PRECISION = {'fp32': [], 'bf16': ['--amp', '--amp-dtype', 'bfloat16'],
             'bf16-cl': ['--amp', '--amp-dtype', 'bfloat16', '--channels-last']}


def make_subset(src: Path, dst: Path, per_class: int, seed: int = 0) -> None:
    """``per_class`` images of each class of ``src`` (a seeded draw, then shuffled) as ``dst``."""
    if dst.exists():
        return
    with np.load(src) as f:
        x, y, classes = f['x'], f['y'], f['classes']
    rng = np.random.RandomState(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(len(classes))])
    idx = rng.permutation(idx)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix('.tmp.npz')
    np.savez(tmp, x=x[idx], y=y[idx], classes=classes)
    os.replace(tmp, dst)


def read_summary(run_dir: Path):
    path = run_dir / 'summary.csv'
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v not in ('', None)} for r in csv.DictReader(f)]


def score(row: dict) -> float:
    """Final top-1 of one model: the mean of the DML peers, else eval_top1."""
    peers = [v for k, v in row.items() if k.startswith('eval_peer') and k.endswith('_top1')]
    return statistics.mean(peers) if peers else row['eval_top1']


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_all(args, todo, common, out: Path, data_dirs):
    """Run the missing (method, seed) runs, ``--jobs`` at a time; returns {run name: wall seconds}."""
    walls_path = out / 'walls.json'
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    pending = []
    for method, seed in todo:
        data, margs, cost = RUNS[method]
        name = f'{method}-s{seed}'
        rows = read_summary(out / 'runs' / name)
        if len(rows) >= epochs_of(method, args) and name in walls:  # finished: reused
            continue
        prec = [] if method.endswith('_fp32') else PRECISION[args.precision]
        margs = [a.format(imb=args.imb_factor) for a in margs]
        cmd = [sys.executable, str(REPO / 'train.py'), *common, *data_dirs[data], *margs, *prec, '--seed', str(seed),
               '--epochs', str(epochs_of(method, args)),
               '--output', str(out / 'runs'), '--experiment', name]
        pending.append(((method.endswith('_fp32'), STAGE.get(method, 0), seed, -cost), name, cmd))
    # seed by seed (a stopped command leaves whole seeds), longest first within a seed (the jobs end together),
    # the fp32 reference last
    pending.sort(key=lambda p: p[0])

    def one(item):
        _, name, cmd = item
        run_dir = out / 'runs' / name
        if run_dir.exists():  # an interrupted run starts over
            for f in run_dir.iterdir():
                f.unlink()
        (out / 'logs').mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(out / 'logs' / f'{name}.log', 'w') as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall, cpu = time.time() - t0, usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            tail = (out / 'logs' / f'{name}.log').read_text()[-3000:]
            print(f'{name} FAILED ({wall:.0f} s):\n{tail}', flush=True)
            return name, None
        row = read_summary(run_dir)[-1]
        print(f'{time.strftime("%H:%M:%S")} {name:<22} top-1 {score(row):6.2f}  wall {wall:5.0f} s  cpu {cpu:5.0f} s',
              flush=True)
        return name, dict(wall=wall, cpu=cpu)

    print(f'{len(pending)} runs to do, {args.jobs} at a time with {args.threads} thread(s) each', flush=True)
    git = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=REPO, capture_output=True, text=True)
    walls.setdefault('_code', []).append(git.stdout.strip() or 'unknown')  # the code each invocation ran
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as ex:
        for name, wall in ex.map(one, pending):
            if wall is not None:
                walls[name] = wall
                walls_path.write_text(json.dumps(walls, indent=1))
    if pending:  # elapsed time of the invocations that trained (a resumed command adds up)
        walls['_elapsed'] = walls.get('_elapsed', 0.0) + time.time() - t0
        walls_path.write_text(json.dumps(walls, indent=1))
    return walls


def epochs_of(method: str, args) -> int:
    return args.long_epochs if method.endswith('_long') else args.epochs


def collect(methods, seeds, out: Path, args, walls):
    """{method: {'final': [per seed], 'curves': [[top-1 per epoch]], 'rows', 'walls', 'cpu', 'seeds'}}"""
    res = {}
    for m in methods:
        r = res[m] = dict(final=[], curves=[], rows=[], walls=[], cpu=[], seeds=[])
        epochs = epochs_of(m, args)
        for s in seeds:
            rows = read_summary(out / 'runs' / f'{m}-s{s}')
            if len(rows) < epochs:
                continue
            r['final'].append(score(rows[-1]))
            r['curves'].append([score(x) for x in rows[:epochs]])
            r['rows'].append(rows[-1])
            w = walls.get(f'{m}-s{s}', {})
            r['walls'].append(w.get('wall', float('nan')))
            r['cpu'].append(w.get('cpu', float('nan')))
            r['seeds'].append(s)
    return res


def notes(m, r) -> str:
    rows = r['rows']
    if not rows:
        return ''
    if 'eval_many' in rows[0]:
        return ' / '.join(f'{k} {mean_std([x["eval_" + k] for x in rows])[0]:.1f}' for k in ('many', 'medium', 'few'))
    if any(k.startswith('eval_peer') for k in rows[0]):
        return f'ensemble {mean_std([x["eval_top1"] for x in rows])[0]:.2f}'
    return ''


def table(res, args, regimes) -> str:
    def ms(m):
        xs = res[m]['final']
        if not xs:
            return 'n/a'
        mu, sd = mean_std(xs)
        return f'{mu:.2f} ± {sd:.2f}'

    lines = ['| regime | method | top-1 (%) | baseline | baseline top-1 (%) | Δ per seed (mean ± std) | '
             'seeds | wall / run (s) | CPU / run (s) | notes |', '|---|---|---|---|---|---|---|---|---|---|']
    for panel, title, pairs in COMPARISONS:
        for m, base in pairs:
            a, b = res[m], res[base]
            if not a['final'] and not b['final']:
                continue
            common = [s for s in a['seeds'] if s in b['seeds']]
            d = [a['final'][a['seeds'].index(s)] - b['final'][b['seeds'].index(s)] for s in common]
            dd = f'{mean_std(d)[0]:+.2f} ± {mean_std(d)[1]:.2f}' if d else 'n/a'
            wall = statistics.mean(a['walls']) if a['walls'] else float('nan')
            cpu = statistics.mean(a['cpu']) if a['cpu'] else float('nan')
            nb = notes(base, b)
            note = '; '.join(x for x in (notes(m, a), f'baseline {nb}' if nb else '') if x)
            lines.append(f'| {regimes[panel]} | {m} | {ms(m)} | {base} | {ms(base)} | {dd} | '
                         f'{",".join(map(str, a["seeds"]))} | {wall:.0f} | {cpu:.0f} | {note} |')
    if 'ce_fp32' in res and res['ce_fp32']['final']:
        a = res['ce_fp32']
        lines.append(f'| {regimes["bc_aug"]}, fp32 | ce_fp32 | {ms("ce_fp32")} | ce ({args.precision}) | {ms("ce")} '
                     f'| | {",".join(map(str, a["seeds"]))} | {statistics.mean(a["walls"]):.0f} | '
                     f'{statistics.mean(a["cpu"]):.0f} | precision check (ce: {statistics.mean(res["ce"]["cpu"]):.0f} s CPU) |')
    lt = [m for m in ('ce_lt', 'glmc_lt', 'glmc_clr_lt', 'ce_lt_long', 'glmc_lt_long', 'glmc_clr_lt_long')
          if res[m]['rows']]
    if lt:
        lines += ['', f'Long-tailed regime ({regimes["longtail"]}; `*_long`: {args.long_epochs} epochs), final top-1 '
                  f'(%) per shot group, mean ± std:', '',
                  '| method | many (n > 100) | medium | few (n <= 20) | all | seeds |', '|---|---|---|---|---|---|']
        for m in lt:
            cells = []
            for k in ('many', 'medium', 'few', 'top1'):
                mu, sd = mean_std([x['eval_' + k] for x in res[m]['rows']])
                cells.append(f'{mu:.2f} ± {sd:.2f}')
            lines.append(f'| {m} | {" | ".join(cells)} | {",".join(map(str, res[m]["seeds"]))} |')
    return '\n'.join(lines)


def _colour(i, m, bases):
    return '0.6' if m in bases else f'C{i}'


def result_bars(ax, res, methods, bases):
    """Final top-1 per method: mean (bar), std (error bar) and each seed (dots)."""
    for i, m in enumerate(methods):
        mu, sd = mean_std(res[m]['final'])
        ax.bar(i, mu, yerr=sd, capsize=4, color=_colour(i, m, bases))
        ax.plot([i] * len(res[m]['final']), res[m]['final'], 'k.', ms=4)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=25, ha='right', fontsize=8)
    if methods:
        lo = min(min(res[m]['final']) for m in methods)
        hi = max(max(res[m]['final']) for m in methods)
        ax.set_ylim(max(0.0, lo - 0.3 * (hi - lo) - 2), hi + 0.15 * (hi - lo) + 1)


def shot_bars(ax, res, methods, bases):
    """Grouped bars: all / many / medium / few-shot top-1 per method (mean, std)."""
    groups = ('top1', 'many', 'medium', 'few')
    w = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        stats = [mean_std([r['eval_' + g] for r in res[m]['rows']]) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * w, [s[0] for s in stats], w,
               yerr=[s[1] for s in stats], capsize=2, color=_colour(i, m, bases), label=m)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(['all', 'many', 'medium', 'few'], fontsize=8)
    ax.legend(fontsize=7)


def figure(res, path: Path, args) -> bool:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib not installed: no figure', flush=True)
        return False
    panels = [c for c in COMPARISONS if any(res[m]['final'] for pair in c[2] for m in pair)]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.1 * cols, 3.6 * 2 * rows), squeeze=False)
    for j in range(len(panels), rows * cols):
        axes[2 * (j // cols), j % cols].axis('off')
        axes[2 * (j // cols) + 1, j % cols].axis('off')
    for j, (panel, title, pairs) in enumerate(panels):
        top, bottom = axes[2 * (j // cols), j % cols], axes[2 * (j // cols) + 1, j % cols]
        methods = list(dict.fromkeys([b for _, b in pairs] + [m for m, _ in pairs]))
        methods = [m for m in methods if res[m]['final']]
        bases = {b for _, b in pairs} - {m for m, _ in pairs}
        ax = top
        if panel.startswith('longtail'):
            shot_bars(ax, res, methods, bases)
            ax.set_title(f'{title}, imbalance {args.imb_factor}', fontsize=9)
        else:
            result_bars(ax, res, methods, bases)
            ax.set_title(title, fontsize=9)
        ax.set_ylabel('final top-1 (%)' if j % cols == 0 else '')
        ax.grid(axis='y', alpha=0.3)
        ax = bottom
        for i, m in enumerate(methods):
            c = np.array(res[m]['curves'])
            mu = c.mean(0)
            ep = np.arange(1, len(mu) + 1)
            ax.plot(ep, mu, color=_colour(i, m, bases), ls='--' if m in bases else '-', label=m)
            if len(c) > 1:
                ax.fill_between(ep, c.min(0), c.max(0), color=_colour(i, m, bases), alpha=0.15)
        ax.set_xlabel('epoch')
        ax.set_ylabel('eval top-1 (%): seed mean, range' if j % cols == 0 else '')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f'ResNet-20 on CIFAR-10, {args.per_class} training images per class (long-tailed: '
                 f'{args.lt_max} .. {args.lt_max // args.imb_factor}), {args.epochs} epochs (long: {args.long_epochs}), '
                 f'{args.precision}, '
                 f'seeds {" ".join(map(str, args.seeds))}; grey: baselines', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    from PIL import Image
    Image.open(path).convert('RGB').quantize(128).save(path, optimize=True)  # a small PNG for the README
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default='../shared/data', help='folder with the CIFAR-10 .npz files')
    ap.add_argument('--train-file', default='cifar10_train_subset10k')
    ap.add_argument('--test-file', default='cifar10_test')
    ap.add_argument('--per-class', type=int, default=50, help='training images per class (balanced regime)')
    ap.add_argument('--test-per-class', type=int, default=50, help='test images per class')
    ap.add_argument('--lt-max', type=int, default=200, help='images of the largest class (long-tailed regime)')
    ap.add_argument('--imb-factor', type=int, default=100, help='largest / smallest class (long-tailed regime)')
    ap.add_argument('--epochs', type=int, default=30)
    ap.add_argument('--long-epochs', type=int, default=100, help='epochs of the *_long runs')
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--methods', nargs='+', default=list(RUNS), choices=list(RUNS))
    ap.add_argument('--fp32-seeds', nargs='*', type=int, default=[0], help='seeds of the ce_fp32 reference run')
    ap.add_argument('--precision', default='bf16', choices=sorted(PRECISION))
    ap.add_argument('--jobs', type=int, default=2, help='train.py processes at once')
    ap.add_argument('--threads', type=int, default=1, help='torch threads per process')
    ap.add_argument('--output', default='output/evidence')
    ap.add_argument('--figure', default='docs/evidence.png')
    ap.add_argument('--report-only', action='store_true', help='tabulate and draw the finished runs only')
    ap.add_argument('extra', nargs='*', help='more train.py arguments for every run (after --)')
    args = ap.parse_args()

    out = Path(args.output)
    src, data = Path(args.data_dir), out / 'data'
    bal, test, lt = f'train{args.per_class}pc', f'test{args.test_per_class}pc', f'train{args.lt_max}pc'
    make_subset(src / f'{args.train_file}.npz', data / f'{bal}.npz', args.per_class)
    make_subset(src / f'{args.test_file}.npz', data / f'{test}.npz', args.test_per_class)
    make_subset(src / f'{args.train_file}.npz', data / f'{lt}.npz', args.lt_max)
    base = ['--dataset', 'npz', '--data-dir', str(data), '--val-split', test, '--num-classes', '10']
    data_dirs = {'balanced': base + ['--train-split', bal], 'longtail': base + ['--train-split', lt]}
    common = ['--model', 'resnet20_cifar', '--img-size', '32', '--crop-pct', '1.0', '-b', str(args.batch_size),
              '--validation-batch-size', '256', '--opt', 'sgd', '--momentum', '0.9', '--weight-decay', '5e-4',
              '--lr', str(args.lr), '--sched', 'cosine', '--warmup-epochs', '1', '--warmup-lr', str(args.lr / 10),
              '--workers', '0', '--log-interval', '1000', '--smoothing', '0',
              *args.extra]
    todo = [(m, s) for m in args.methods for s in (args.fp32_seeds if m.endswith('_fp32') else args.seeds)]
    walls_path = out / 'walls.json'
    if args.report_only:
        walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    else:
        walls = run_all(args, todo, common, out, data_dirs)
    res = collect(list(RUNS), sorted(set(args.seeds) | set(args.fp32_seeds)), out, args, walls)
    for m in res:  # the fp32 reference only for its seeds
        if m.endswith('_fp32'):
            continue
        keep = [i for i, s in enumerate(res[m]['seeds']) if s in args.seeds]
        for k in ('final', 'curves', 'rows', 'walls', 'cpu', 'seeds'):
            res[m][k] = [res[m][k][i] for i in keep]
    regimes = {p: f'{args.per_class}/class, {"no aug" if p == "bc_noaug" else "pad-crop+flip"}, {args.epochs} ep'
               for p, _, _ in COMPARISONS}
    regimes['bc_long'] = regimes['dml_long'] = f'{args.per_class}/class, pad-crop+flip, {args.long_epochs} ep'
    regimes['longtail_long'] = (f'long-tailed {args.lt_max}..{args.lt_max // args.imb_factor}/class, pad-crop+flip, '
                                f'{args.long_epochs} ep')
    regimes['longtail'] = (f'long-tailed {args.lt_max}..{args.lt_max // args.imb_factor}/class, pad-crop+flip, '
                           f'{args.epochs} ep')
    done = [walls[f'{m}-s{s}'] for m, s in todo if f'{m}-s{s}' in walls]
    code = ', '.join(dict.fromkeys(walls.get('_code', []))) or 'not recorded'
    head = (f'ResNet-20 on CIFAR-10 subsets of `{args.train_file}`: {args.per_class} training images per class '
            f'(long-tailed: {args.lt_max} per class made long-tailed with imbalance {args.imb_factor}), tested on '
            f'{args.test_per_class} images per class of `{args.test_file}`; {args.epochs} epochs (`*_long`: '
            f'{args.long_epochs}), batch '
            f'{args.batch_size}, lr {args.lr} cosine; precision {args.precision}; {args.jobs} train.py processes '
            f'at once, {args.threads} thread(s) each, {os.cpu_count()} cores. {len(done)} runs: elapsed '
            f'{walls.get("_elapsed", 0) / 60:.1f} min, sum of run wall times {sum(d["wall"] for d in done) / 60:.1f} '
            f'min, sum of CPU times {sum(d["cpu"] for d in done) / 60:.1f} min. Code: {code}.')
    text = head + '\n\n' + table(res, args, regimes)
    print(text, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'evidence.md').write_text(text + '\n')
    (out / 'results.json').write_text(json.dumps(
        {m: {k: r[k] for k in ('final', 'curves', 'walls', 'cpu', 'seeds')} for m, r in res.items()}, indent=1))
    if figure(res, Path(args.figure), args):
        print(f'figure: {args.figure}', flush=True)


if __name__ == '__main__':
    main()
