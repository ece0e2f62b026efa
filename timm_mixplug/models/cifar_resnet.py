"""CIFAR ResNets: He et al. 2016 (original and pre-activation) and Wide ResNets.

* ``resnet{20,32,56,110}_cifar`` -- He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
  CVPR 2016, Sec. 4.2: 3x3 stem (16), three stages of n basic blocks (16/32/64 channels, depth = 6n + 2),
  option-A shortcuts (stride-2 subsampling + zero-padded extra channels, no parameters), global average pool, FC.
* ``resnet32_glmc_cifar`` -- the ResNet-32 of GLMC (Du et al., "Global and Local Mixture Consistency Cumulative
  Learning for Long-tailed Visual Recognitions", CVPR 2023): the same network with stage widths 64/128/256.
  Only the backbone + one linear classifier is built here; GLMC's extra heads belong to the training objective.
* ``preactresnet18_cifar`` -- He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016
  pre-activation units in the 18-layer ImageNet layout (2-2-2-2 blocks, 64..512) with a 3x3 stride-1 stem, as
  used on CIFAR by mixup (Zhang et al., ICLR 2018) and follow-ups; 1x1 projection shortcuts, final BN-ReLU.
* ``wrn28_10_cifar`` -- Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016: pre-activation basic blocks,
  depth 28 (n = 4 per stage), widen factor 10 (160/320/640), 1x1 projection shortcuts, optional dropout
  between the two convs of a block (``block_drop_rate``, 0.3 in some of the paper's runs).
"""
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import register_model, register_model_deprecations

from ._common import CifarNet, ConvStem, block_stride, build_cifar_model, cifar_cfgs, drop_path_rates, init_weights

__all__ = ['ResNetCifar', 'PreActResNetCifar']


def _conv3x3(in_chs: int, out_chs: int, stride: int, dd) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: identity subsampled by ``stride``; extra channels are zeros (split evenly on both
    sides of the channel axis, as in the original implementation). Parameter-free."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        if out_chs < in_chs:
            raise ValueError('option-A shortcut cannot reduce channels')
        self.stride = stride
        self.pad_front = (out_chs - in_chs) // 2
        self.pad_back = out_chs - in_chs - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad_front or self.pad_back:
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x


class BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, add shortcut, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: str = 'A', drop_path: float = 0.,
                 dd=None):
        super().__init__()
        dd = dd or {}
        self.conv1 = _conv3x3(in_chs, out_chs, stride, dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_chs, out_chs, 1, dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        elif shortcut == 'A':
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        elif shortcut == 'B':
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd), nn.BatchNorm2d(out_chs, **dd))
        else:
            raise ValueError(f'unknown shortcut type {shortcut!r} (use "A" or "B")')
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(self.drop_path(out) + self.shortcut(x))


class ResNetCifar(CifarNet):
    """He et al. (CVPR 2016) CIFAR ResNet: 3x3 stem, 3 stages of ``(depth - 2) / 6`` basic blocks."""

    def __init__(
            self,
            depth: int = 32,
            widths: Sequence[int] = (16, 32, 64),
            num_classes: int = 10,
            in_chans: int = 3,
            shortcut: str = 'A',
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            global_pool: str = 'avg',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if (depth - 2) % 6:
            raise ValueError(f'depth must be 6n + 2, got {depth}')
        n = (depth - 2) // 6
        self._init_stem(in_chans, ConvStem(in_chans, widths[0], dd=dd), widths[0])
        dpr = drop_path_rates(drop_path_rate, [n] * len(widths))
        stages, prev = [], widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(prev, w, block_stride(i, j), shortcut, dpr[i][j], dd))
                prev = w
            stages.append(blocks)
        self._init_stages(stages, widths, nn.Identity())
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., ECCV 2016): BN-ReLU-conv-BN-ReLU-[dropout]-conv + shortcut.

    A projection shortcut (1x1 conv, no BN) reads the pre-activated input, as in the reference implementations
    of pre-act ResNet and WRN.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, block_drop_rate: float = 0.,
                 drop_path: float = 0., dd=None):
        super().__init__()
        dd = dd or {}
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_chs, out_chs, stride, dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(block_drop_rate) if block_drop_rate > 0. else nn.Identity()
        self.conv2 = _conv3x3(out_chs, out_chs, 1, dd)
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd)
        else:
            self.shortcut = None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        sc = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return self.drop_path(out) + sc


