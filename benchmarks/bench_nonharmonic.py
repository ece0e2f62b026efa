"""Importance-sampled augmentation (seed 003): step cost vs a plain step, and the fidelity of cheap scoring.

Cost: same model, same batches, one run: every round trains the plain step and each NonHarmonicTask variant on
the same (B, M, C, H, W) views (order rotated per round so no variant always runs first), full step = forward +
backward + SGD update. Views are generated once up front (no data-loading cost is measured for anyone).
Reports per variant the minimum and median wall time of a step, the median process CPU time of a step (robust
on a shared CPU: other processes inflate wall time, not our CPU time), the ratios to the plain step, and the
median scoring time (all B*M views, measured separately on the same batch). ``_cl`` variants train and score a
channels-last copy of the model (as train.py --channels-last); the plain step stays NCHW.

Agreement (``--agree-data`` CIFAR-10 npz): trains ``--model`` a few epochs on that data (bf16 autocast, pad-crop
+ flip, SGD) and, at each ``--agree-stages`` epoch count, scores M pad-crop+flip views of ``--agree-images``
held-out images exactly (fp32, NCHW, full resolution, eval mode) and with each approximation. Per option:
total-variation distance between the exact and approximate sampling probabilities (T = 1; mean and p95 over
images), chosen-view agreement under the same uniform draw (inverse CDF), and max-loss view agreement (T = 0);
the row ``uniform`` (uniform sampling, i.e. plain random augmentation) gives the scale of these numbers.

    python benchmarks/bench_nonharmonic.py --batch-size 16 --steps 8 --threads 1
    python benchmarks/bench_nonharmonic.py --model resnet20_cifar --num-classes 10 --batch-size 64 \\
        --agree-data ../shared/data --agree-stages 0,1,4
"""
import argparse
import copy
import os
import statistics
import time

import numpy as np
import torch
import torch.nn as nn

import timm
from timm.task import ClassificationTask

import timm_mixplug.models  # noqa: F401  (registers the CIFAR models)
from timm_mixplug.task.nonharmonic import NonHarmonicTask, view_probabilities
from timm_mixplug.data.transforms import random_crop_flip

# name -> (M, NonHarmonicTask kwargs, channels-last model)
VARIANTS = {
    'm2': (2, {}, False),
    'm4': (4, {}, False),
    'm4_bf16': (4, dict(score_dtype=torch.bfloat16), False),
    'm4_cl': (4, {}, True),
    'm4_bf16_cl': (4, dict(score_dtype=torch.bfloat16), True),
    'm4_half': (4, dict(score_scale=0.5), False),
    'm4_half_bf16': (4, dict(score_scale=0.5, score_dtype=torch.bfloat16), False),
    'm4_half_bf16_cl': (4, dict(score_scale=0.5, score_dtype=torch.bfloat16), True),
    'm4_trainmode': (4, dict(score_mode='train'), False),
}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def make_task(name, model, model_cl, crit, dev):
    m, kw, cl = VARIANTS[name]
    return NonHarmonicTask(model_cl if cl else model, m, criterion=crit, channels_last=cl, device=dev,
                           verbose=False, **kw)


def cost(args, model, dev):
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    params = list(model.parameters()) + list(model_cl.parameters())
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    names = ['plain'] + [v for v in args.variants.split(',') if v]
    tasks = {n: make_task(n, model, model_cl, crit, dev) for n in names[1:] if n != 'plain_cl'}
    tasks['plain'] = ClassificationTask(model, criterion=crit, device=dev, verbose=False)
    tasks['plain_cl'] = ClassificationTask(model_cl, criterion=crit, device=dev, verbose=False)
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
    model_cl.train()
    for r, (views, y) in enumerate(batches):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            task = tasks[n]
            plain = n.startswith('plain')
            inp = views[:, 0] if plain else views[:, :task.num_views]
            if n == 'plain_cl':
                inp = inp.contiguous(memory_format=torch.channels_last)
            sync()
            with amp:
                if not plain:  # time the scoring part separately (same code path as inside forward)
                    vb, yb = task.split_views(inp, y)
                    s0 = time.perf_counter()
                    task.score(vb.flatten(0, 1), yb.repeat_interleave(task.num_views))
                    sync()
                    score_t = time.perf_counter() - s0
                t0, c0 = time.perf_counter(), time.process_time()
                out = task(inp, y)
            out['loss'].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if r:  # round 0 is warm-up
                times[n].append(time.perf_counter() - t0)
                cpu_times[n].append(time.process_time() - c0)
                if not plain:
                    score_times[n].append(score_t)

    med = statistics.median
    base_min, base_cpu = min(times['plain']), med(cpu_times['plain'])
    print(f'\ncost: model={args.model} batch={B} img={S} device={dev} threads={torch.get_num_threads()} '
          f'amp={args.amp} rounds={args.steps}')
    print('| variant | min step (ms) | median step (ms) | median CPU (ms) | vs plain (min wall) | '
          'vs plain (CPU) | scoring (ms, median) |')
    print('|---|---|---|---|---|---|---|')
    for n in names:
        sc = f'{1000 * med(score_times[n]):.0f}' if score_times[n] else '-'
        print(f'| {n} | {1000 * min(times[n]):.0f} | {1000 * med(times[n]):.0f} | {1000 * med(cpu_times[n]):.0f} | '
              f'{min(times[n]) / base_min:.2f}x | {med(cpu_times[n]) / base_cpu:.2f}x | {sc} |')


