"""What mixing costs the loader workers: our mixers on both paths against timm's FastCollateMixup, one run.

    python benchmarks/bench_loader.py [--images 640] [--reps 5] [--batch-size 128] [--classes 100]

Writes an ImageNet-shaped ImageFolder to a temporary folder (``--images`` JPEGs of about 500x375, smooth
colour fields with noise, quality 90, ``--classes`` classes) and reads it with timm's ``create_loader`` as
timm's train.py does: prefetcher on the CPU device, 224 px ``RandomResizedCrop`` + flip + colour jitter, one
loader worker (persistent), batch ``--batch-size``. Variants:

* ``none``: timm's plain ``fast_collate``, no mixing;
* ``timm FastCollateMixup``: timm's collate with mixup (alpha 1, batch mode), the reference;
* ``bc`` / ``bcplus`` / ``superclass`` on the ``collate`` path (our collate mixes in the worker) and on the
  ``device`` path (plain ``fast_collate`` in the worker; the device mixer on the normalised batch in the main
  process, here the CPU standing in for the accelerator, ``timm_mixplug.data.mixing.placement``).

Each repetition runs one epoch of every variant in turn (interleaved, so load from other jobs hits all alike),
after one warm-up epoch each. Measured per image, median over the repetitions: the worker process's own CPU
time (the run time of all its threads in ``/proc/<pid>/task/*/schedstat``, read before and after the epoch:
decoding, transforms, the collate, and sending the batch), the main process's CPU time (the prefetcher's
normalisation and, on the device path, the mixing), and images/s. Ratios are to timm's FastCollateMixup in the same run. On the CPU
device, the faster path of each mixer is the one with the lower worker + main CPU per image (the two share the
cores). The last line is the worst of our mixers on the accelerator (device) path.
"""
import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset, create_loader
from timm.data.loader import fast_collate
from timm.data.mixup import FastCollateMixup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from timm_mixplug import create_mixup, get_mixer_spec  # noqa: E402
from timm_mixplug.data.mixing.placement import mix_prefetched  # noqa: E402

def make_folder(root: str, n: int, classes: int, seed: int = 0) -> str:
    """``n`` JPEGs of about 500x375 (a quarter portrait) in ``root/train/<class>/``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % classes
        w, h = (500, 375) if i % 4 else (375, 500)
        w, h = w + int(rng.integers(-40, 41)), h + int(rng.integers(-30, 31))
        low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        img = np.asarray(low, dtype=np.float32) + rng.normal(0, 12, (h, w, 3))
        d = os.path.join(root, 'train', f'class_{c:03d}')
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(os.path.join(d, f'{i:05d}.jpg'), quality=90)
    return os.path.join(root, 'train')


def proc_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` so far, all its threads: the sum of their ``schedstat`` run times (ns)."""
    total = 0
    for tid in os.listdir(f'/proc/{pid}/task'):
        with open(f'/proc/{pid}/task/{tid}/schedstat') as f:
            total += int(f.read().split()[0])
    return total / 1e9


class PidCollate:
    """Runs ``collate`` and records the worker's pid (a shared value) so the main process can read its CPU time."""

    def __init__(self, collate, pid):
        self.collate, self.pid = collate, pid

    def __call__(self, batch):
        self.pid.value = os.getpid()
        return self.collate(batch)


def variants(classes: int):
    """(name, path, collate, device mixer or None, zero-mean input)."""
    hierarchy = [c % 10 for c in range(classes)]
    out = [('none', '-', fast_collate, None, False),
           ('timm FastCollateMixup', 'collate',
            FastCollateMixup(mixup_alpha=1.0, label_smoothing=0.0, num_classes=classes), None, False)]
    for name in ('bc', 'bcplus', 'superclass'):
        kw = dict(hierarchy=hierarchy) if name == 'superclass' else {}
        zm = get_mixer_spec(name).zero_mean_input
        out.append((name, 'collate', create_mixup(name, classes, collate=True, **kw), None, False))
        out.append((name, 'device', fast_collate, create_mixup(name, classes, **kw), zm))
    return out