class PreActResNetCifar(CifarNet):
    """Pre-activation ResNet / Wide ResNet for 32x32 inputs: 3x3 stem conv, pre-act stages, final BN-ReLU."""

    def __init__(
            self,
            layers: Sequence[int] = (2, 2, 2, 2),
            widths: Sequence[int] = (64, 128, 256, 512),
            stem_width: int = 64,
            num_classes: int = 10,
            in_chans: int = 3,
            block_drop_rate: float = 0.,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            global_pool: str = 'avg',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self._init_stem(in_chans, ConvStem(in_chans, stem_width, norm=False, act=False, dd=dd), stem_width)
        dpr = drop_path_rates(drop_path_rate, layers)
        stages, prev = [], stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(PreActBlock(prev, w, block_stride(i, j), block_drop_rate, dpr[i][j], dd))
                prev = w
            stages.append(blocks)
        final = nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(prev, **dd), act=nn.ReLU(inplace=True)))
        self._init_stages(stages, widths[:len(layers)], final)
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)


default_cfgs = cifar_cfgs([
    'resnet20_cifar', 'resnet32_cifar', 'resnet56_cifar', 'resnet110_cifar', 'resnet32_glmc_cifar',
    'wrn28_10_cifar',
])
default_cfgs.update(cifar_cfgs(['preactresnet18_cifar'], pool_size=(4, 4)))

_OUT3 = dict(out_indices=(0, 1, 2, 3))
_OUT4 = dict(out_indices=(0, 1, 2, 3, 4))


def _create_resnet(variant: str, pretrained: bool, **kwargs) -> ResNetCifar:
    return build_cifar_model(ResNetCifar, variant, pretrained, feature_cfg=dict(_OUT3), **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    """ResNet-20 (He et al., CVPR 2016), 16/32/64, option-A shortcuts. Paper: 0.27M params."""
    return _create_resnet('resnet20_cifar', pretrained, **dict(dict(depth=20), **kwargs))


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    """ResNet-32 (He et al., CVPR 2016), 16/32/64, option-A shortcuts. Paper: 0.46M params."""
    return _create_resnet('resnet32_cifar', pretrained, **dict(dict(depth=32), **kwargs))


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    """ResNet-56 (He et al., CVPR 2016), 16/32/64, option-A shortcuts. Paper: 0.85M params."""
    return _create_resnet('resnet56_cifar', pretrained, **dict(dict(depth=56), **kwargs))


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    """ResNet-110 (He et al., CVPR 2016), 16/32/64, option-A shortcuts. Paper: 1.7M params."""
    return _create_resnet('resnet110_cifar', pretrained, **dict(dict(depth=110), **kwargs))


@register_model
def resnet32_glmc_cifar(pretrained: bool = False, **kwargs) -> ResNetCifar:
    """ResNet-32 with 64/128/256 stage widths and option-A shortcuts, the CIFAR-LT backbone of GLMC
    (Du et al., CVPR 2023)."""
    return _create_resnet('resnet32_glmc_cifar', pretrained,
                          **dict(dict(depth=32, widths=(64, 128, 256)), **kwargs))


@register_model
def preactresnet18_cifar(pretrained: bool = False, **kwargs) -> PreActResNetCifar:
    """Pre-activation ResNet-18 (He et al., ECCV 2016) with a 3x3 stride-1 stem for 32x32 inputs."""
    model_args = dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem_width=64)
    return build_cifar_model(
        PreActResNetCifar, 'preactresnet18_cifar', pretrained, feature_cfg=dict(_OUT4), **dict(model_args, **kwargs))


@register_model
def wrn28_10_cifar(pretrained: bool = False, **kwargs) -> PreActResNetCifar:
    """Wide ResNet-28-10 (Zagoruyko & Komodakis, BMVC 2016). Paper: 36.5M params.
    Pass ``block_drop_rate=0.3`` for the paper's dropout-in-block variant."""
    model_args = dict(layers=(4, 4, 4), widths=(160, 320, 640), stem_width=16)
    return build_cifar_model(
        PreActResNetCifar, 'wrn28_10_cifar', pretrained, feature_cfg=dict(_OUT3), **dict(model_args, **kwargs))


register_model_deprecations(__name__, {'resnet32_glmc': 'resnet32_glmc_cifar'})  # former name, warns
