"""Max |BC+ collate path - device path| in normalised units, through timm's create_loader prefetcher path.

Collate path: ``create_mixup('bcplus', collate=True)`` -> timm's ``PrefetchLoader`` (cast, normalise) ->
``zero_mean`` (what train.py does). Device path: normalise -> ``zero_mean`` -> ``create_mixup('bcplus')``.
Both use the same partners and ratios. Images: 64 generated high-contrast ones (half black / half white plus
noise) and, with ``--data``, 64 CIFAR-10 test images; "outside [0, 255]" counts the images whose BC+ mix
leaves the uint8 range (a uint8 collate would clip them).

    python benchmarks/bcplus_collate_error.py [--data ../shared/data]
"""
import argparse
import os

import numpy as np
import torch
from timm.data import create_loader

import timm_mixplug as tm

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Items(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.transform = x, y, None  # create_loader sets a transform; it is not applied

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].numpy(), int(self.y[i])


def high_contrast(n=64, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, s, s)
    x[..., s // 2:] = 255
    x[1::2] = x[1::2].transpose(-1, -2)
    x += torch.randn(x.shape, generator=g) * 20
    return x.clamp(0, 255).to(torch.uint8)


def max_error(x, y, out_dtype):
    n = len(x)
    partner, r = torch.roll(torch.arange(n), 1), torch.linspace(0.05, 0.95, n)
    fixed = lambda target: (partner, r)  # noqa: E731
    collate = tm.create_mixup('bcplus', 10, collate=True, mean=CIFAR_MEAN, std=CIFAR_STD, out_dtype=out_dtype)
    collate.mixer.sample = fixed
    loader = create_loader(Items(x, y), input_size=(3, *x.shape[-2:]), batch_size=n, is_training=False,
                           use_prefetcher=True, mean=CIFAR_MEAN, std=CIFAR_STD, collate_fn=collate,
                           device=torch.device('cpu'), num_workers=0)
    got = tm.zero_mean(next(iter(loader))[0])
    device = tm.create_mixup('bcplus', 10)
    device.sample = fixed
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255
    ref, _ = device(tm.zero_mean((x.float() - mean) / std), y)
    pixels = ref * std + mean
    outside = int(((pixels < -0.5) | (pixels > 255.5)).flatten(1).any(1).sum())
    return (got - ref).abs().max().item(), outside


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='', help='folder with cifar10_test.npz')
    args = ap.parse_args()
    if args.data and not os.path.isfile(os.path.join(args.data, 'cifar10_test.npz')):
        ap.error(f'--data {args.data}: no cifar10_test.npz there (a folder holding CIFAR-10 test images as an '
                 'npz with x (N, 32, 32, 3) uint8 and y); leave --data out to use only the generated images')
    sets = [('64 high-contrast 32x32', high_contrast(), torch.arange(64) % 10)]
    if args.data:
        d = np.load(os.path.join(args.data, 'cifar10_test.npz'))
        idx = np.random.RandomState(0).permutation(len(d['y']))[:64]
        sets.append(('64 CIFAR-10 test', torch.from_numpy(d['x'][idx]).permute(0, 3, 1, 2).contiguous(),
                     torch.from_numpy(d['y'][idx]).long()))
    print('| images | outside [0, 255] | max error float16 | max error float32 |')
    print('|---|---|---|---|')
    for name, x, y in sets:
        e16, outside = max_error(x, y, torch.float16)
        e32, _ = max_error(x, y, torch.float32)
        print(f'| {name} | {outside} | {e16:.2e} | {e32:.2e} |')


if __name__ == '__main__':
    main()
