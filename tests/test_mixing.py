"""BC, BC+ and superclass mixing checked against their formulas, invariants and timm's contracts."""
import math

import pytest
import torch
from timm.data.mixup import FastCollateMixup, Mixup, mixup_target
from timm.loss import SoftTargetCrossEntropy

import timm_mixplug as tm
from conftest import Uint8Items
from timm_mixplug.data.mixing.base import pair_target

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def constant_batch(labels, size=4):
    """Image k is the constant k + 1, so a mixed value reveals the partner and the ratio."""
    b = len(labels)
    x = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, size, size).contiguous()
    return x, torch.tensor(labels)


def recover_pairs(xm, soft, target):
    """From BC output on constant images: partner index j and ratio r with xm_i = r (i+1) + (1-r)(j+1)."""
    r = soft[torch.arange(len(target)), target]
    j = (xm[:, 0, 0, 0] - r * (torch.arange(len(target)) + 1)) / (1 - r) - 1
    return j, r


def test_bc_formula_and_targets():
    torch.manual_seed(0)
    labels = [0, 1, 2, 0, 1, 2, 3, 3]
    x, y = constant_batch(labels)
    xm, soft = tm.create_mixup('bc', 5)(x.clone(), y)
    j, r = recover_pairs(xm, soft, y)
    jr = j.round().long()
    assert torch.allclose(j, jr.float(), atol=1e-3), 'mixed image is not r x_i + (1 - r) x_j'
    assert (y[jr] != y).all(), 'BC mixed two images of the same class'
    # image mixed with the same r as the target, and the target has exactly the two classes
    expected = pair_target(y, y[jr], r, 5)
    assert torch.allclose(soft, expected, atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    assert ((soft > 0).sum(1) == 2).all()
    assert torch.allclose(xm, (r.view(-1, 1, 1, 1) * x + (1 - r.view(-1, 1, 1, 1)) * x[jr]), atol=1e-5)


def test_bc_partner_uniform_over_other_classes():
    torch.manual_seed(1)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1])
    n = 20000
    counts = torch.zeros(8, 8)
    for _ in range(n):
        counts[torch.arange(8), tm.sample_other_class_partner(y)] += 1
    same = y[:, None] == y[None, :]
    assert counts[same].sum() == 0
    expected = (~same).float() / (~same).sum(1, keepdim=True) * n
    assert (counts[~same] - expected[~same]).abs().max() < 5 * math.sqrt(n / 4)


def test_bc_ratio_is_uniform():
    torch.manual_seed(2)
    y = torch.arange(256) % 10
    x = torch.randn(256, 3, 2, 2)
    r = torch.cat([tm.create_mixup('bc', 10)(x.clone(), y)[1][torch.arange(256), y] for _ in range(20)])
    hist = torch.histc(r, bins=10, min=0, max=1) / len(r)
    assert (hist - 0.1).abs().max() < 0.02


def test_bcplus_hand_computed():
    # x1 = [0, 2]: mu 1, sigma 1; x2 = [1, 5]: mu 3, sigma 2; r = 0.5 -> p = 1 / (1 + 1/2) = 2/3,
    # D = sqrt(4/9 + 1/9) = sqrt(5)/3, x = (2/3 [-1, 1] + 1/3 [-2, 2]) / D = [-4/sqrt5, 4/sqrt5]
    mixer = tm.BetweenClassPlusMixer(2)
    x = torch.tensor([[[[0.0, 2.0]]], [[[1.0, 5.0]]]])
    partner, r = torch.tensor([1, 0]), torch.tensor([0.5, 0.5])
    out = mixer.mix_(x.clone(), partner, mixer.coefficients(x, partner, r))
    assert torch.allclose(out[0].flatten(), torch.tensor([-4 / math.sqrt(5), 4 / math.sqrt(5)]), atol=1e-5)
    # element 1 mixes x2 with x1 at r = 0.5: p = 1 / (1 + 2) = 1/3, D = sqrt(5)/3 -> same image
    assert torch.allclose(out[1], out[0], atol=1e-5)


