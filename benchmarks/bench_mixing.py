"""Time BC, BC+ and superclass mixing against timm's Mixup / FastCollateMixup on the same batches.

    python benchmarks/bench_mixing.py [--threads 2] [--reps 10]

Prints the median wall and process-CPU time per call (CPU time is robust on a shared machine: other processes
inflate wall time, not ours) and their ratios to timm's *fastest* mode (batch or elem) measured in the same
run; collate variants are compared with FastCollateMixup (batch mode) on the same list of uint8 images. The BC+
collate emits pixel-space float (float16 by default, float32 shown beside it); "+norm" adds what timm's
PrefetchLoader then does on the CPU (cast to float32, subtract the mean, divide by the std) to the collate and
to FastCollateMixup's uint8 output alike, i.e. the cost of the whole path when the device is the CPU.
"""
import argparse
import statistics
import time

import torch
from timm.data.mixup import FastCollateMixup, Mixup

from timm_mixplug import create_mixup
from timm_mixplug.data.hierarchy import load_hierarchy


def timed(fn, make_input, reps):
    """(median wall ms, median process CPU ms) per call, after 2 warm-up calls."""
    wall, cpu = [], []
    for _ in range(reps + 2):
        args = make_input()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall[2:]) * 1e3, statistics.median(cpu[2:]) * 1e3


def row(label, name, t, ref):
    print(f'{label:<16}{name:<22}{t[0]:>9.2f}{t[0] / ref[0]:>9.2f}{t[1]:>9.2f}{t[1] / ref[1]:>9.2f}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--reps', type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {args.threads} threads, median of {args.reps} calls')
    print(f'{"shape":<16}{"method":<22}{"wall ms":>9}{"x ref":>9}{"CPU ms":>9}{"x ref":>9}')
    for shape, num_classes in (((128, 3, 224, 224), 1000), ((256, 3, 32, 32), 100)):
        b = shape[0]
        x = torch.randn(shape)
        y = torch.randint(0, num_classes, (b,))
        hierarchy = load_hierarchy([c % 20 for c in range(num_classes)], num_classes=num_classes)
        label = 'x'.join(map(str, shape))
        base = {}
        for mode in ('batch', 'elem'):
            m = Mixup(mixup_alpha=1.0, mode=mode, label_smoothing=0.0, num_classes=num_classes)
            base[mode] = timed(m, lambda: (x.clone(), y), args.reps)
        fastest = min(base.values())  # ref: timm's fastest mode
        for mode in ('batch', 'elem'):
            row(label, 'timm Mixup ' + mode, base[mode], fastest)
        for name, kw in (('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=hierarchy))):
            m = create_mixup(name, num_classes, **kw)
            row(label, name, timed(m, lambda: (x.clone(), y), args.reps), fastest)
        images = (x.clamp(-2, 2) * 60 + 128).to(torch.uint8)
        batch = [(images[i], int(y[i])) for i in range(b)]
        fcm = FastCollateMixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=num_classes)
        ref = timed(fcm, lambda: (batch,), args.reps)  # ref: FastCollateMixup
        row(label, 'timm FastCollateMixup', ref, ref)
        for name, kw in (('bc', {}), ('bcplus', {}), ('bcplus fp32', dict(out_dtype=torch.float32)),
                         ('superclass', dict(hierarchy=hierarchy))):
            m = create_mixup(name.split()[0], num_classes, collate=True, **kw)
            row(label, name + ' collate', timed(m, lambda: (batch,), args.reps), ref)
        mean, std = torch.full((1, 3, 1, 1), 127.0), torch.full((1, 3, 1, 1), 64.0)

        def with_norm(collate):  # collate + PrefetchLoader's normalisation on the CPU
            return lambda bt: collate(bt)[0].to(torch.float32).sub_(mean).div_(std)
        ref_n = timed(with_norm(fcm), lambda: (batch,), args.reps)
        row(label, 'FastCollateMixup+norm', ref_n, ref_n)
        for name, dt in (('bcplus+norm', torch.float16), ('bcplus fp32+norm', torch.float32)):
            m = create_mixup('bcplus', num_classes, collate=True, out_dtype=dt)
            row(label, name, timed(with_norm(m), lambda: (batch,), args.reps), ref_n)


if __name__ == '__main__':
    main()
