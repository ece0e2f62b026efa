"""The CIFAR-scale architectures registered with timm by ``timm_mixplug.models``.

Fast by design: the large models are only built on the ``meta`` device (no memory, no init, shape-only forward);
real forward/backward passes run on the small models and on tiny configurations of the large model classes.
"""
import pytest
import timm
import torch
import torch.nn as nn

import timm_mixplug.models as tmm
from timm_mixplug.models import (
    CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DenseNetBCCifar, PreActResNetCifar, PyramidNetCifar,
    ResNeXtCifar, ShakeShakeCifar,
)
from timm_mixplug.models.cifar_resnet import ZeroPadShortcut
from timm_mixplug.models.cifar_shakeshake import shake_shake

torch.set_num_threads(1)

SMALL = ['cnn11_bc_cifar', 'resnet20_cifar', 'resnet32_cifar', 'resnet56_cifar', 'resnet110_cifar',
         'resnet32_glmc_cifar', 'preactresnet18_cifar']
LARGE = [n for n in tmm.CIFAR_MODELS if n not in SMALL]

# Parameter counts as published (CIFAR-10 heads) and the unit they are printed in:
#   He et al. 2016 Table 6; Zagoruyko & Komodakis 2016 Table; Han et al. 2017 Table 4; Xie et al. 2017 Table 7;
#   Huang et al. 2017 Table 2; Gastaldi 2017 Table. preactresnet18_cifar has no number in He et al. (ECCV 2016);
#   11.17M is the count of the pre-act ResNet-18 used on CIFAR by mixup & co. (ours adds the final BN: +1024).
PUBLISHED = {
    'resnet20_cifar': (0.27e6, 0.01e6),
    'resnet32_cifar': (0.46e6, 0.01e6),
    'resnet56_cifar': (0.85e6, 0.01e6),
    'resnet110_cifar': (1.7e6, 0.1e6),
    'preactresnet18_cifar': (11.17e6, 0.01e6),
    'wrn28_10_cifar': (36.5e6, 0.1e6),
    'pyramidnet110_a270_cifar': (28.3e6, 0.1e6),
    'pyramidnet272_a200_cifar': (26.0e6, 0.1e6),
    'resnext29_8x64d_cifar': (34.4e6, 0.1e6),
    'resnext29_16x64d_cifar': (68.1e6, 0.1e6),
    'densenet_bc_190_40_cifar': (25.6e6, 0.1e6),
    'shakeshake26_2x96d_cifar': (26.2e6, 0.1e6),
}

# Exact counts of this implementation (CIFAR-10 head); a change here means the architecture changed.
MEASURED = {
    'cnn11_bc_cifar': 7_582_154,
    'resnet20_cifar': 269_722,
    'resnet32_cifar': 464_154,
    'resnet56_cifar': 853_018,
    'resnet110_cifar': 1_727_962,
    'resnet32_glmc_cifar': 7_386_186,
    'preactresnet18_cifar': 11_172_170,
    'wrn28_10_cifar': 36_479_194,
    'pyramidnet110_a270_cifar': 28_485_477,
    'pyramidnet272_a200_cifar': 26_210_842,
    'resnext29_8x64d_cifar': 34_426_698,
    'resnext29_16x64d_cifar': 68_155_210,
    'densenet_bc_190_40_cifar': 25_624_430,
    'shakeshake26_2x96d_cifar': 26_192_922,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, device='meta', **kwargs)


def test_all_registered():
    assert set(tmm.CIFAR_MODELS) == set(MEASURED)
    listed = set(timm.list_models())
    for name in tmm.CIFAR_MODELS:
        assert name in listed and timm.is_model(name)
    assert not set(timm.list_models(pretrained=True)) & set(tmm.CIFAR_MODELS)
    # every CIFAR model is found by the usual pattern
    assert all(n.endswith('_cifar') for n in tmm.CIFAR_MODELS)
    assert set(tmm.CIFAR_MODELS) <= set(timm.list_models('*cifar*'))


