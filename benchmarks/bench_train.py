"""Training throughput of our train.py against a bare loop built from timm's own pieces, same data and flags.

    python benchmarks/bench_train.py [--data ../shared/data/cifar10_train_subset10k.npz] [--num-samples 1024]
        [--model resnet20_cifar] [--batch-size 64] [--workers 0] [--epochs 2] [--reps 4] [--threads 1]

Both sides train ``--model`` on the same ``--num-samples`` images (a shuffled subset of the npz, or generated
images when it is missing) with the same flags: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), label
smoothing 0.1 (timm's ``LabelSmoothingCrossEntropy``), timm train.py's default training transforms
(``RandomResizedCrop`` with ``--train-interpolation random``, flip, colour jitter 0.4) at the image size,
``create_loader`` with the prefetcher, ``--workers`` loader processes, float32 on the CPU.

* ours: ``train.py`` (``timm_mixplug.train.engine.main``) for ``--epochs`` epochs; timed is each call of the
  engine's ``train_one_epoch`` (loader start-up, steps, per-step bookkeeping, scheduler updates, progress
  lines), not the validation and checkpoints that follow each epoch. The whole ``main`` call is also timed.
* timm: ``timm.data.create_loader(use_prefetcher=True)`` over the same dataset, ``timm.create_model``,
  ``timm.optim.create_optimizer_v2``; the loop forward / loss / backward / step / zero_grad with no logging,
  no evaluation, no checkpoints (as timm's train.py's loop without them); timed is each epoch's loop.

The two alternate ``--reps`` times in one process (the machine is shared, so load hits both alike). Printed:
median samples/s per epoch by wall clock and by process CPU time (CPU time is what the process itself spent,
less sensitive to other jobs; with ``--workers 0`` it includes data loading), and the ratios ours / timm
(goal >= 0.95).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_data(path: str, n: int, folder: str) -> None:
    """``train.npz`` / ``validation.npz`` in ``folder``: ``n`` shuffled images of ``path`` (or generated)."""
    rng = np.random.default_rng(0)
    if os.path.isfile(path):
        with np.load(path, allow_pickle=False) as f:
            x, y = f['x'], f['y']
        idx = rng.permutation(len(x))
        x, y = x[idx], y[idx]
    else:
        print(f'{path} not found: generated images')
        y = np.arange(n + 256) % 10
        x = (rng.random((len(y), 32, 32, 3)) * 64 + y[:, None, None, None] * 19).astype(np.uint8)
    np.savez(os.path.join(folder, 'train.npz'), x=x[:n], y=y[:n])
    np.savez(os.path.join(folder, 'validation.npz'), x=x[n:n + 256], y=y[n:n + 256])


class _Timer:
    """Wall and process-CPU seconds of each timed call."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


def run_ours(a, data_dir: str, out: str, exp: str, timer: _Timer) -> float:
    from timm_mixplug.train import engine
    argv = ['--dataset', 'npz', '--data-dir', data_dir, '--train-split', 'train', '--val-split', 'validation',
            '--model', a.model, '-b', str(a.batch_size), '--workers', str(a.workers), '--epochs', str(a.epochs),
            '--lr', '0.1', '--momentum', '0.9', '--weight-decay', '5e-4', '--smoothing', '0.1',
            '--warmup-epochs', '0', '--device', 'cpu', '--output', out, '--experiment', exp,
            '--log-interval', '1000000', '--seed', '0']
    inner = engine.train_one_epoch

    def timed(*args, **kwargs):
        with timer:
            return inner(*args, **kwargs)
    engine.train_one_epoch = timed
    try:
        t0 = time.perf_counter()
        rc = engine.main(argv)
        wall = time.perf_counter() - t0
    finally:
        engine.train_one_epoch = inner
    if rc != 0:
        raise SystemExit(f'train.py exited with {rc}')
    return wall


def run_timm(a, data_dir: str, timer: _Timer) -> float:
    import timm
    from timm.data import create_loader, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm_mixplug.data.datasets import NpzDataset
    t0 = time.perf_counter()
    torch.manual_seed(0)
    dataset = NpzDataset(data_dir, 'train')
    model = timm.create_model(a.model, num_classes=10)
    cfg = resolve_data_config({}, model=model)
    loader = create_loader(dataset, input_size=cfg['input_size'], batch_size=a.batch_size, is_training=True,
                           use_prefetcher=True, interpolation='random', mean=cfg['mean'],
                           std=cfg['std'], num_workers=a.workers, device=torch.device('cpu'))
    optimizer = create_optimizer_v2(model, 'sgd', lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
    model.train()
    for _ in range(a.epochs):
        with timer:
            for input, target in loader:
                loss = criterion(model(input), target)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data', 'cifar10_train_subset10k.npz'))
    ap.add_argument('--num-samples', type=int, default=1024)
    ap.add_argument('--model', default='resnet20_cifar')
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--workers', type=int, default=0)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--reps', type=int, default=4)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import logging
    import timm_mixplug  # noqa: F401  (CIFAR models)
    per_epoch = a.num_samples // a.batch_size * a.batch_size  # both loaders drop the last partial batch
    ours, timm_ = _Timer(), _Timer()
    ours_wall, timm_wall = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, 'data')
        os.makedirs(data_dir)
        make_data(a.data, a.num_samples, data_dir)
        for rep in range(a.reps):
            first, second = ((ours, timm_) if rep % 2 == 0 else (timm_, ours))
            for side in (first, second):
                if side is ours:
                    ours_wall.append(run_ours(a, data_dir, os.path.join(tmp, 'out'), f'rep{rep}', ours))
                    logging.getLogger().handlers.clear()  # train.py's console handler: keep the table readable
                else:
                    timm_wall.append(run_timm(a, data_dir, timm_))
            print(f'rep {rep}: samples/s (wall) ours '
                  + ', '.join(f'{per_epoch / w:.1f}' for w in ours.wall[-a.epochs:]) + '  timm '
                  + ', '.join(f'{per_epoch / w:.1f}' for w in timm_.wall[-a.epochs:]), flush=True)

    def rate(xs):
        return per_epoch / statistics.median(xs)
    n = per_epoch * a.epochs
    print(f'\n{a.model}, {a.num_samples} images, batch {a.batch_size}, {a.workers} worker(s), {a.threads} '
          f'thread(s), {a.epochs} epochs x {a.reps} alternating reps, torch {torch.__version__}')
    print(f'{"samples/s (median epoch)":30s}{"ours":>10s}{"timm":>10s}{"ratio":>8s}')
    for name, o, t in (('train phase, wall clock', rate(ours.wall), rate(timm_.wall)),
                       ('train phase, process CPU', rate(ours.cpu), rate(timm_.cpu)),
                       ('whole run, wall clock', n / statistics.median(ours_wall), n / statistics.median(timm_wall))):
        print(f'{name:30s}{o:10.1f}{t:10.1f}{o / t:8.3f}')
    print('(whole run: ours also builds, validates every epoch and writes checkpoints and plots; timm does not)')


if __name__ == '__main__':
    main()
