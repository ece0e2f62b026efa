"""The mixers drop into timm's own loader and training step on both the prefetcher and plain paths (CPU)."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_loader
from timm.loss import SoftTargetCrossEntropy

import timm_mixplug as tm

HIER = [0, 0, 1, 1]


class TinyImages(torch.utils.data.Dataset):
    """4 classes of 16x16 RGB images, each class a different colour pattern plus noise."""

    def __init__(self, n=32, size=16):
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(n):
            c = i % 4
            base = np.zeros((size, size, 3), np.float32)
            base[..., c % 3] = 180
            base[: size // 2] += 40 * (c // 3)
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            self.items.append((Image.fromarray(img), c))
        self.transform = None

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, c = self.items[i]
        return (self.transform(img) if self.transform else img), c


def train_steps(loader, mixer=None, finish=None, steps=3):
    torch.manual_seed(0)
    model = timm.create_model('resnet10t', num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    crit = tm.SoftTargetKLDiv()
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for step, (x, y) in enumerate(loader):
        if mixer is not None:
            x, y = mixer(x, y)
        if finish is not None:
            x = finish(x)
        assert y.shape == (len(x), 4) and torch.allclose(y.sum(1), torch.ones(len(x)))
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step + 1 == steps:
            break
    assert len(losses) == steps and all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return losses


def loader(collate_fn=None, prefetcher=True):
    return create_loader(
        TinyImages(), input_size=(3, 16, 16), batch_size=8, is_training=True, use_prefetcher=prefetcher,
        device=torch.device('cpu'), collate_fn=collate_fn, num_workers=0, hflip=0.5, color_jitter=0.0)


@pytest.mark.parametrize('name,kw', [('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=HIER))])
def test_prefetcher_path_collate(name, kw):
    collate = tm.create_mixup(name, 4, collate=True, **kw)
    ld = loader(collate)
    assert ld.mixup_enabled  # timm's PrefetchLoader sees our collate as a FastCollateMixup
    ld.mixup_enabled = False
    assert collate.mixup_enabled is False
    ld.mixup_enabled = True
    finish = tm.zero_mean if name == 'bcplus' else None
    train_steps(ld, finish=finish)


@pytest.mark.parametrize('name,kw', [('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=HIER))])
def test_plain_path_mixer(name, kw):
    train_steps(loader(prefetcher=False), mixer=tm.create_mixup(name, 4, **kw))


def test_prefetcher_path_device_mix_after_normalisation():
    # the exact BC+ path for the prefetcher: default fast collate, mix on the device after normalisation
    train_steps(loader(), mixer=tm.create_mixup('bcplus', 4))


def test_bc_learns_tiny_task():
    """A few epochs of BC on the separable toy set lower the KL loss."""
    ld = loader(tm.create_mixup('bc', 4, collate=True))
    losses = []
    torch.manual_seed(0)
    model = timm.create_model('resnet10t', num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        for x, y in ld:
            loss = tm.SoftTargetKLDiv()(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    with torch.no_grad():
        out = model(x)
        kl, ce = tm.SoftTargetKLDiv()(out, y), SoftTargetCrossEntropy()(out, y)
    entropy = -(torch.xlogy(y, y)).sum(1).mean()
    assert torch.allclose(ce, kl + entropy, atol=1e-4)  # cross-entropy = KL + H(target)
