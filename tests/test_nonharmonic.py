"""Importance-sampled augmentation (seed 003): sampler, task, data layouts."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import timm

from timm.data.loader import fast_collate
from conftest import load_train_script, make_tiny_images, read_rows, run_torchrun, tiny_train_args
from timm_mixplug.task.nonharmonic import (
    MultiViewDataset, NonHarmonicTask, multiview_collate, sample_views, view_probabilities,
)
from timm_mixplug.data.transforms import DeviceAugment


# ------------------------------------------------------------------------------------------------ sampler
def test_probabilities_from_known_losses():
    losses = torch.tensor([[1.0, 3.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    p = view_probabilities(losses)
    torch.testing.assert_close(p, torch.tensor([[0.25, 0.75, 0.0, 0.0], [0.25] * 4]))
    # temperature: p ~ loss^(1/T)
    torch.testing.assert_close(view_probabilities(losses[:1, :2], temperature=0.5), torch.tensor([[0.1, 0.9]]))
    torch.testing.assert_close(view_probabilities(losses[:1, :2], temperature=2.0),
                               torch.tensor([[1.0, 3 ** 0.5]]) / (1 + 3 ** 0.5))
    # T = 0: the max-loss view (MaxUp)
    torch.testing.assert_close(view_probabilities(losses[:1], temperature=0.0), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    # uniform floor
    torch.testing.assert_close(view_probabilities(losses[:1], uniform_mix=0.2),
                               torch.tensor([[0.25, 0.65, 0.05, 0.05]]))
    # all-zero row -> uniform; huge losses with a small temperature stay finite
    torch.testing.assert_close(view_probabilities(torch.zeros(1, 3)), torch.full((1, 3), 1 / 3))
    p = view_probabilities(torch.tensor([[500.0, 1000.0]]), temperature=0.01)
    assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(1))
    p = view_probabilities(torch.tensor([[float('nan'), float('inf'), 1.0]]))  # fp16 overflow in scoring
    torch.testing.assert_close(p, torch.tensor([[0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError):
        view_probabilities(losses, temperature=-1)
    with pytest.raises(ValueError):
        view_probabilities(losses, uniform_mix=1.5)


def test_zero_loss_view_never_chosen_and_frequencies():
    losses = torch.tensor([[0.0, 1.0, 3.0]]).expand(4000, 3)
    g = torch.Generator().manual_seed(0)
    idx = sample_views(view_probabilities(losses), g)
    assert (idx != 0).all()
    freq = torch.bincount(idx, minlength=3).float() / len(idx)
    assert abs(freq[2].item() - 0.75) < 0.03  # binomial sd ~0.007
    # with a uniform floor the zero-loss view becomes possible
    idx = sample_views(view_probabilities(losses, uniform_mix=0.3), g)
    assert (idx == 0).any()


def test_seeded_determinism():
    p = view_probabilities(torch.rand(64, 4))
    torch.manual_seed(3)
    a = sample_views(p)
    torch.manual_seed(3)
    b = sample_views(p)
    assert torch.equal(a, b)
    a = sample_views(p, torch.Generator().manual_seed(1))
    b = sample_views(p, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------ task
class SignModel(nn.Module):
    """logits = 100 * a * [s, -s], s = mean of the image: an image of +1s has exactly zero CE for class 0,
    an image of -1s has CE 200."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x):
        s = x.flatten(1).mean(1, keepdim=True)
        _ = self.bn(s)  # moves running stats in train mode
        return 100 * self.a * torch.cat([s, -s], dim=1)


def _sign_views(B, pattern=(1.0, -1.0, 1.0, -1.0)):
    return torch.tensor(pattern).view(1, -1, 1, 1, 1).expand(B, -1, 3, 4, 4).clone()


def test_task_picks_informative_views_and_reports_losses():
    B = 6
    task = NonHarmonicTask(SignModel(), num_views=4)
    torch.manual_seed(0)
    views, y = _sign_views(B), torch.zeros(B, dtype=torch.long)
    chosen, idx, stats = task.choose(views, y)
    assert (idx % 2 == 1).all()  # zero-loss views (index 0, 2) are never chosen
    assert torch.equal(chosen, views[:, 1])
    assert stats['nh_chosen_loss'].item() == pytest.approx(200.0)
    assert stats['nh_mean_loss'].item() == pytest.approx(100.0)
    assert stats['nh_max_loss'].item() == pytest.approx(200.0)
    out = task(views, y)
    out['loss'].backward()
    assert out['output'].shape == (B, 2) and task.trainable_module.a.grad is not None
    assert {'nh_chosen_loss', 'nh_mean_loss', 'nh_max_loss'} <= set(out)


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_scoring_leaves_bn_state_and_mode(mode):
    model = SignModel()
    model.bn.running_mean.fill_(0.5)
    task = NonHarmonicTask(model, num_views=2, score_mode=mode)
    task.train()
    before = [b.clone() for b in model.bn.buffers()]
    task.score(torch.randn(8, 3, 4, 4), torch.zeros(8, dtype=torch.long))
    assert model.training
    for a, b in zip(before, model.bn.buffers()):
        assert torch.equal(a, b)


