"""Step time of importance-sampled augmentation (seed 003) vs a plain training step.

Same model, same batches, one run: every round trains the plain step and each NonHarmonicTask variant on the
same (B, M, C, H, W) views (order rotated per round so no variant always runs first), full step = forward +
backward + SGD update. Views are generated once up front (no data-loading cost is measured for anyone).
Reports per variant the minimum and median wall time of a step, the median process CPU time of a step (robust
on a shared CPU: other processes inflate wall time, not our CPU time), the ratios to the plain step, and the
median scoring time (all B*M views, measured separately on the same batch).

    .venv/bin/python benchmarks/bench_nonharmonic.py --batch-size 16 --steps 8 --threads 1
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

import timm
from timm.task import ClassificationTask

try:
    import timm_mixplug.models  # noqa: F401  (registers the CIFAR models, e.g. preactresnet18_cifar)
except ImportError:
    pass
from timm_mixplug.nonharmonic import NonHarmonicTask


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='preactresnet18_cifar')
    p.add_argument('--num-classes', type=int, default=100)
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--steps', type=int, default=6, help='timed rounds (after one warm-up round)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--amp', default='none', choices=['none', 'bfloat16', 'float16'],
                   help='autocast dtype for the whole step (as train.py --amp)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    p.add_argument('--variants', default='m2,m4,m2_half,m4_half,m4_bf16score,m4_half_bf16score,m4_trainmode')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=args.num_classes).to(dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = nn.CrossEntropyLoss()

    variants = {
        'plain': ClassificationTask(model, criterion=crit, device=dev, verbose=False),
        'm2': NonHarmonicTask(model, 2, criterion=crit, channels_last=args.channels_last, device=dev),
        'm4': NonHarmonicTask(model, 4, criterion=crit, channels_last=args.channels_last, device=dev),
        'm4_half': NonHarmonicTask(model, 4, criterion=crit, score_scale=0.5, channels_last=args.channels_last,
                                   device=dev),
        'm4_bf16score': NonHarmonicTask(model, 4, criterion=crit, score_dtype=torch.bfloat16,
                                        channels_last=args.channels_last, device=dev),
        'm4_half_bf16score': NonHarmonicTask(model, 4, criterion=crit, score_scale=0.5, score_dtype=torch.bfloat16,
                                             channels_last=args.channels_last, device=dev),
        'm2_half': NonHarmonicTask(model, 2, criterion=crit, score_scale=0.5, channels_last=args.channels_last,
                                   device=dev),
        'm4_trainmode': NonHarmonicTask(model, 4, criterion=crit, score_mode='train',
                                        channels_last=args.channels_last, device=dev),
    }
    names = ['plain'] + [v for v in args.variants.split(',') if v]
    B, S = args.batch_size, args.img_size
    rounds = args.steps + 1
    batches = [(torch.randn(B, 4, 3, S, S, device=dev), torch.randint(0, args.num_classes, (B,), device=dev))
               for _ in range(rounds)]
    amp = (torch.autocast(dev.type, dtype=getattr(torch, args.amp)) if args.amp != 'none'
           else torch.autocast(dev.type, enabled=False))

    def sync():
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    times = {n: [] for n in names}
    cpu_times = {n: [] for n in names}
    score_times = {n: [] for n in names}
    model.train()
    for r, (views, y) in enumerate(batches):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            task = variants[n]
            if n == 'plain':
                inp = views[:, 0].contiguous(memory_format=torch.channels_last) if args.channels_last else views[:, 0]
            else:
                inp = views[:, :task.num_views]
            sync()
            t0 = time.perf_counter()
            c0 = time.process_time()
            with amp:
                if n != 'plain':  # time the scoring part separately (same code path as inside forward)
                    vb, yb = task.split_views(inp, y)
                    s0 = time.perf_counter()
                    task.score(vb.flatten(0, 1), yb.repeat_interleave(task.num_views))
                    sync()
                    score_t = time.perf_counter() - s0
                    t0 = time.perf_counter()
                    c0 = time.process_time()
                out = task(inp, y)
            out['loss'].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if r:  # round 0 is warm-up
                times[n].append(time.perf_counter() - t0)
                cpu_times[n].append(time.process_time() - c0)
                if n != 'plain':
                    score_times[n].append(score_t)

    med = statistics.median
    base_min, base_cpu = min(times['plain']), med(cpu_times['plain'])
    print(f'model={args.model} batch={B} img={S} device={dev} threads={torch.get_num_threads()} '
          f'channels_last={args.channels_last} amp={args.amp} rounds={args.steps}')
    print('| variant | min step (ms) | median step (ms) | median CPU (ms) | vs plain (min wall) | '
          'vs plain (CPU) | scoring (ms, median) |')
    print('|---|---|---|---|---|---|---|')
    for n in names:
        sc = f'{1000 * med(score_times[n]):.0f}' if score_times[n] else '-'
        print(f'| {n} | {1000 * min(times[n]):.0f} | {1000 * med(times[n]):.0f} | {1000 * med(cpu_times[n]):.0f} | '
              f'{min(times[n]) / base_min:.2f}x | {med(cpu_times[n]) / base_cpu:.2f}x | {sc} |')

if __name__ == '__main__':
    main()
