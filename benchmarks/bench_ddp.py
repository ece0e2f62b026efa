"""Training throughput of train.py with 1 vs 2 CPU processes (torchrun, gloo), same per-process batch.

    python benchmarks/bench_ddp.py [--epochs 2] [--model resnet20_cifar] [--mix bcplus] [-b 64]

Runs the offline digits quickstart data through ``torchrun --nproc_per_node=N train.py`` for
  * 1 process x 2 threads (all cores, intra-op parallel),
  * 1 process x 1 thread,
  * 2 processes x 1 thread (DDP over gloo; torchrun's default of 1 OpenMP thread per process),
and reports the best epoch's samples/s after the first (warm-up) epoch from each run's summary.csv (all
ranks' samples over the wall time of the training part of the epoch, data loading included), best of
``--repeats`` runs; on a machine shared with other jobs the best is the least disturbed. Nothing is
downloaded.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(nproc: int, threads: int, args, out: str) -> dict:
    torchrun = shutil.which('torchrun', path=os.path.dirname(sys.executable)) or 'torchrun'
    exp = f'p{nproc}t{threads}'
    cmd = [torchrun, '--standalone', f'--nproc_per_node={nproc}', os.path.join(ROOT, 'train.py'),
           '--dataset', 'mixplug/digits', '--model', args.model, '--img-size', '32', '--crop-pct', '1.0',
           '--mix', args.mix, '-b', str(args.batch_size), '--epochs', str(args.epochs), '--warmup-epochs', '0',
           '--lr', '0.05', '--hflip', '0', '--color-jitter', '0', '--scale', '0.7', '1.0', '--workers', '0',
           '--device', 'cpu', '--output', out, '--experiment', exp, '--log-interval', '1000']
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f'{exp} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}')
    with open(os.path.join(out, exp, 'summary.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    best = max(rows[1:] or rows, key=lambda r: float(r['samples_per_sec']))  # skip the warm-up epoch
    return dict(processes=nproc, threads=threads, samples_per_sec=float(best['samples_per_sec']),
                epoch_time=float(best['epoch_time']), eval_top1=float(rows[-1]['eval_top1']), wall_s=wall)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--model', default='resnet20_cifar')
    ap.add_argument('--mix', default='bcplus')
    ap.add_argument('-b', '--batch-size', type=int, default=64, help='per process')
    ap.add_argument('--repeats', type=int, default=1, help='runs per configuration (best is reported)')
    ap.add_argument('--json', default='', help='also write the results to this file')
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix='bench_ddp_')
    try:
        results = []
        for nproc, threads in ((1, 2), (1, 1), (2, 1)):
            runs = []
            for i in range(args.repeats):
                runs.append(run(nproc, threads, args, os.path.join(out, str(i))))
            results.append(max(runs, key=lambda r: r['samples_per_sec']))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    base = results[0]['samples_per_sec']
    print(f'{args.model}, --mix {args.mix}, batch {args.batch_size}/process, digits 32x32, '
          f'{os.cpu_count()} CPUs; best epoch after the first of {args.epochs}, best of {args.repeats} run(s)')
    print(f'{"processes":>9} {"threads":>7} {"samples/s":>10} {"vs 1x2":>7} {"epoch s":>8} {"wall s":>7}')
    for r in results:
        print(f'{r["processes"]:>9} {r["threads"]:>7} {r["samples_per_sec"]:>10.1f} '
              f'{r["samples_per_sec"] / base:>6.2f}x {r["epoch_time"]:>8.1f} {r["wall_s"]:>7.1f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
