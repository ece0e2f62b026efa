"""setup_timm_mixing: our mixers on timm's own create_loader prefetcher path, as timm's train.py uses them."""
import copy

import pytest
import torch

from conftest import make_tiny_images
from timm_mixplug import SoftTargetKLDiv, zero_mean
from timm_mixplug.timm_compat import add_zero_mean_input, has_zero_mean_input, setup_timm_mixing


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'compat_imgs', val_per_class=1)


def _model():
    import timm
    torch.manual_seed(0)
    return timm.create_model('resnet20_cifar', num_classes=4).eval()


def _loader(data_dir, collate_fn, cfg, training=True):
    from timm.data import ImageDataset, create_loader
    ds = ImageDataset(str(data_dir) + '/train')
    return create_loader(ds, input_size=(3, 16, 16), batch_size=8, is_training=training, no_aug=True,
                         use_prefetcher=True, collate_fn=collate_fn, mean=cfg['mean'], std=cfg['std'],
                         num_workers=0, device=torch.device('cpu'))


def test_bcplus_on_timm_prefetcher(data_dir):
    from timm.data import resolve_data_config
    from timm.data.loader import PrefetchLoader
    from timm.utils import ModelEmaV3
    model = _model()
    plain = copy.deepcopy(model)
    cfg = resolve_data_config({}, model=model)
    collate_fn, mixup_fn, loss_fn = setup_timm_mixing('bcplus', model, 4, cfg, prefetcher=True)
    assert mixup_fn is None and isinstance(loss_fn, SoftTargetKLDiv) and has_zero_mean_input(model)
    loader = _loader(data_dir, collate_fn, cfg)
    assert isinstance(loader, PrefetchLoader) and loader.mixup_enabled  # timm train.py's switch reaches it
    torch.manual_seed(1)
    x, t = next(iter(loader))
    assert t.shape == (8, 4) and torch.allclose(t.sum(1), torch.ones(8))
    assert ((t > 0).sum(1) == 2).all()  # BC: always a partner of another class
    # the model sees zero-mean images: its output is the plain model's on zero_mean(x), in train and eval
    x_before = x.clone()
    with torch.no_grad():
        assert torch.allclose(model(x), plain(zero_mean(x.clone())), atol=1e-5)
        assert torch.equal(x, x_before)  # the hook leaves the caller's batch alone
        ema = ModelEmaV3(model, decay=0.9)  # timm's EMA deep-copies the model, hook included
        assert torch.allclose(ema.module(x), plain(zero_mean(x.clone())), atol=1e-5)
    assert set(model.state_dict()) == set(plain.state_dict())
    # one training step as timm's train.py runs it
    model.train()
    loss = loss_fn(model(x), t)
    loss.backward()
    assert torch.isfinite(loss) and model.get_classifier().weight.grad is not None
    # --mixup-off-epoch: timm sets loader.mixup_enabled = False; the batch is then the plain one-hot batch
    loader.mixup_enabled = False
    assert not collate_fn.mixup_enabled
    torch.manual_seed(1)
    x2, t2 = next(iter(loader))
    plain_loader = _loader(data_dir, None, cfg)
    torch.manual_seed(1)
    x3, y3 = next(iter(plain_loader))
    assert torch.equal(x2, x3) and torch.equal(t2, torch.nn.functional.one_hot(y3, 4).float())


def test_without_prefetcher_gives_a_device_mixer(data_dir):
    from timm.data import resolve_data_config
    from timm.loss import SoftTargetCrossEntropy
    model = _model()
    cfg = resolve_data_config({}, model=model)
    collate_fn, mixup_fn, loss_fn = setup_timm_mixing('bc', model, 4, cfg, prefetcher=False)
    assert collate_fn is None and callable(mixup_fn) and isinstance(loss_fn, SoftTargetKLDiv)
    assert not has_zero_mean_input(model)  # only BC+ zero-means
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8) % 4
    xm, t = mixup_fn(x.clone(), y)
    assert xm.shape == x.shape and t.shape == (8, 4)
    _, _, loss_fn = setup_timm_mixing('mixup', model, 4, cfg, prefetcher=False)
    assert isinstance(loss_fn, SoftTargetCrossEntropy)


def test_add_zero_mean_input_is_idempotent():
    model = _model()
    add_zero_mean_input(add_zero_mean_input(model))
    assert len(model._forward_pre_hooks) == 1
