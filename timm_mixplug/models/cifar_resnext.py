"""ResNeXt-29 for CIFAR.

Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017, Sec. 5.3:
3x3 stem conv (64)-BN-ReLU, three stages of 3 bottleneck blocks (depth 9 * 3 + 2 = 29) with output widths
256/512/1024; each block is conv1x1(C*d)-BN-ReLU-grouped conv3x3(C*d, C groups)-BN-ReLU-conv1x1-BN, + shortcut,
ReLU, where the per-group width d doubles per stage (64d -> 64/128/256). Projection shortcuts (1x1 conv + BN)
where the shape changes, global average pool, FC.

Paper (Table 7): 29 (8x64d) 34.4M, 29 (16x64d) 68.1M params.
"""
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import register_model

from ._common import CifarNet, ConvStem, block_stride, build_cifar_model, cifar_cfgs, drop_path_rates, init_weights

__all__ = ['ResNeXtCifar']


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, width: int, cardinality: int, stride: int = 1,
                 drop_path: float = 0., dd=None):
        super().__init__()
        dd = dd or {}
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(width, **dd)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(width, **dd)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.ReLU(inplace=True)
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False, **dd),
                bn=nn.BatchNorm2d(out_chs, **dd),
            ))
        else:
            self.shortcut = nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(self.drop_path(out) + self.shortcut(x))


class ResNeXtCifar(CifarNet):
    """ResNeXt for 32x32 inputs (Xie et al., CVPR 2017)."""

    def __init__(
            self,
            depth: int = 29,
            cardinality: int = 8,
            base_width: int = 64,
            widths: Sequence[int] = (256, 512, 1024),
            stem_width: int = 64,
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
        if (depth - 2) % 9:
            raise ValueError(f'depth must be 9n + 2, got {depth}')
        n = (depth - 2) // 9
        self._init_stem(in_chans, ConvStem(in_chans, stem_width, dd=dd), stem_width)
        dpr = drop_path_rates(drop_path_rate, [n] * len(widths))
        prev, stages = stem_width, []
        for i, out_chs in enumerate(widths):
            group_width = base_width * 2 ** i  # d doubles per stage
            blocks = []
            for j in range(n):
                blocks.append(ResNeXtBottleneck(
                    prev, out_chs, cardinality * group_width, cardinality, block_stride(i, j), dpr[i][j], dd))
                prev = out_chs
            stages.append(blocks)
        self._init_stages(stages, widths, nn.Identity())
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)


default_cfgs = cifar_cfgs(['resnext29_8x64d_cifar', 'resnext29_16x64d_cifar'])


@register_model
def resnext29_8x64d_cifar(pretrained: bool = False, **kwargs) -> ResNeXtCifar:
    """ResNeXt-29, cardinality 8, 64d (Xie et al., CVPR 2017). Paper: 34.4M params."""
    model_args = dict(depth=29, cardinality=8, base_width=64)
    return build_cifar_model(ResNeXtCifar, 'resnext29_8x64d_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))


@register_model
def resnext29_16x64d_cifar(pretrained: bool = False, **kwargs) -> ResNeXtCifar:
    """ResNeXt-29, cardinality 16, 64d (Xie et al., CVPR 2017). Paper: 68.1M params."""
    model_args = dict(depth=29, cardinality=16, base_width=64)
    return build_cifar_model(ResNeXtCifar, 'resnext29_16x64d_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))
