"""Train a baseline and each method on the same data and seeds with train.py; print top-1 mean +- std and time.

    python benchmarks/compare.py --data-dir ../shared/data --epochs 6 --seeds 0 1 2 \
        --methods baseline mixup bc bcplus dml_superclass nonharmonic aux glmc_lt

Every run is one ``train.py`` process (so this measures exactly what users run), writing to
``--output/<method>-s<seed>``; the table reports the final-epoch validation top-1 (the papers report the
final epoch) and the wall time of each run, and is also written as ``--output/compare.md``.
Data: ``--dataset npz`` reads ``<data-dir>/<split>.npz`` (keys ``x`` uint8 NHWC, ``y``), e.g. the CIFAR-10
subset at ``../shared/data``; without it, the bundled ``mixplug/digits`` set is used.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# extra train.py arguments per method (CIFAR-10 has the built-in vehicles/animals superclass map)
METHODS = {
    'baseline': ['--mix', 'none'],
    'mixup': ['--mix', 'mixup'],
    'bc': ['--mix', 'bc'],
    'bcplus': ['--mix', 'bcplus'],
    'dml': ['--task', 'dml', '--mix', 'none', '--dml-peers', '2'],
    'dml_superclass': ['--task', 'dml', '--mix', 'superclass', '--superclass-map', '{hier}', '--dml-peers', '2'],
    'nonharmonic': ['--task', 'nonharmonic', '--nh-views', '4', '--mix', 'none'],
    'aux': ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--superclass-map', '{hier}', '--no-aug',
            '--mix', 'none'],  # crop and flip happen on the device, recorded for the crop-position head
    'ce_lt': ['--mix', 'none', '--imb-factor', '{imb}'],
    'glmc_lt': ['--task', 'glmc', '--imb-factor', '{imb}', '--mix', 'none'],
    'glmc_clr_lt': ['--task', 'glmc', '--glmc-clr', '--imb-factor', '{imb}', '--mix', 'none'],
}


def final_metrics(run_dir: Path) -> dict:
    with open(run_dir / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ('', None)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--methods', nargs='+', default=['baseline', 'bc', 'bcplus'], choices=sorted(METHODS))
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--model', default='resnet20_cifar')
    ap.add_argument('--data-dir', default=None, help='folder with <train-split>.npz and <val-split>.npz')
    ap.add_argument('--train-split', default='cifar10_train_subset10k')
    ap.add_argument('--val-split', default='cifar10_test')
    ap.add_argument('--hierarchy', default='cifar10', help='superclass map for superclass mixup / aux heads')
    ap.add_argument('--imb-factor', default='10', help='rho for the *_lt methods')
    ap.add_argument('--batch-size', type=int, default=128)
    ap.add_argument('--lr', type=float, default=0.1)
    ap.add_argument('--output', default='output/compare')
    ap.add_argument('extra', nargs='*', help='more train.py arguments for every run (after --)')
    args = ap.parse_args()

    if args.data_dir:
        data = ['--dataset', 'npz', '--data-dir', args.data_dir, '--train-split', args.train_split,
                '--val-split', args.val_split, '--num-classes', '10']
        name = f'{args.data_dir}/{args.train_split}.npz'
    else:
        data = ['--dataset', 'mixplug/digits', '--num-classes', '10']
        name = 'mixplug/digits (bundled)'
    common = data + [
        '--model', args.model, '--img-size', '32', '--crop-pct', '1.0', '-b', str(args.batch_size), '--opt', 'sgd', '--momentum', '0.9',
        '--weight-decay', '5e-4', '--lr', str(args.lr), '--sched', 'cosine', '--warmup-epochs', '1',
        '--warmup-lr', str(args.lr / 10), '--epochs', str(args.epochs), '--workers', '0',
        '--log-interval', '1000', *args.extra]
    out = Path(args.output)
    results = {}
    for method in args.methods:
        extra = [a.format(hier=args.hierarchy, imb=args.imb_factor) for a in METHODS[method]]
        if '--no-aug' not in extra:  # CIFAR augmentation: zero-pad 4, random crop, flip
            extra += ['--pad-crop', '4', '--hflip', '0.5', '--color-jitter', '0']
        for seed in args.seeds:
            run = out / f'{method}-s{seed}'
            cmd = [sys.executable, str(REPO / 'train.py'), *common, *extra, '--seed', str(seed),
                   '--output', str(out), '--experiment', run.name]
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            wall = time.time() - t0
            if proc.returncode != 0:
                print(f'{method} seed {seed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}', flush=True)
                continue
            m = final_metrics(run)
            results.setdefault(method, []).append((m, wall))
            print(f'{method:<16} seed {seed}: top-1 {m["eval_top1"]:.2f}  ({wall:.0f} s)', flush=True)

    lines = [f'Data: {name}; model {args.model}; {args.epochs} epochs; seeds {args.seeds}; '
             f'{os.cpu_count()} CPU cores, torch threads default.', '',
             '| method | top-1 (%) mean ± std | runs | wall time / run (s) | other final metrics (mean) |',
             '|---|---|---|---|---|']
    for method, runs in results.items():
        top1 = [m['eval_top1'] for m, _ in runs]
        sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
        other = sorted(set(runs[0][0]) - {'epoch', 'eval_top1', 'lr', 'samples_per_sec', 'epoch_time'})
        extras = ', '.join(f'{k} {statistics.mean(m[k] for m, _ in runs if k in m):.2f}'
                           for k in other if k.startswith('eval_'))
        lines.append(f'| {method} | {statistics.mean(top1):.2f} ± {sd:.2f} | {len(runs)} | '
                     f'{statistics.mean(w for _, w in runs):.0f} | {extras} |')
    table = '\n'.join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.md').write_text(table + '\n')


if __name__ == '__main__':
    main()
