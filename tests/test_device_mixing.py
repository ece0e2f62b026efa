"""Where train.py mixes on timm's prefetcher path: the collate or the device (data/mixing/placement.py)."""
import functools

import pytest
import torch

from conftest import Uint8Items, load_train_script, make_tiny_images, tiny_train_args
from timm_mixplug.data.mixing import get_mixer_spec
from timm_mixplug.data.mixing.bc import BetweenClassPlusMixer
from timm_mixplug.data.mixing.placement import COLLATE, DEVICE, describe_path, mixing_path

train_script = load_train_script('mixplug_train_device_mixing')


def test_mixing_path_choices():
    bcplus, mixup = get_mixer_spec('bcplus'), get_mixer_spec('mixup')
    assert mixing_path(bcplus, torch.device('cpu')) == COLLATE
    for device in ('cuda', 'cuda:1', 'mps', 'xpu'):  # any accelerator: on the device (nothing runs there)
        assert mixing_path(bcplus, torch.device(device)) == DEVICE
    assert mixing_path(bcplus, torch.device('cpu'), on_device=True) == DEVICE
    assert mixing_path(bcplus, torch.device('cuda'), on_device=False) == COLLATE
    assert mixing_path(bcplus, torch.device('cuda'), prefetcher=False) == DEVICE
    assert mixing_path(mixup, torch.device('cpu')) == COLLATE  # timm's FastCollateMixup, as timm's train.py
    with pytest.raises(ValueError, match='on_device=False.*no prefetcher'):
        mixing_path(bcplus, torch.device('cpu'), prefetcher=False, on_device=False)
    assert 'on the device (cuda)' in describe_path('bcplus', DEVICE, torch.device('cuda'))
    assert "in the loader's collate" in describe_path('bcplus', COLLATE, torch.device('cpu'))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'device_mixing', val_per_class=2)


def test_train_py_device_path_on_cpu(data_dir, tmp_path, monkeypatch, caplog):
    """train.py with the device path forced on the CPU (standing in for an accelerator): the workers' collate is
    timm's plain one, the device mixer mixes every batch, and the start-up line says so."""
    from timm_mixplug.train import build
    calls = {'collate': 0, 'device': 0}
    collate, device = BetweenClassPlusMixer.collate_uint8, BetweenClassPlusMixer.__call__

    def spy_collate(self, *a):
        calls['collate'] += 1
        return collate(self, *a)

    def spy_device(self, x, target):
        calls['device'] += 1
        assert x.dtype == torch.float32 and abs(float(x.mean())) < 1e-3  # normalised and zero-meaned
        return device(self, x, target)
    monkeypatch.setattr(BetweenClassPlusMixer, 'collate_uint8', spy_collate)
    monkeypatch.setattr(BetweenClassPlusMixer, '__call__', spy_device)
    monkeypatch.setattr(build, 'mixing_path', functools.partial(mixing_path, on_device=True))
    assert train_script.main(tiny_train_args(data_dir, tmp_path, 'dev', '--mix', 'bcplus')) == 0
    assert calls == {'collate': 0, 'device': 4}  # 32 images, batch 8
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Mixing: ')]
    assert lines == ["Mixing: bcplus on the device (cpu), on the normalised batch after timm's prefetcher; the loader "
                     'workers send uint8 batches']
    monkeypatch.undo()
    caplog.clear()
    assert train_script.main(tiny_train_args(data_dir, tmp_path, 'col', '--mix', 'bcplus')) == 0
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith('Mixing: ')] == [
        "Mixing: bcplus in the loader's collate, on the uint8 images (timm's prefetcher path)"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name', ['bc', 'bcplus', 'superclass'])
def test_device_path_on_cuda_equals_the_formula(name):
    """timm's prefetcher on CUDA + the device mixer: the method's formula, against the CPU in float64."""
    from timm.data import create_loader
    from timm_mixplug import create_mixup
    from timm_mixplug.data.mixing.placement import mix_prefetched
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = [i % 4 for i in range(8)]
    partner, lam = torch.tensor([1, 2, 3, 0, 5, 6, 7, 4]), torch.linspace(0.05, 0.95, 8)
    kw = dict(hierarchy=[0, 0, 1, 1]) if name == 'superclass' else {}
    mixer = create_mixup(name, 4, **kw)
    mixer.sample = lambda t, s=None: (partner.cuda(), lam.cuda())
    loader = create_loader(Uint8Items(imgs, labels), input_size=(3, 16, 16), batch_size=8, is_training=False,
                           use_prefetcher=True, mean=mean, std=std, device=torch.device('cuda'), num_workers=0)
    out, soft = next(mix_prefetched(loader, mixer, get_mixer_spec(name).zero_mean_input))
    assert out.is_cuda and soft.is_cuda
    x = (imgs.double() - torch.tensor(mean).double().view(1, 3, 1, 1) * 255) / (
        torch.tensor(std).double().view(1, 3, 1, 1) * 255)
    r = lam.double().view(-1, 1, 1, 1)
    if name == 'bcplus':
        mu, sd = x.mean((1, 2, 3), keepdim=True), x.std((1, 2, 3), unbiased=False, keepdim=True)
        p = 1 / (1 + sd / sd[partner] * (1 - r) / r)
        ref = (p * (x - mu) + (1 - p) * (x[partner] - mu[partner])) / torch.sqrt(p ** 2 + (1 - p) ** 2)
    else:
        ref = r * x + (1 - r) * x[partner]
    assert (out.cpu().double() - ref).abs().max() < 1e-4
