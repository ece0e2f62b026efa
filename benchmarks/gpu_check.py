"""The prepared accelerator check, one command: every method trained through train.py, exactness, timm's baseline.

    python benchmarks/gpu_check.py [--out gpu_check] [--steps 30]         # on a CUDA machine (docs/gpu.md)
    python benchmarks/gpu_check.py --device cpu --steps 2 --small --out DIR       # the smoke mode (the test suite)

On CUDA, with timm's ResNet-50 at 224 px, batch 128, bf16 autocast, channels_last, on generated data (an npz
written to ``--out``, images upsampled by timm's RandomResizedCrop; nothing is downloaded):

1. the tests that need CUDA (``pytest -k cuda``), and the exactness checks of BC / BC+ / superclass mixup / DML /
   GLMC / NT-Xent / RICAP / Cutout on the device against the CPU in float64 (``gpu_exactness.py``);
2. every method (ce, mixup, bc, bcplus, superclass, dml, nonharmonic, aux, glmc, glmc-clr, kd) trained for
   ``--steps`` steps through train.py's own code path (``timm_mixplug.train.engine.main``, in this process, the
   flags of ``python -m timm_mixplug compare``'s presets): exit code, final training loss (finite), images/s
   (the epoch's, as train.py reports it), peak GPU memory;
3. the same steps through upstream timm's own pieces with its mixup (``create_loader`` with the prefetcher and
   ``FastCollateMixup``, ``create_model``, ``create_optimizer_v2``, ``SoftTargetCrossEntropy``): the throughput
   baseline, each method's images/s as a ratio to it;
4. bcplus with ``--torchcompile inductor``, bcplus under ``torchrun --nproc_per_node 1`` (timm starts no process
   group for one process), and a one-process nccl group (all_reduce, broadcast) on the GPU.

Writes ``OUT/gpu_check.json`` (everything) and ``OUT/gpu_check.md`` (the tables). The smoke mode (``--small``:
``resnet20_cifar`` at 32 px, batch 8, fp32) runs parts 1-3 on the CPU with peak memory null; parts 4 and the CUDA
tests are CUDA-only and recorded as skipped. Exit code 0 when every run finished with a finite loss and every
check passed, else 1.
"""
import argparse
import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial

import numpy as np
import timm
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from timm.data import FastCollateMixup, create_loader, resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_exactness import run_exactness  # noqa: E402
from timm_mixplug.data.datasets import NpzDataset  # noqa: E402
from timm_mixplug.train.engine import main as train_main  # noqa: E402
from timm_mixplug.train.specs import compare_presets  # noqa: E402

NUM_CLASSES = 10
# method -> the compare preset it trains with (the kd flags are added with the teacher's weights)
PRESETS = {'ce': 'ce', 'mixup': 'mixup', 'bc': 'bc', 'bcplus': 'bcplus', 'superclass': 'superclass', 'dml': 'dml',
           'nonharmonic': 'nh', 'aux': 'aux', 'glmc': 'glmc', 'glmc-clr': 'glmc_clr', 'kd': 'ce'}
NEEDS_MAP = ('superclass', 'aux')


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--small', action='store_true', help='resnet20_cifar, 32 px, batch 8, fp32 (the smoke mode)')
    ap.add_argument('--out', default='gpu_check')
    ap.add_argument('--workers', type=int, default=None, help='loader workers (default 8 on CUDA, 0 on the CPU)')
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error('--steps must be at least 1')
    args.cuda = torch.device(args.device).type == 'cuda'
    if args.cuda and not torch.cuda.is_available():
        ap.error(f'--device {args.device}: CUDA is not available here; use --device cpu --small for the smoke mode')
    args.model, args.img, args.batch = ('resnet20_cifar', 32, 8) if args.small else ('resnet50', 224, 128)
    args.workers = (8 if args.cuda else 0) if args.workers is None else args.workers
    return args


def make_data(args) -> str:
    """``train.npz`` (steps x batch images) and ``validation.npz`` (one batch), 64 px (32 with --small), 10
    classes, each a noisy colour; plus the superclass map and the kd teacher's weights."""
    data = os.path.join(args.out, 'data')
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(0)
    side = 32 if args.small else 64
    colours = rng.integers(0, 256, (NUM_CLASSES, 1, 1, 3))
    for split, n in (('train', args.steps * args.batch), ('validation', args.batch)):
        y = np.arange(n) % NUM_CLASSES
        x = (colours[y] * 0.7 + rng.normal(0, 40, (n, side, side, 3))).clip(0, 255).astype(np.uint8)
        np.savez(os.path.join(data, f'{split}.npz'), x=x, y=y)
    with open(os.path.join(data, 'super.yaml'), 'w') as f:
        f.write(''.join(f'{c}: s{c % 2}\n' for c in range(NUM_CLASSES)))
    teacher = timm.create_model(args.model, num_classes=NUM_CLASSES)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, os.path.join(data, 'teacher.safetensors'))
    return data


