"""Time BC, BC+ and superclass mixing against timm's Mixup / FastCollateMixup on the same batches.

    python benchmarks/bench_mixing.py [--threads 2] [--reps 10]

Prints the median time per call and the ratio to timm's *fastest* mode (batch or elem) measured in the same
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
from timm_mixplug.hierarchy import load_hierarchy


def timed(fn, make_input, reps):
    times = []
    for _ in range(reps + 2):
        args = make_input()
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:]) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--reps', type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {args.threads} threads, median of {args.reps} calls (ms)')
    print(f'{"shape":<16}{"method":<22}{"ms":>9}{"x timm fastest":>16}')
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
            print(f'{label:<16}{"timm Mixup " + mode:<22}{base[mode]:>9.2f}{base[mode] / min(base.values()):>16.2f}')
        fastest = min(base.values())
        for name, kw in (('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=hierarchy))):
            m = create_mixup(name, num_classes, **kw)
            ms = timed(m, lambda: (x.clone(), y), args.reps)
            print(f'{label:<16}{name:<22}{ms:>9.2f}{ms / fastest:>16.2f}')
        images = (x.clamp(-2, 2) * 60 + 128).to(torch.uint8)
        batch = [(images[i], int(y[i])) for i in range(b)]
        fcm = FastCollateMixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=num_classes)
        ref = timed(fcm, lambda: (batch,), args.reps)
        print(f'{label:<16}{"timm FastCollateMixup":<22}{ref:>9.2f}{1.0:>16.2f}')
        for name, kw in (('bc', {}), ('bcplus', {}), ('bcplus fp32', dict(out_dtype=torch.float32)),
                         ('superclass', dict(hierarchy=hierarchy))):
            m = create_mixup(name.split()[0], num_classes, collate=True, **kw)
            ms = timed(m, lambda: (batch,), args.reps)
            print(f'{label:<16}{name + " collate":<22}{ms:>9.2f}{ms / ref:>16.2f}')
        mean, std = torch.full((1, 3, 1, 1), 127.0), torch.full((1, 3, 1, 1), 64.0)

        def with_norm(collate):  # collate + PrefetchLoader's normalisation on the CPU
            return lambda b: collate(b)[0].to(torch.float32).sub_(mean).div_(std)
        ref_n = timed(with_norm(fcm), lambda: (batch,), args.reps)
        print(f'{label:<16}{"FastCollateMixup+norm":<22}{ref_n:>9.2f}{1.0:>16.2f}')
        for name, dt in (('bcplus+norm', torch.float16), ('bcplus fp32+norm', torch.float32)):
            m = create_mixup('bcplus', num_classes, collate=True, out_dtype=dt)
            ms = timed(with_norm(m), lambda: (batch,), args.reps)
            print(f'{label:<16}{name:<22}{ms:>9.2f}{ms / ref_n:>16.2f}')


if __name__ == '__main__':
    main()