@pytest.mark.parametrize('old,new', [('cnn11_bc', 'cnn11_bc_cifar'), ('resnet32_glmc', 'resnet32_glmc_cifar')])
def test_former_names_still_create_with_a_warning(old, new):
    with pytest.warns(UserWarning, match=f'deprecated model name {old}'):
        model = meta_model(old)
    assert type(model) is type(meta_model(new)) and n_params(model) == n_params(meta_model(new))
    assert old not in timm.list_models()


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_params_match_paper(name):
    # Tolerance: published counts are rounded to the printed unit (0.01M / 0.1M), and papers' reference code
    # differs in details that do not change the architecture (BN affine params, conv biases, 10 vs 100-way
    # head). We accept the larger of 2 % and half a printed unit. Structural mistakes move the count far more:
    # one basic block less in ResNet-110 is -4.3 %, PyramidNet-110 -5 %, a wrong cardinality/width/growth rate
    # is tens of %, so the check can fail.
    published, unit = PUBLISHED[name]
    measured = n_params(meta_model(name, num_classes=10))
    tol = max(0.02 * published, 0.5 * unit)
    assert abs(measured - published) <= tol, f'{name}: {measured:,} vs published {published:,.0f} (tol {tol:,.0f})'


@pytest.mark.parametrize('name', sorted(MEASURED))
def test_params_exact(name):
    assert n_params(meta_model(name, num_classes=10)) == MEASURED[name]


def _bn(c):
    return 2 * c


def _resnet_option_a_params(depth, widths, num_classes):
    """Closed form for the He et al. CIFAR ResNet with parameter-free shortcuts."""
    n = (depth - 2) // 6
    total = 3 * 9 * widths[0] + _bn(widths[0])
    prev = widths[0]
    for w in widths:
        for _ in range(n):
            total += 9 * prev * w + _bn(w) + 9 * w * w + _bn(w)
            prev = w
    return total + prev * num_classes + num_classes