def train_argv(args, data: str, method: str, experiment: str):
    """train.py's arguments for ``method``: one epoch of ``--steps`` steps, no warm-up."""
    argv = ['--dataset', 'npz', '--data-dir', data, '--model', args.model, '--num-classes', str(NUM_CLASSES),
            '--img-size', str(args.img), '-b', str(args.batch), '--epochs', '1', '--warmup-epochs', '0',
            '--lr', '0.01', '--workers', str(args.workers), '--device', args.device, '--seed', '0',
            '--output', os.path.join(args.out, 'runs'), '--experiment', experiment, '--log-interval', '10']
    if args.cuda:
        argv += ['--amp', '--amp-dtype', 'bfloat16', '--channels-last', '--pin-mem']
    argv += compare_presets()[PRESETS[method]]
    if method in NEEDS_MAP:
        argv += ['--superclass-map', os.path.join(data, 'super.yaml')]
    if method == 'kd':
        argv += ['--kd-model-name', args.model, '--kd-pretrained-path', os.path.join(data, 'teacher.safetensors')]
    return argv


def read_summary(folder: str) -> dict:
    path = os.path.join(folder, 'summary.csv')
    if not os.path.isfile(path):
        return {}
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def run_method(args, data: str, method: str, extra=(), experiment=None) -> dict:
    """Train ``method`` in this process through train.py's entry; loss, images/s, peak memory (MiB or None)."""
    experiment = experiment or method
    shutil.rmtree(os.path.join(args.out, 'runs', experiment), ignore_errors=True)
    if args.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rc = train_main(train_argv(args, data, method, experiment) + list(extra))
    wall = time.perf_counter() - t0
    row = read_summary(os.path.join(args.out, 'runs', experiment))
    loss = float(row['train_loss']) if row.get('train_loss') else None
    return dict(method=experiment, rc=rc, loss=loss, finite=loss is not None and math.isfinite(loss),
                images_per_s=float(row['samples_per_sec']) if row.get('samples_per_sec') else None,
                peak_memory_mib=torch.cuda.max_memory_allocated() / 2 ** 20 if args.cuda else None,
                wall_s=round(wall, 2))


def timm_baseline(args, data: str) -> dict:
    """One epoch of ``--steps`` steps through upstream timm's own pieces with its mixup, as timm's train.py with
    the prefetcher: FastCollateMixup in the workers, SoftTargetCrossEntropy, SGD; same data, model and precision."""
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=NUM_CLASSES).to(dev)
    if args.cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    cfg = resolve_data_config({'input_size': (3, args.img, args.img)}, model=model)
    collate = FastCollateMixup(mixup_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES)
    loader = create_loader(NpzDataset(data, 'train'), input_size=cfg['input_size'], batch_size=args.batch,
                           is_training=True, use_prefetcher=True, mean=cfg['mean'], std=cfg['std'],
                           num_workers=args.workers, collate_fn=collate, device=dev, pin_memory=args.cuda)
    optimizer = create_optimizer_v2(model, 'sgd', lr=0.01, momentum=0.9, weight_decay=2e-5)
    loss_fn = SoftTargetCrossEntropy()
    autocast = partial(torch.autocast, device_type='cuda', dtype=torch.bfloat16) if args.cuda else nullcontext
    model.train()
    n, start = 0, time.perf_counter()
    for x, y in loader:
        if args.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n += len(x)
    loss = loss.item()  # waits for the device
    return dict(method='timm baseline (FastCollateMixup)', rc=0, loss=loss, finite=math.isfinite(loss),
                images_per_s=n / (time.perf_counter() - start),
                peak_memory_mib=torch.cuda.max_memory_allocated() / 2 ** 20 if args.cuda else None)


def torchrun_check(args, data: str) -> dict:
    """bcplus under ``torchrun --standalone --nproc_per_node 1`` (nccl on CUDA): exit code, backend, loss."""
    experiment = 'torchrun-bcplus'
    shutil.rmtree(os.path.join(args.out, 'runs', experiment), ignore_errors=True)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1',
           os.path.join(ROOT, 'train.py')] + train_argv(args, data, 'bcplus', experiment)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = p.stdout + p.stderr
    row = read_summary(os.path.join(args.out, 'runs', experiment))
    loss = float(row['train_loss']) if row.get('train_loss') else None
    # timm starts a process group only for WORLD_SIZE > 1, so one process trains without one (nccl_check)
    backend = next((b for b in ('nccl', 'gloo') if f'backend {b}' in log), None)
    finite = loss is not None and math.isfinite(loss)
    return dict(method='bcplus, torchrun --nproc_per_node 1', rc=p.returncode, backend=backend, loss=loss,
                finite=finite, ok=p.returncode == 0 and finite,
                images_per_s=float(row['samples_per_sec']) if row.get('samples_per_sec') else None,
                log_tail=log[-1500:] if p.returncode else '')


