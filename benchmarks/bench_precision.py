"""train.py end to end on CPU: fp32 vs bf16 autocast vs channels-last, 1 or more threads; wall and CPU time.

    python benchmarks/bench_precision.py --data-dir ../shared/data --per-class 100 --epochs 3 --threads 1 2

Each configuration is one ``train.py`` process (ResNet-20, pad-crop + flip, batch 128, eval every epoch on
``--test-per-class`` images per class) run one after another. CPU time (user + system of the process) is printed
beside the wall time: on a machine shared with other work it is the steadier measure, and with 2 threads it also
shows the cost of OpenMP threads waiting for each other. Ratios are against fp32 with the same thread count.
``--torchcompile`` is not measured (not implemented in train.py on this branch).
"""
import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
from compare import make_subset  # noqa: E402

CONFIGS = {
    'fp32': [],
    'fp32 channels-last': ['--channels-last'],
    'bf16': ['--amp', '--amp-dtype', 'bfloat16'],
    'bf16 channels-last': ['--amp', '--amp-dtype', 'bfloat16', '--channels-last'],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default='../shared/data')
    ap.add_argument('--per-class', type=int, default=100)
    ap.add_argument('--test-per-class', type=int, default=100)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--threads', type=int, nargs='+', default=[1])
    ap.add_argument('--configs', nargs='+', default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument('--output', default='output/bench_precision')
    args = ap.parse_args()
    out, src = Path(args.output), Path(args.data_dir)
    tr, te = f'train{args.per_class}pc', f'test{args.test_per_class}pc'
    make_subset(src / 'cifar10_train_subset10k.npz', out / f'{tr}.npz', args.per_class)
    make_subset(src / 'cifar10_test.npz', out / f'{te}.npz', args.test_per_class)
    rows = []
    for threads in args.threads:
        for name in args.configs:
            exp = f'{name.replace(" ", "_")}-t{threads}'
            cmd = [sys.executable, str(REPO / 'train.py'), '--dataset', 'npz', '--data-dir', str(out), '--train-split',
                   tr, '--val-split', te, '--num-classes', '10', '--model', 'resnet20_cifar', '--img-size', '32',
                   '--crop-pct', '1.0', '-b', '128', '--lr', '0.1', '--warmup-epochs', '1', '--epochs',
                   str(args.epochs), '--workers', '0', '--pad-crop', '4', '--hflip', '0.5', '--color-jitter', '0',
                   '--log-interval', '1000', '--output', str(out), '--experiment', exp, *CONFIGS[name]]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
            t0 = time.time()
            with open(out / f'{exp}.log', 'w') as log:
                proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
                _, status, usage = os.wait4(proc.pid, 0)
            wall, cpu = time.time() - t0, usage.ru_utime + usage.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                print(f'{exp} failed, see {out / (exp + ".log")}')
                continue
            with open(out / exp / 'summary.csv') as f:
                last = list(csv.DictReader(f))[-1]
            rows.append((threads, name, wall, cpu, float(last['eval_top1'])))
            print(f'{exp:<26} wall {wall:6.1f} s  CPU {cpu:6.1f} s  top-1 {float(last["eval_top1"]):.2f}', flush=True)
    print(f'\n{args.per_class} train / {args.test_per_class} test images per class, {args.epochs} epochs, '
          f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n')
    print('| threads | setting | wall (s) | CPU (s) | CPU time vs fp32 | top-1 after the run (%) |')
    print('|---|---|---|---|---|---|')
    for threads, name, wall, cpu, top1 in rows:
        ref = next((r[3] for r in rows if r[0] == threads and r[1] == 'fp32'), None)
        ratio = f'{ref / cpu:.2f}x faster' if ref else ''
        print(f'| {threads} | {name} | {wall:.1f} | {cpu:.1f} | {ratio} | {top1:.2f} |')


if __name__ == '__main__':
    main()