def test_layouts_agree():
    M, B = 3, 4
    task = NonHarmonicTask(SignModel(), num_views=M)
    views = torch.randn(B, M, 3, 4, 4)
    y = torch.arange(B)
    ref, ty = task.split_views(views, y)
    flat = views.transpose(0, 1).reshape(M * B, 3, 4, 4)  # timm fast_collate: view-major
    a, ta = task.split_views(flat, y.repeat(M))
    b, tb = task.split_views([views[:, m] for m in range(M)], y)
    assert torch.equal(ref, a) and torch.equal(ref, b) and torch.equal(ta, y) and torch.equal(tb, y)
    with pytest.raises(ValueError):
        task.split_views(torch.randn(B, M + 1, 3, 4, 4), y)


class _Toy(torch.utils.data.Dataset):
    def __init__(self, n=4):
        self.n = n
        self.transform = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = np.full((3, 4, 4), i, dtype=np.uint8)
        return (img if self.transform is None else self.transform(img)), i


def test_multiview_dataset_and_collates():
    ds = _Toy()
    rng = np.random.default_rng(0)
    mv = MultiViewDataset(ds, num_views=3)
    mv.transform = lambda a: (a + rng.integers(0, 100)).astype(np.uint8)  # as timm's create_loader sets it
    assert ds.transform is None and mv.transform is not None
    batch = [mv[i] for i in range(4)]
    x, y = multiview_collate(batch)
    assert x.shape == (4, 3, 3, 4, 4) and x.dtype == torch.uint8 and torch.equal(y, torch.arange(4))
    assert not torch.equal(x[:, 0], x[:, 1])  # independent draws
    flat, fy = fast_collate(batch)  # timm prefetcher path
    task = NonHarmonicTask(SignModel(), num_views=3)
    x2, y2 = task.split_views(flat, fy)
    assert torch.equal(x2, x) and torch.equal(y2, y)


def test_device_views_mixer_and_bf16_scoring():
    from timm_mixplug import create_mixup
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=10)
    mixer = create_mixup('mixup', num_classes=10)
    task = NonHarmonicTask(model, num_views=2, mixer=mixer, view_augment=DeviceAugment(padding=4, cutout_length=8),
                           score_dtype=torch.bfloat16, channels_last=True)
    out = task(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and out['output'].shape == (4, 10)
    assert 0 <= out['nh_chosen_loss'] <= out['nh_max_loss'] + 1e-4
    with pytest.raises(ValueError):  # mixing belongs after the choice
        task(torch.randn(4, 3, 32, 32), torch.rand(4, 10))


def _scoring_case():
    torch.manual_seed(0)
    model = timm.create_model('resnet20_cifar', num_classes=10)
    for m in model.modules():  # non-trivial BN statistics, as in a model that has been trained
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))


def test_exact_scoring_is_per_view_cross_entropy_in_eval_mode():
    model, flat, y = _scoring_case()
    task = NonHarmonicTask(model, num_views=4)
    assert task.score_dtype is None and task.score_scale == 1.0  # library default: exact
    task.train()
    loss, err = task.score(flat, y)
    model.eval()
    with torch.no_grad():
        logits = model(flat)
    assert torch.allclose(loss, nn.functional.cross_entropy(logits, y, reduction='none'), atol=1e-5)
    assert torch.allclose(err, 1 - logits.softmax(-1).gather(1, y.view(-1, 1)).squeeze(1), atol=1e-6)


@pytest.mark.parametrize('kw', [dict(score_dtype=torch.bfloat16), dict(score_scale=0.5),
                                dict(score_scale=0.5, score_dtype=torch.bfloat16), dict(channels_last=True)])
def test_approximate_scoring_gives_valid_probabilities(kw):
    model, flat, y = _scoring_case()
    exact, _ = NonHarmonicTask(model, num_views=4).score(flat, y)
    loss, err = NonHarmonicTask(model, num_views=4, **kw).score(flat, y)
    assert loss.dtype == torch.float32 and loss.shape == (24,) and torch.isfinite(loss).all() and (loss >= 0).all()
    p = view_probabilities(loss.view(6, 4))
    assert torch.allclose(p.sum(1), torch.ones(6)) and (p >= 0).all()
    model.eval()
    if kw.get('score_scale', 1.0) != 1.0:  # half resolution: exact scoring of the antialiased downscaled views
        small = nn.functional.interpolate(flat, scale_factor=0.5, mode='bilinear', antialias=True)
        with torch.no_grad():
            ref = nn.functional.cross_entropy(model(small), y, reduction='none')
        tol = 0.05 if 'score_dtype' in kw else 1e-5
        assert torch.allclose(loss, ref, rtol=tol, atol=tol)
    else:  # bf16 rounding (relative 2^-8 per operation) or channels-last summation order
        tol = 0.05 if 'score_dtype' in kw else 1e-4
        assert torch.allclose(loss, exact, rtol=tol, atol=tol)