def nccl_check() -> dict:
    """A one-process nccl group on this GPU: init, all_reduce and broadcast of a tensor, as DDP and timm's
    distribute_bn use them (two ranks on one GPU are not allowed by nccl)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    try:
        dist.init_process_group('nccl', init_method=f'tcp://127.0.0.1:{port}', world_size=1, rank=0)
        t = torch.arange(4.0, device='cuda')
        dist.all_reduce(t)
        dist.broadcast(t, 0)
        ok = torch.equal(t.cpu(), torch.arange(4.0))
        dist.destroy_process_group()
        return dict(ok=ok, backend='nccl', nccl_version=str(torch.cuda.nccl.version()))
    except (RuntimeError, ValueError) as e:
        return dict(ok=False, backend='nccl', error=str(e).splitlines()[0])


def cuda_tests() -> dict:
    """The test suite's CUDA tests (``pytest -k cuda``): exit code and pytest's summary line."""
    p = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-k', 'cuda', 'tests'], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return dict(rc=p.returncode, ok=p.returncode == 0, summary=lines[-1] if lines else p.stderr[-500:])


def _fmt(v, spec='.1f'):
    return '' if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def write_report(args, result: dict) -> None:
    """``gpu_check.json`` and ``gpu_check.md`` in ``--out``."""
    with open(os.path.join(args.out, 'gpu_check.json'), 'w') as f:
        json.dump(result, f, indent=2)
    base = result['baseline']['images_per_s']
    lines = [f'# gpu_check: {result["card"]}', '',
             f'{result["model"]}, {args.img} px, batch {args.batch}, {args.steps} steps, '
             f'{"bf16 autocast, channels_last" if args.cuda else "fp32"}; torch {torch.__version__}, '
             f'timm {result["timm"]}', '',
             '| method | exit | final loss | images/s | x timm | peak memory (MiB) | wall (s) |',
             '|---|---|---|---|---|---|---|']
    rows = list(result['methods'].values()) + [result['baseline']] + [
        r for r in (result['compile'], result['torchrun']) if r.get('rc') is not None]
    for r in rows:
        ratio = r['images_per_s'] / base if r.get('images_per_s') and base else None
        lines.append(f'| {r["method"]} | {r["rc"]} | {_fmt(r["loss"], ".4f")} | {_fmt(r["images_per_s"])} | '
                     f'{_fmt(ratio, ".2f")} | {_fmt(r["peak_memory_mib"], ".0f") if "peak_memory_mib" in r else ""} '
                     f'| {_fmt(r.get("wall_s"))} |')
    lines += ['', '| exactness check (device float32 vs CPU float64) | max abs diff | tolerance | ok |',
              '|---|---|---|---|']
    lines += [f'| {e["name"]} | {e["max_abs_diff"]:.2e} | {e["tol"]:.0e} | {e["ok"]} |' for e in result['exactness']]
    lines += ['', f'CUDA tests: {result["cuda_tests"].get("summary", "skipped (no CUDA)")}',
              f'nccl (one-process group, all_reduce + broadcast): {result["nccl"].get("ok", "skipped (no CUDA)")}', '']
    with open(os.path.join(args.out, 'gpu_check.md'), 'w') as f:
        f.write('\n'.join(lines))


def main(argv=None) -> int:
    args = parse(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    skipped = dict(rc=None, skipped='CUDA only')
    result = dict(device=args.device, card=torch.cuda.get_device_name() if args.cuda else 'CPU (smoke mode)',
                  torch=torch.__version__, timm=timm.__version__, model=args.model, img_size=args.img,
                  batch_size=args.batch, steps=args.steps)
    result['cuda_tests'] = cuda_tests() if args.cuda else skipped
    result['exactness'] = run_exactness(torch.device(args.device))
    data = make_data(args)
    result['methods'] = {m: run_method(args, data, m) for m in PRESETS}
    result['baseline'] = timm_baseline(args, data)
    result['compile'] = (run_method(args, data, 'bcplus', ['--torchcompile', 'inductor'], 'bcplus-torchcompile')
                         if args.cuda else skipped)
    result['torchrun'] = torchrun_check(args, data) if args.cuda else skipped
    result['nccl'] = nccl_check() if args.cuda else skipped
    result['wall_s'] = round(time.perf_counter() - t0, 1)
    runs = list(result['methods'].values()) + [result['baseline']]
    runs += [r for r in (result['compile'], result['torchrun']) if r.get('rc') is not None]
    ok = (all(r['rc'] == 0 and r['finite'] for r in runs) and all(e['ok'] for e in result['exactness'])
          and all(result[k].get('ok', True) for k in ('cuda_tests', 'torchrun', 'nccl')))
    result['ok'] = ok
    write_report(args, result)
    print(open(os.path.join(args.out, 'gpu_check.md')).read())
    print(f'gpu_check: {"all passed" if ok else "FAILED"} in {result["wall_s"]} s; {args.out}/gpu_check.json')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