def test_bcplus_matches_formula_on_random_batch():
    torch.manual_seed(3)
    x = torch.randn(6, 3, 5, 5) * torch.rand(6, 1, 1, 1) * 3 + torch.randn(6, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixer = tm.create_mixup('bcplus', 3)
    torch.manual_seed(4)
    partner, r = mixer.sample(y)
    torch.manual_seed(4)
    out, soft = mixer(x.clone(), y)
    x64 = x.double()
    mu = x64.mean(dim=(1, 2, 3))
    sd = x64.std(dim=(1, 2, 3), unbiased=False)
    r64 = r.double()
    p = 1 / (1 + sd / sd[partner] * (1 - r64) / r64)
    bp = lambda v: v.view(-1, 1, 1, 1)
    ref = (bp(p) * (x64 - bp(mu)) + bp(1 - p) * (x64[partner] - bp(mu[partner]))) / bp(torch.sqrt(p ** 2 + (1 - p) ** 2))
    assert torch.allclose(out.double(), ref, atol=1e-4)
    # label mixed with r, not p
    assert torch.allclose(soft, pair_target(y, y[partner], r, 3), atol=1e-6)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(6), atol=1e-5)


def test_label_smoothing_matches_timm():
    y = torch.tensor([3, 1, 4, 1, 5, 9])
    lam = 0.3
    ours = pair_target(y, y.flip(0), torch.full((6,), lam), 10, smoothing=0.1)
    assert torch.allclose(ours, mixup_target(y, 10, lam, smoothing=0.1), atol=1e-6)


