"""``--torchcompile`` on this machine: training-step time of each task compiled vs eager, built by train.py's
own ``train.build.build`` (so the path measured is the one ``--torchcompile`` takes).

    python benchmarks/bench_compile.py [--tasks classification,dml] [--model resnet20_cifar] [--img-size 32]
                                       [--batch-size 64] [--backend inductor] [--mode default] [--reps 10]

A step is forward + backward + SGD step + zero_grad on one fixed batch (from the task's own loader).
Eager and compiled are timed round-robin (one step each per round) so that load from other processes hits
both alike; the table shows the first compiled step (compilation), the median step times, the
speed-up (eager / compiled) and the first-step loss difference.
"""
import argparse
import statistics
import sys
import tempfile
import time

import torch

TASK_FLAGS = {'classification': [], 'dml': ['--dml-peers', '2'], 'glmc': [], 'nonharmonic': ['--nh-views', '2'],
              'aux': ['--aux-tasks', 'random_labels']}


def build(task, a, data_dir, compiled):
    from timm_mixplug.train import engine
    from timm_mixplug.train.build import build
    from timm_mixplug.train.config import parse_args
    argv = ['--data-dir', data_dir, '--model', a.model, '--img-size', str(a.img_size), '--crop-pct', '1.0',
            '-b', str(a.batch_size), '--workers', '0', '--device', 'cpu', '--no-prefetcher', '--lr', '0.01',
            '--task', task, *TASK_FLAGS[task]]
    if compiled:
        argv += ['--torchcompile', a.backend] + (['--torchcompile-mode', a.mode] if a.mode else [])
    args = parse_args(argv)
    device = engine._init_distributed(args)
    torch.manual_seed(0)
    b = build(args, device, training=True)
    opt = torch.optim.SGD(b.task.get_trainable_module().parameters(), lr=0.01, momentum=0.9)
    return b, opt


def step(task, opt, x, y):
    torch.manual_seed(1)
    t0 = time.perf_counter()
    loss = task(x, y)['loss']
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tasks', default='classification,dml')
    ap.add_argument('--model', default='resnet20_cifar')
    ap.add_argument('--img-size', type=int, default=32)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--backend', default='inductor')
    ap.add_argument('--mode', default=None)
    ap.add_argument('--reps', type=int, default=10)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from timm_mixplug.data.datasets import make_image_folder
    data_dir = tempfile.mkdtemp(prefix='bench_compile_')
    make_image_folder(data_dir, num_classes=10, per_class=a.batch_size // 5, val_per_class=2, size=a.img_size)
    print(f'torch {torch.__version__}, {a.threads} threads, {a.model} @ {a.img_size}px, batch {a.batch_size}, '
          f'backend {a.backend}, mode {a.mode}')
    print(f'{"task":16s} {"compile (s)":>11s} {"eager (ms)":>10s} {"compiled (ms)":>13s} {"speed-up":>8s} '
          f'{"|loss diff|":>11s}')
    for task in a.tasks.split(','):
        (be, oe), (bc, oc) = build(task, a, data_dir, False), build(task, a, data_dir, True)
        x, y = next(iter(be.loader_train))
        _, le = step(be.task, oe, x, y)
        t_compile, lc = step(bc.task, oc, x, y)
        te, tc = [], []
        for _ in range(a.reps):
            te.append(step(be.task, oe, x, y)[0])
            tc.append(step(bc.task, oc, x, y)[0])
        me, mc = statistics.median(te), statistics.median(tc)
        print(f'{task:16s} {t_compile:11.1f} {me * 1e3:10.1f} {mc * 1e3:13.1f} {me / mc:8.2f} {abs(le - lc):11.2e}')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