def run_epoch(loader, pid, mixer, zero_mean_input):
    """(worker CPU s, main CPU s, wall s, images) of one epoch; the worker's pid is known after the first."""
    w0 = proc_cpu(pid.value) if pid.value else None
    c0, t0 = time.process_time(), time.perf_counter()
    n = 0
    batches = mix_prefetched(loader, mixer, zero_mean_input) if mixer is not None else loader
    for x, _ in batches:
        n += len(x)
    wall, main = time.perf_counter() - t0, time.process_time() - c0
    worker = proc_cpu(pid.value) - w0 if w0 is not None else None
    return worker, main, wall, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--images', type=int, default=640)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--batch-size', type=int, default=128)
    ap.add_argument('--classes', type=int, default=100)
    args = ap.parse_args()
    if args.images < args.batch_size or args.reps < 1:
        ap.error('--images must be at least --batch-size and --reps at least 1')
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    dataset = ImageDataset(make_folder(tmp.name, args.images, args.classes))
    print(f'{args.images} JPEGs of about 500x375 written in {time.perf_counter() - t0:.1f} s; torch '
          f'{torch.__version__}, batch {args.batch_size}, 1 worker, {args.reps} interleaved reps + 1 warm-up; '
          f'load average {os.getloadavg()[0]:.2f}')
    runs = []
    for name, path, collate, mixer, zm in variants(args.classes):
        pid = mp.Value('i', 0)
        loader = create_loader(dataset, input_size=(3, 224, 224), batch_size=args.batch_size, is_training=True,
                               use_prefetcher=True, num_workers=1, collate_fn=PidCollate(collate, pid),
                               device=torch.device('cpu'), persistent_workers=True)
        runs.append(dict(name=name, path=path, loader=loader, pid=pid, mixer=mixer, zm=zm, res=[]))
    for rep in range(args.reps + 1):
        for r in runs:
            res = run_epoch(r['loader'], r['pid'], r['mixer'], r['zm'])
            if rep:
                r['res'].append(res)
    report(runs)
    tmp.cleanup()


def report(runs):
    def med(r, k):
        return statistics.median(x[k] / x[3] for x in r['res'])
    ref = next(r for r in runs if r['name'] == 'timm FastCollateMixup')
    ref_w, ref_rate = med(ref, 0), 1 / statistics.median(x[2] / x[3] for x in ref['res'])
    print(f'\n| mixer | path | worker CPU ms/image | x timm | images/s | x timm | main CPU ms/image |')
    print('|---|---|---|---|---|---|---|')
    worst = {'collate': 0.0, 'device': 0.0}
    total = {}
    for r in runs:
        w, m = med(r, 0), med(r, 1)
        rate = 1 / statistics.median(x[2] / x[3] for x in r['res'])
        print(f'| {r["name"]} | {r["path"]} | {w * 1e3:.3f} | {w / ref_w:.2f} | {rate:.1f} | {rate / ref_rate:.2f} '
              f'| {m * 1e3:.3f} |')
        if r['path'] in worst and r['name'] != ref['name']:
            worst[r['path']] = max(worst[r['path']], w / ref_w)
            total.setdefault(r['name'], {})[r['path']] = w + m
    print('\nCPU device, worker + main CPU per image (ms): ' + '; '.join(
        f'{k} collate {v["collate"] * 1e3:.3f} / device {v["device"] * 1e3:.3f} -> '
        f'{min(v, key=v.get)}' for k, v in total.items()))
    print(f'load average after: {os.getloadavg()[0]:.2f}')
    print(f'worst mixer on the collate path vs timm FastCollateMixup, worker CPU per image: {worst["collate"]:.2f}x')
    print(f'worst mixer on the accelerator path vs timm FastCollateMixup, worker CPU per image: '
          f'{worst["device"]:.2f}x')


if __name__ == '__main__':
    main()