@pytest.mark.parametrize('name,kw', [('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=[0, 0, 1, 1]))])
def test_mixup_disabled_is_identity(name, kw):
    mixer = tm.create_mixup(name, 4, label_smoothing=0.2, **kw)
    mixer.mixup_enabled = False
    x = torch.randn(4, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3])
    out, soft = mixer(x.clone(), y)
    assert torch.equal(out, x)
    assert torch.allclose(soft, mixup_target(y, 4, 1.0, smoothing=0.2))


@pytest.mark.parametrize('name,kw', [('bc', {}), ('bcplus', {}), ('superclass', dict(hierarchy=[0, 0, 1, 1]))])
def test_deterministic_under_seed(name, kw):
    x = torch.randn(8, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(tm.create_mixup(name, 4, **kw)(x.clone(), y))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_bad_input_errors():
    bc = tm.create_mixup('bc', 4)
    with pytest.raises(ValueError, match='different classes.*partners=DatasetPartners'):
        bc(torch.randn(4, 3, 2, 2), torch.tensor([2, 2, 2, 2]))
    with pytest.raises(ValueError, match=r'Labels must lie in \[0, 3\].*set num_classes'):
        bc(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match='integer class indices'):
        bc(torch.randn(4, 3, 2, 2), torch.rand(4, 4))
    with pytest.raises(ValueError, match="Unknown mixing method 'bcc'.*bc, bcplus, cutmix, mixup, superclass"):
        tm.create_mixup('bcc', 4)
    with pytest.raises(ValueError, match='superclass map'):
        tm.create_mixup('superclass', 4)
    with pytest.raises(ValueError, match="'beta' or 'choice'"):
        tm.create_mixup('superclass', 4, hierarchy=[0, 0, 1, 1], mode='uniform')


def test_register_third_party_mixer():
    class Flip(tm.PairMixer):
        def sample(self, target):
            return torch.arange(len(target)).flip(0), torch.full((len(target),), 0.25)

    tm.register_mixup('flip_quarter', lambda num_classes, label_smoothing=None, collate=False: Flip(num_classes))
    assert 'flip_quarter' in tm.list_mixups()
    x, y = constant_batch([0, 1])
    out, soft = tm.create_mixup('flip_quarter', 2)(x.clone(), y)
    assert torch.allclose(out[0], torch.full_like(out[0], 0.25 * 1 + 0.75 * 2))
    assert torch.allclose(soft[0], torch.tensor([0.25, 0.75]))


def test_timm_passthrough():
    assert type(tm.create_mixup('mixup', 10)) is Mixup
    assert type(tm.create_mixup('cutmix', 10, collate=True)) is FastCollateMixup
    m = tm.create_mixup('cutmix', 10)
    assert m.cutmix_alpha == 1.0 and m.mixup_alpha == 0.0 and m.label_smoothing == 0.1


def test_superclass_beta_mode_distributions():
    torch.manual_seed(5)
    table = torch.tensor([c // 5 for c in range(20)])  # 4 superclasses of 5 classes
    mixer = tm.create_mixup('superclass', 20, hierarchy=table.tolist())
    y = torch.arange(20).repeat(8)
    lams, same = [], []
    for _ in range(20):
        partner, lam = mixer.sample(y)
        lams.append(lam)
        same.append(table[y] == table[y[partner]])
    lam, same = torch.cat(lams), torch.cat(same)
    ls, ld = lam[same], lam[~same]
    assert len(ls) > 300 and len(ld) > 300
    # Beta(8, 8): var 1/68 ~ 0.0147; Beta(0.2, 0.2): var 1/5.6 ~ 0.179
    assert abs(ls.mean() - 0.5) < 0.02 and abs(ls.var() - 1 / 68) < 0.004
    assert abs(ld.mean() - 0.5) < 0.04 and abs(ld.var() - 1 / 5.6) < 0.02
    # the image and target use the sampled pair and ratio
    x = torch.randn(len(y), 3, 2, 2)
    torch.manual_seed(9)
    partner, lam = mixer.sample(y)
    torch.manual_seed(9)
    out, soft = mixer(x.clone(), y)
    assert torch.allclose(out, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner], atol=1e-6)
    assert torch.allclose(soft, pair_target(y, y[partner], lam, 20), atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(len(y)))


def test_superclass_choice_mode():
    torch.manual_seed(6)
    mixer = tm.create_mixup('superclass', 20, hierarchy=[c // 5 for c in range(20)], mode='choice')
    y = torch.arange(20).repeat(2)
    x = torch.randn(40, 3, 2, 2)
    for _ in range(10):
        torch.manual_seed(_)
        partner, lam = mixer.sample(y)
        same = torch.tensor([c // 5 for c in range(20)])[y] == torch.tensor([c // 5 for c in range(20)])[y[partner]]
        assert (lam[same] == 0.5).all()
        ld = lam[~same]
        assert len(ld) and (((ld - 0.1).abs() < 1e-6) | ((ld - 0.9).abs() < 1e-6)).all()
        torch.manual_seed(_)
        out, soft = mixer(x.clone(), y)
        assert torch.allclose(out, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner], atol=1e-6)


def test_superclass_builtin_cifar100():
    mixer = tm.create_mixup('superclass', 100, hierarchy='cifar100')
    assert mixer.hierarchy.num_superclasses == 20
    with pytest.raises(ValueError):
        tm.create_mixup('superclass', 10, hierarchy='cifar100')


def uint8_batch(n=8, size=6, seed=0, lo=0, hi=256):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(lo, hi, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = [i % 4 for i in range(n)]
    return imgs, labels


@pytest.mark.parametrize('name,kw', [('bc', {}), ('superclass', dict(hierarchy=[0, 0, 1, 1]))])
def test_collate_matches_device_mix(name, kw):
    imgs, labels = uint8_batch()
    batch = [(imgs[i].numpy(), labels[i]) for i in range(len(labels))]
    collate = tm.create_mixup(name, 4, collate=True, **kw)
    assert isinstance(collate, FastCollateMixup)
    torch.manual_seed(11)
    out, soft = collate(batch)
    torch.manual_seed(11)
    ref, ref_soft = tm.create_mixup(name, 4, **kw)(imgs.float(), torch.tensor(labels))
    assert out.dtype == torch.uint8
    assert (out.float() - ref).abs().max() <= 0.5 + 1e-4
    assert torch.allclose(soft, ref_soft)


def clipping_uint8_batch(n=8, size=8, seed=0):
    """High-contrast images (half black / half white plus noise): their BC+ mix leaves [0, 255] in pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    x[..., size // 2:] = 255
    x[1::2] = x[1::2].transpose(-1, -2)
    x += torch.randn(x.shape, generator=g) * 20
    return x.clamp(0, 255).to(torch.uint8), [i % 4 for i in range(n)]


@pytest.mark.parametrize('out_dtype,eps', [(torch.float16, 2.0 ** -11), (torch.float32, 2.0 ** -24)])
def test_bcplus_collate_through_prefetcher_equals_device_mixer(out_dtype, eps):
    """timm's create_loader prefetcher path (collate -> PrefetchLoader normalisation -> zero_mean, as train.py)
    equals the device mixer on the normalised batch up to rounding to out_dtype, on images that clip in uint8."""
    from timm.data import create_loader
    imgs, labels = clipping_uint8_batch()
    n = len(labels)
    partner, r = torch.tensor([1, 2, 3, 0, 5, 6, 7, 4]), torch.linspace(0.05, 0.95, n)
    fixed = lambda target: (partner, r)  # same draw on both paths (the loader consumes the global RNG)
    collate = tm.create_mixup('bcplus', 4, collate=True, mean=CIFAR_MEAN, std=CIFAR_STD, out_dtype=out_dtype)
    collate.mixer.sample = fixed
    loader = create_loader(Uint8Items(imgs, labels), input_size=(3, 8, 8), batch_size=n, is_training=False,
                           use_prefetcher=True, mean=CIFAR_MEAN, std=CIFAR_STD, collate_fn=collate,
                           device=torch.device('cpu'), num_workers=0)
    out, soft = next(iter(loader))
    got = tm.zero_mean(out)
    device = tm.create_mixup('bcplus', 4)
    device.sample = fixed
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255
    ref, ref_soft = device(tm.zero_mean((imgs.float() - mean) / std), torch.tensor(labels))
    pixels = ref * std + mean
    assert (pixels < -0.5).any() and (pixels > 255.5).any()  # the uint8 collate would clip these images
    assert torch.allclose(soft, ref_soft)
    # rounding each pixel to out_dtype (relative eps), divided by std; zero_mean can double the worst case
    bound = 2 * eps * pixels.abs().amax() / std.min() + 1e-5
    assert (got - ref).abs().max() <= bound


def test_bcplus_collate_emits_pixel_space_float():
    imgs, labels = uint8_batch(seed=3)
    batch = [(imgs[i], labels[i]) for i in range(len(labels))]
    torch.manual_seed(12)
    out, _ = tm.create_mixup('bcplus', 4, collate=True, mean=CIFAR_MEAN, std=CIFAR_STD)(batch)
    assert out.dtype == torch.float16 and out.shape == imgs.shape
    torch.manual_seed(12)
    out32, _ = tm.create_mixup('bcplus', 4, collate=True, mean=CIFAR_MEAN, std=CIFAR_STD,
                               out_dtype=torch.float32)(batch)
    assert out32.dtype == torch.float32
    assert torch.allclose(out.float(), out32, rtol=2.0 ** -11, atol=0)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255
    # pixel space: the normalised BC+ image has zero mean, so every image's pixel mean is the data mean
    assert torch.allclose(((out32 - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255) / std).mean((1, 2, 3)),
                          torch.zeros(len(labels)), atol=1e-4)
    for bad in (torch.uint8, torch.bfloat16):
        with pytest.raises(ValueError, match='out_dtype'):
            tm.create_mixup('bcplus', 4, collate=True, out_dtype=bad)


def test_collate_disabled_and_prefetch_switch():
    imgs, labels = uint8_batch()
    batch = [(imgs[i], labels[i]) for i in range(len(labels))]
    collate = tm.create_mixup('bc', 4, collate=True)
    collate.mixup_enabled = False
    out, soft = collate(batch)
    assert torch.equal(out, imgs)
    assert torch.equal(soft, torch.nn.functional.one_hot(torch.tensor(labels), 4).float())
    assert collate.mixer.mixup_enabled is False


def test_kl_loss_value_and_gradient():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    t = torch.tensor([[0.3, 0.7, 0.0], [0.5, 0.0, 0.5]])
    loss = tm.SoftTargetKLDiv()(logits, t)
    p = torch.softmax(logits.detach(), -1)
    hand = (0.3 * math.log(0.3 / p[0, 0]) + 0.7 * math.log(0.7 / p[0, 1])
            + 0.5 * math.log(0.5 / p[1, 0]) + 0.5 * math.log(0.5 / p[1, 2])) / 2
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    g_kl, = torch.autograd.grad(loss, logits)
    g_ce, = torch.autograd.grad(SoftTargetCrossEntropy()(logits, t), logits)
    assert torch.allclose(g_kl, g_ce, atol=1e-6)
    assert tm.SoftTargetKLDiv()(torch.log(t + 1e-12), t).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match='soft targets'):
        tm.SoftTargetKLDiv()(logits, torch.tensor([0, 1]))


@pytest.mark.parametrize('name', ['bc', 'bcplus'])
def test_single_class_batch_takes_partners_from_the_previous_batch(name):
    """A batch of one class is mixed with images of other classes kept (unmixed) from the previous batch, by
    the paper's rule; a first batch of one class, without a training set to draw from, is an error."""
    torch.manual_seed(0)
    mixer = tm.create_mixup(name, num_classes=3)
    with pytest.raises(ValueError, match='all 4 images to draw partners from have class 2'):
        mixer(torch.randn(4, 3, 4, 4), torch.full((4,), 2))
    mixer = tm.create_mixup(name, num_classes=3)
    first = torch.randn(4, 3, 4, 4)
    mixer(first.clone(), torch.tensor([0, 1, 1, 0]))
    x = torch.randn(6, 3, 4, 4)
    out, soft = mixer(x.clone(), torch.full((6,), 2))
    assert torch.allclose(soft.sum(1), torch.ones(6)) and (soft[:, 2] < 1).all()
    assert torch.allclose(soft[:, :2].sum(1), 1 - soft[:, 2])
    r = soft[:, 2]  # the own image's ratio
    pool = {0: first[0], 1: first[1]}  # the first image of each class of the previous batch
    for i in range(6):
        j = int(soft[i, :2].argmax())
        xi, xj = x[i], pool[j]
        if name == 'bc':
            expect = r[i] * xi + (1 - r[i]) * xj
        else:  # formula (2) with population std over C*H*W
            si, sj = xi.std(unbiased=False), xj.std(unbiased=False)
            p = 1 / (1 + si / sj * (1 - r[i]) / r[i])
            expect = (p * (xi - xi.mean()) + (1 - p) * (xj - xj.mean())) / torch.sqrt(p ** 2 + (1 - p) ** 2)
        assert torch.allclose(out[i], expect, atol=1e-5), i


def test_bc_collate_single_class_batch_uses_the_pool():
    collate = tm.create_mixup('bc', num_classes=3, collate=True)
    imgs = [torch.full((3, 2, 2), v, dtype=torch.uint8) for v in (10, 20, 30, 40)]
    collate([(imgs[0], 0), (imgs[1], 1)])
    out, soft = collate([(imgs[2], 2), (imgs[3], 2)])
    for i, own in enumerate((30, 40)):
        j = int(soft[i, :2].argmax())
        lam = float(soft[i, 2])
        expect = lam * own + (1 - lam) * (10, 20)[j]
        assert abs(float(out[i].float().mean()) - expect) <= 0.5 + 1e-3




# ---- both prefetcher paths: the collate (mixing in the loader worker) and the device (after the prefetcher) ----

PATHS = ('collate', 'device')
MIX_KW = {'bc': {}, 'bcplus': {}, 'superclass': dict(hierarchy=[0, 0, 1, 1])}


def mix_through_loader(path, name, imgs, labels, draw=None, enabled=True, batch_size=None):
    """One batch through timm's create_loader prefetcher path on the CPU device (standing in for the accelerator):
    our collate mixes the uint8 images, or timm's fast_collate sends them and the device mixer mixes the
    normalised batch (``placement.mix_prefetched``, as train.py's device path). ``draw`` replaces the mixer's
    ``sample``. Returns (normalised unmixed images, mixed batch zero-meaned where the method does, soft target,
    [(partner, lam, source labels)] the mixer drew); with ``batch_size``, lists of the batches' mixed images and
    soft targets."""
    from timm.data import create_loader
    from timm_mixplug.data.mixing.placement import mix_prefetched
    spec = tm.get_mixer_spec(name)
    norm = dict(mean=CIFAR_MEAN, std=CIFAR_STD) if spec.collate_needs_norm and path == 'collate' else {}
    made = tm.create_mixup(name, 4, collate=path == 'collate', **MIX_KW[name], **norm)
    mixer = made.mixer if path == 'collate' else made
    mixer.mixup_enabled = enabled
    drawn, sample = [], draw or mixer.sample

    def spy(target, source=None):
        partner, lam = sample(target) if source is None else sample(target, source)
        drawn.append((partner, lam, target if source is None else source))
        return partner, lam
    mixer.sample = spy
    loader = create_loader(Uint8Items(imgs, labels), input_size=tuple(imgs.shape[1:]),
                           batch_size=batch_size or len(labels), is_training=False, use_prefetcher=True,
                           mean=CIFAR_MEAN, std=CIFAR_STD, collate_fn=made if path == 'collate' else None,
                           device=torch.device('cpu'), num_workers=0)
    if path == 'collate':
        batches = [(tm.zero_mean(x) if spec.zero_mean_input else x, t) for x, t in loader]
    else:
        batches = list(mix_prefetched(loader, mixer, spec.zero_mean_input))
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255
    outs, softs = [b[0] for b in batches], [b[1] for b in batches]
    if batch_size is None:
        outs, softs = outs[0], softs[0]
    return (imgs.double() - mean) / std, outs, softs, drawn


def formula(name, x, partner, lam):
    """The method's image formula in float64 on the normalised partner source x (the batch first): mixup's
    lam x_i + (1 - lam) x_j (BC, superclass mixup), or BC+'s formula (2) with population std over C*H*W."""
    lam = lam.double().view(-1, 1, 1, 1)
    xi, xj = x[:len(partner)], x[partner]
    if name != 'bcplus':
        return lam * xi + (1 - lam) * xj
    mu, sd = x.mean((1, 2, 3), keepdim=True), x.std((1, 2, 3), unbiased=False, keepdim=True)
    p = 1 / (1 + sd[:len(partner)] / sd[partner] * (1 - lam) / lam)
    return (p * (xi - mu[:len(partner)]) + (1 - p) * (xj - mu[partner])) / torch.sqrt(p ** 2 + (1 - p) ** 2)


def path_tolerance(path, name, ref):
    """Normalised units: float32 on the device; the collate rounds to uint8 (BC, superclass) or float16 pixels."""
    std = 255 * min(CIFAR_STD)
    if path == 'device':
        return 1e-4
    if name != 'bcplus':
        return 0.5 / std + 1e-4
    pixels = ref.abs().amax() * 255 * max(CIFAR_STD) + 255
    return 2 * 2.0 ** -11 * pixels / std + 1e-4


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('name', ['bc', 'bcplus', 'superclass'])
def test_formula_on_both_prefetcher_paths(path, name):
    """Each method's formula (image and target) on the batch timm's prefetcher delivers, on both paths."""
    torch.manual_seed(5)
    imgs, labels = clipping_uint8_batch(n=8)
    x, out, soft, drawn = mix_through_loader(path, name, imgs, labels)
    (partner, lam, source), = drawn
    y = torch.tensor(labels)
    assert torch.equal(source, y)
    if name != 'superclass':
        assert (y[partner] != y).all(), 'BC mixed two images of the same class'
    ref = formula(name, x, partner, lam)
    assert (out.double() - ref).abs().max() <= path_tolerance(path, name, ref)
    assert torch.allclose(soft, pair_target(y, y[partner], lam, 4), atol=1e-6)  # target with lam (BC+: r, not p)


@pytest.mark.parametrize('name', ['bc', 'bcplus', 'superclass'])
def test_device_path_equals_collate_path(name):
    """Same draws on both paths: the device mixer's batch equals the collate's up to the collate's rounding."""
    imgs, labels = clipping_uint8_batch(n=8)
    partner, lam = torch.tensor([1, 2, 3, 0, 5, 6, 7, 4]), torch.linspace(0.05, 0.95, 8)
    got = {p: mix_through_loader(p, name, imgs, labels, draw=lambda t, s=None: (partner, lam)) for p in PATHS}
    (_, dev, dev_soft, _), (_, col, col_soft, _) = got['device'], got['collate']
    assert torch.equal(dev_soft, col_soft)
    assert (dev.double() - col.double()).abs().max() <= path_tolerance('collate', name, dev.double())


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('name', ['bc', 'bcplus', 'superclass'])
def test_mixup_disabled_is_identity_on_both_paths(path, name):
    imgs, labels = uint8_batch()
    x, out, soft, drawn = mix_through_loader(path, name, imgs, labels, enabled=False)
    expect = tm.zero_mean(x.clone()) if tm.get_mixer_spec(name).zero_mean_input else x
    assert not drawn and (out.double() - expect).abs().max() < 1e-5
    assert torch.equal(soft, torch.nn.functional.one_hot(torch.tensor(labels), 4).float())


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('name', ['bc', 'bcplus'])
def test_single_class_batch_formula_on_both_paths(path, name):
    """A single-class second batch takes its partners from the first images of each class of the first batch
    (unmixed), by the formula, on both paths."""
    torch.manual_seed(6)
    imgs, _ = clipping_uint8_batch(n=8)
    labels = [0, 1, 1, 0, 2, 2, 2, 2]
    x, outs, softs, drawn = mix_through_loader(path, name, imgs, labels, batch_size=4)
    (partner, lam, source) = drawn[1]
    assert torch.equal(source, torch.tensor([2, 2, 2, 2, 0, 1]))  # the batch, then the kept images of classes 0, 1
    src_x = torch.cat([x[4:], x[[0, 1]]])
    ref = formula(name, src_x, partner, lam)
    assert (partner >= 4).all()
    assert (outs[1].double() - ref).abs().max() <= path_tolerance(path, name, ref)
    assert torch.allclose(softs[1], pair_target(torch.full((4,), 2), source[partner], lam, 4), atol=1e-6)