def test_params_closed_form():
    # cnn11_bc_cifar and resnet32_glmc_cifar have no published count: check them against an independent
    # closed form.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
    cnn = sum(9 * i * o + _bn(o) for i, o in convs) + (4096 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
    assert n_params(meta_model('cnn11_bc_cifar')) == cnn
    assert n_params(meta_model('resnet32_glmc_cifar')) == _resnet_option_a_params(32, (64, 128, 256), 10)
    for depth in (20, 32, 56, 110):
        assert n_params(meta_model(f'resnet{depth}_cifar')) == _resnet_option_a_params(depth, (16, 32, 64), 10)
        assert n_params(meta_model(f'resnet{depth}_cifar', num_classes=100)) == \
            _resnet_option_a_params(depth, (16, 32, 64), 100)


def _check_interface(model, x, num_classes):
    y = model(x)
    assert y.shape == (x.shape[0], num_classes)
    assert model.num_classes == num_classes
    feats = model.forward_features(x)
    assert feats.ndim == 4 and feats.shape[1] == model.num_features
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (x.shape[0], model.head_hidden_size)
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == num_classes
    model.reset_classifier(7)
    assert model(x).shape == (x.shape[0], 7) and model.num_classes == 7
    assert model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (x.shape[0], model.head_hidden_size)


@pytest.mark.parametrize('name', SMALL)
def test_small_models_forward(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        assert torch.isfinite(y).all()
        _check_interface(model, x, 100)


@pytest.mark.parametrize('name', LARGE)
def test_large_models_interface_on_meta(name):
    model = meta_model(name, num_classes=100).eval()
    _check_interface(model, torch.empty(2, 3, 32, 32, device='meta'), 100)


@pytest.mark.parametrize('model_fn', [
    lambda: PyramidNetCifar(depth=20, alpha=12),
    lambda: PyramidNetCifar(depth=29, alpha=12, bottleneck=True),
    lambda: ResNeXtCifar(depth=11, cardinality=2, base_width=4, widths=(16, 32, 64), stem_width=8),
    lambda: PreActResNetCifar(layers=(1, 1, 1), widths=(16, 32, 64), stem_width=8, block_drop_rate=0.3),
    lambda: DenseNetBCCifar(depth=16, growth_rate=6),
    lambda: ShakeShakeCifar(depth=8, base_width=8),
], ids=['pyramid', 'pyramid_bottleneck', 'resnext', 'wrn', 'densenet_bc', 'shakeshake'])
def test_tiny_configs_train_step(model_fn):
    """Real forward + backward through the large models' code paths at a tiny width/depth."""
    torch.manual_seed(0)
    model = model_fn().train()
    x = torch.randn(2, 3, 32, 32)
    model(x).logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        _check_interface(model, x, 10)


def test_pretrained_raises():
    with pytest.raises(RuntimeError, match='no pretrained weights'):
        timm.create_model('resnet32_cifar', pretrained=True)
    with pytest.raises(RuntimeError, match='no pretrained weights'):
        timm.create_model('wrn28_10_cifar.cifar100', pretrained=True, device='meta')


def test_pretrained_from_own_file(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model('resnet20_cifar', num_classes=100)
    path = tmp_path / 'w.pth'
    torch.save(src.state_dict(), path)
    model = timm.create_model('resnet20_cifar', num_classes=100, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(model.stem.conv.weight, src.stem.conv.weight)


def test_pretrained_cfg():
    model = meta_model('resnet32_cifar')
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg['input_size'] == (3, 32, 32) and cfg['num_classes'] == 10 and model.num_classes == 10
    assert tuple(cfg['mean']) == CIFAR10_MEAN and tuple(cfg['std']) == CIFAR10_STD
    assert not cfg.get('url') and not cfg.get('hf_hub_id')
    # explicit tag, and num_classes=100 without a tag, select the CIFAR-100 statistics
    for model in (meta_model('resnet32_cifar.cifar100'), meta_model('resnet32_cifar', num_classes=100)):
        assert model.num_classes == 100 and model.pretrained_cfg['num_classes'] == 100
        assert tuple(model.pretrained_cfg['mean']) == CIFAR100_MEAN
        assert tuple(model.pretrained_cfg['std']) == CIFAR100_STD
    data_cfg = timm.data.resolve_data_config({}, model=meta_model('cnn11_bc_cifar.cifar100'))
    assert data_cfg['input_size'] == (3, 32, 32) and data_cfg['mean'] == CIFAR100_MEAN


def test_in_chans_and_drop_rate():
    model = timm.create_model('resnet20_cifar', in_chans=1, drop_rate=0.25, drop_path_rate=0.1)
    assert model.stem.conv.in_channels == 1 and model.drop_rate == 0.25
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    cnn = meta_model('cnn11_bc_cifar', in_chans=4)
    assert cnn.stages[0][0].conv.in_channels == 4
    assert [m.p for m in cnn.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]  # paper default
    cnn = meta_model('cnn11_bc_cifar', drop_rate=0.3)
    assert [m.p for m in cnn.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]


def test_option_a_shortcut_is_parameter_free_identity():
    sc = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4) and not list(sc.parameters())
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_shake_shake_coefficients():
    torch.manual_seed(0)
    x1 = torch.randn(4, 3, 2, 2, requires_grad=True)
    x2 = torch.randn(4, 3, 2, 2, requires_grad=True)
    torch.manual_seed(1)
    out = shake_shake(x1, x2, training=True)
    torch.manual_seed(1)
    alpha, beta = torch.rand(4, 1, 1, 1), torch.rand(4, 1, 1, 1)  # same draw order as the function
    torch.testing.assert_close(out, alpha * x1 + (1 - alpha) * x2)
    out.sum().backward()
    torch.testing.assert_close(x1.grad, beta.expand_as(x1))
    torch.testing.assert_close(x2.grad, (1 - beta).expand_as(x2))
    torch.testing.assert_close(shake_shake(x1, x2, training=False), 0.5 * (x1 + x2))


def test_features_only():
    model = timm.create_model('resnet20_cifar', features_only=True)
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == model.feature_info.channels() == [16, 16, 32, 64]
    assert [o.shape[-1] for o in outs] == [32, 32, 16, 8]


def test_grad_checkpointing():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = timm.create_model('resnet20_cifar').train()
        model.set_grad_checkpointing(ckpt)
        model(x).logsumexp(1).sum().backward()
        grads.append(model.stem.conv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])