def _nh_spec_task(args):
    from timm_mixplug.train.specs import DataInfo, get_task_spec
    return get_task_spec('nonharmonic').create_task(args, SignModel(), None, None, DataInfo(num_classes=2),
                                                   torch.device('cpu'))


def test_score_dtype_auto(monkeypatch):
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.specs import nonharmonic as spec
    from timm_mixplug.utils.precision import native_bf16
    cpu = torch.device('cpu')
    assert native_bf16(torch.device('meta')) is False
    if os.path.isfile('/proc/cpuinfo'):  # the instruction sets the CPU reports
        flags = set(open('/proc/cpuinfo').read().split())
        assert native_bf16(cpu) == bool({'avx512_bf16', 'amx_tile'} & flags)
    assert spec.resolve_score_dtype('none', cpu, False) is None  # exact: the step's own numerics
    assert spec.resolve_score_dtype('bfloat16', cpu, True) is torch.bfloat16
    args = parse_args(['--task', 'nonharmonic', '--device', 'cpu'])
    assert args.nh_score_dtype == 'auto'
    monkeypatch.setattr(spec, 'native_bf16', lambda device: True)
    assert spec.resolve_score_dtype('auto', cpu, False) is torch.bfloat16
    assert spec.resolve_score_dtype('auto', cpu, True) is None  # --amp: scoring inherits its autocast
    assert _nh_spec_task(args).score_dtype is torch.bfloat16
    args.amp = True
    assert _nh_spec_task(args).score_dtype is None
    monkeypatch.setattr(spec, 'native_bf16', lambda device: False)
    assert spec.resolve_score_dtype('auto', cpu, False) is None


def test_args_roundtrip():
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.specs import get_task_spec
    spec = get_task_spec('nonharmonic')
    args = parse_args(['--task', 'nonharmonic', '--nh-views', '4', '--nh-temperature', '0.5', '--nh-device-views',
                       '--nh-view-cutout', '8', '--no-aug', '--device', 'cpu'])
    task = _nh_spec_task(args)
    assert task.num_views == 4 and task.temperature == 0.5 and task.view_augment.cutout_length == 8
    assert spec.wrap_dataset(_Toy(), args, None, True).__class__ is _Toy  # device views: the loader is untouched
    args = parse_args(['--task', 'nonharmonic', '--nh-views', '2', '--device', 'cpu'])
    assert isinstance(spec.wrap_dataset(_Toy(), args, None, True), MultiViewDataset)


# ------------------------------------------------------------------------------------- train.py end to end
@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'nh_imgs', val_per_class=2)


@pytest.mark.parametrize('extra', [
    ['--mix', 'mixup'],  # prefetcher: timm fast_collate's view-major layout
    ['--no-prefetcher', '--nh-temperature', '0'],  # multiview_collate (B, M, ...) layout, MaxUp limit
    ['--nh-device-views', '--no-aug', '--mix', 'bc'],  # views made on the device
])
def test_train_py_nonharmonic(image_dir, tmp_path, extra):
    train = load_train_script('mixplug_train_script_nh')
    argv = tiny_train_args(image_dir, tmp_path, 'nh', '--task', 'nonharmonic', '--nh-views', '2', *extra)
    assert train.main(argv) == 0
    row = read_rows(tmp_path / 'nh' / 'summary.csv')[0]
    chosen, mean, top = (float(row[f'train_nh_{k}_loss']) for k in ('chosen', 'mean', 'max'))
    assert np.isfinite(mean) and chosen <= top + 1e-5  # chosen >= mean only in expectation (8 images x 4 steps)
    if '--nh-temperature' in extra:  # T = 0: always the max-loss view
        assert chosen == pytest.approx(top, rel=1e-5)
    from safetensors.torch import load_file
    timm.create_model('resnet20_cifar', num_classes=4).load_state_dict(
        load_file(str(tmp_path / 'nh' / 'best.safetensors')))


def test_ddp_world_size_one(gloo_group):
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = timm.create_model('test_resnet', num_classes=10)
    task = NonHarmonicTask(model, num_views=2).prepare_distributed()
    assert isinstance(task.trainable_module, DDP) and task._score_module() is model
    out = task(torch.randn(4, 2, 3, 32, 32), torch.randint(0, 10, (4,)))
    out['loss'].backward()
    assert model.fc.weight.grad is not None
    assert set(task.get_checkpoint_state()['state_dict']) == set(model.state_dict())


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not available')
def test_train_py_nonharmonic_two_process_gloo(image_dir, tmp_path):
    proc = run_torchrun(tiny_train_args(image_dir, tmp_path, 'ddp', '--task', 'nonharmonic', '--nh-views', '2',
                                        '--mix', 'mixup', batch_size=4))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'ddp' / 'best.safetensors').is_file()
