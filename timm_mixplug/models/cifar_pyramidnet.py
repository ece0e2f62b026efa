"""Additive PyramidNet for CIFAR.

Han, Kim, Kim, "Deep Pyramidal Residual Networks", CVPR 2017.

* 3x3 stem conv (16) + BN; three stages of n residual units; the unit width grows by alpha / (3n) after every
  unit (rounded per unit), ending at 16 + alpha (x4 for bottleneck units).
* Pyramidal unit: BN-conv3x3-BN-ReLU-conv3x3-BN (no ReLU after the addition); bottleneck unit:
  BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN.
* Shortcut: identity, 2x2 average pooling when downsampling, extra channels zero-padded (parameter-free).
* Final BN-ReLU, global average pool, FC.

``pyramidnet110_a270_cifar``: basic units, n = 18 (depth = 6n + 2), alpha = 270 (paper: 28.3M params).
``pyramidnet272_a200_cifar``: bottleneck units, n = 30 (depth = 9n + 2), alpha = 200 (paper: 26.0M params).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import register_model

from ._common import CifarNet, ConvStem, block_stride, build_cifar_model, cifar_cfgs, drop_path_rates, init_weights

__all__ = ['PyramidNetCifar']


class PyramidShortcut(nn.Module):
    """2x2 average pool (if strided) then zero-pad the channel axis at the end."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2) if stride > 1 else nn.Identity()
        self.pad = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x


class PyramidBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0., dd=None):
        super().__init__()
        dd = dd or {}
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(planes, **dd)
        self.shortcut = PyramidShortcut(in_chs, planes, stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(self.act(self.bn2(out))))
        return self.drop_path(out) + self.shortcut(x)


class PyramidBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, drop_path: float = 0., dd=None):
        super().__init__()
        dd = dd or {}
        out_chs = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(planes, **dd)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False, **dd)
        self.bn4 = nn.BatchNorm2d(out_chs, **dd)
        self.shortcut = PyramidShortcut(in_chs, out_chs, stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.act(self.bn2(out)))
        out = self.bn4(self.conv3(self.act(self.bn3(out))))
        return self.drop_path(out) + self.shortcut(x)


class PyramidNetCifar(CifarNet):
    """Additive PyramidNet (Han et al., CVPR 2017) for 32x32 inputs."""

    def __init__(
            self,
            depth: int = 110,
            alpha: float = 270,
            bottleneck: bool = False,
            stem_width: int = 16,
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            global_pool: str = 'avg',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
        per_unit = 9 if bottleneck else 6
        if (depth - 2) % per_unit:
            raise ValueError(f'depth must be {per_unit}n + 2 for {"bottleneck" if bottleneck else "basic"} units')
        n = (depth - 2) // per_unit
        add_rate = alpha / (3 * n)
        self._init_stem(in_chans, ConvStem(in_chans, stem_width, act=False, dd=dd), stem_width)
        dpr = drop_path_rates(drop_path_rate, [n] * 3)
        width, prev = float(stem_width), stem_width
        stages, stage_chs = [], []
        for i in range(3):
            blocks = []
            for j in range(n):
                width += add_rate
                planes = int(round(width))
                blocks.append(block(prev, planes, block_stride(i, j), dpr[i][j], dd))
                prev = planes * block.expansion
            stages.append(blocks)
            stage_chs.append(prev)
        final = nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(prev, **dd), act=nn.ReLU(inplace=True)))
        self._init_stages(stages, stage_chs, final)
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)


default_cfgs = cifar_cfgs(['pyramidnet110_a270_cifar', 'pyramidnet272_a200_cifar'])


@register_model
def pyramidnet110_a270_cifar(pretrained: bool = False, **kwargs) -> PyramidNetCifar:
    """Additive PyramidNet-110, alpha = 270, basic units (Han et al., CVPR 2017). Paper: 28.3M params."""
    model_args = dict(depth=110, alpha=270, bottleneck=False)
    return build_cifar_model(PyramidNetCifar, 'pyramidnet110_a270_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))


@register_model
def pyramidnet272_a200_cifar(pretrained: bool = False, **kwargs) -> PyramidNetCifar:
    """Additive PyramidNet-272, alpha = 200, bottleneck units (Han et al., CVPR 2017). Paper: 26.0M params."""
    model_args = dict(depth=272, alpha=200, bottleneck=True)
    return build_cifar_model(PyramidNetCifar, 'pyramidnet272_a200_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))