def load_cifar(root, split):
    d = np.load(os.path.join(root, f'cifar10_{split}.npz'))
    x = torch.from_numpy(d['x']).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(d['y']).long()


def train_epochs(model, opt, x, y, epochs, batch, gen):
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - batch + 1, batch):
            idx = perm[s:s + batch]
            xb, _ = random_crop_flip(x[idx], 4, True)
            with torch.autocast('cpu', dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(xb), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


def agreement(args, model, dev):
    x, y = load_cifar(args.agree_data, 'train_subset10k')
    xt, yt = load_cifar(args.agree_data, 'test')
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(xt), generator=gen)[:args.agree_images]
    xt, yt = xt[pick], yt[pick]
    M, n = 4, len(xt)
    torch.manual_seed(1)
    views = random_crop_flip(xt.repeat_interleave(M, 0), 4, True)[0]  # (n*M) image-major
    labels = yt.repeat_interleave(M)
    u = torch.rand(n, generator=gen)  # one uniform draw per image, shared by all options
    opt = torch.optim.SGD(model.parameters(), lr=args.agree_lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    options = [v for v in args.agree_variants.split(',') if v]
    print(f'\nagreement: model={args.model} trained on {len(x)} CIFAR-10 images (bf16, pad-crop+flip, '
          f'SGD lr {args.agree_lr}), {n} held-out images x M={M} pad-crop+flip views, T=1, eval-mode scoring')
    print('| epochs | exact mean loss | test acc (view 0) | option | TV mean | TV p95 | chosen-view agreement | '
          'max-loss view agreement |')
    print('|---|---|---|---|---|---|---|---|')
    done = 0
    for stage in sorted(int(s) for s in args.agree_stages.split(',')):
        train_epochs(model, opt, x, y, stage - done, args.agree_batch, gen)
        done = stage
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        scores = {}
        for name in ['m4'] + options:
            task = make_task(name, model, model_cl, None, dev)
            loss = torch.cat([task.score(views[s:s + 1024], labels[s:s + 1024])[0]
                              for s in range(0, len(views), 1024)])
            scores[name] = loss.view(n, M)
        exact = view_probabilities(scores['m4'])
        chosen = lambda p: (p.cumsum(1) < u.view(-1, 1)).sum(1).clamp_max(M - 1)
        with torch.no_grad():
            model.eval()
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        scores['uniform'] = torch.zeros(n, M)  # reference: plain random augmentation (all-zero -> uniform)
        for name in options + ['uniform']:
            p = view_probabilities(scores[name])
            tv = 0.5 * (p - exact).abs().sum(1)
            agree = (chosen(p) == chosen(exact)).float().mean().item()
            agree_max = (scores[name].argmax(1) == scores['m4'].argmax(1)).float().mean().item()
            print(f'| {stage} | {scores["m4"].mean():.3f} | {acc:.3f} | {name} | {tv.mean():.4f} | '
                  f'{tv.quantile(0.95):.4f} | {agree:.3f} | {agree_max:.3f} |')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='preactresnet18_cifar')
    p.add_argument('--num-classes', type=int, default=100)
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--steps', type=int, default=6, help='timed rounds (after one warm-up round); 0 = no timing')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', default='none', choices=['none', 'bfloat16', 'float16'],
                   help='autocast dtype for the whole step (as train.py --amp)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    p.add_argument('--variants', default='plain_cl,m2,m4,m4_bf16,m4_cl,m4_bf16_cl,m4_half,m4_half_bf16,m4_trainmode',
                   help='compared with the plain (NCHW) step; plain_cl is the plain step in channels-last')
    p.add_argument('--agree-data', default='', help='folder with cifar10_train_subset10k.npz and cifar10_test.npz')
    p.add_argument('--agree-stages', default='0,1,4', help='training epochs at which agreement is measured')
    p.add_argument('--agree-images', type=int, default=1000)
    p.add_argument('--agree-batch', type=int, default=128)
    p.add_argument('--agree-lr', type=float, default=0.05)
    p.add_argument('--agree-variants', default='m4_bf16,m4_cl,m4_bf16_cl,m4_half,m4_half_bf16,m4_trainmode')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=args.num_classes).to(dev)
    if args.agree_data:
        if dev.type != 'cpu':
            raise SystemExit('--agree-data runs on the CPU')
        agreement(args, model, dev)
    if args.steps:
        cost(args, model, dev)


if __name__ == '__main__':
    main()
