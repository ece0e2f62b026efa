"""Shake-Shake regularised ResNet for CIFAR.

Gastaldi, "Shake-Shake regularization", arXiv:1705.07485 (ICLR 2017 workshop).

* 3x3 stem conv (16) + BN; three stages of (depth - 2) / 6 blocks with widths k, 2k, 4k (k = 96 for "2x96d").
* Each block has two residual branches ReLU-conv3x3-BN-ReLU-conv3x3-BN, combined as
  ``alpha * b1 + (1 - alpha) * b2`` with alpha ~ U(0, 1) drawn per image in the forward pass and an independent
  beta ~ U(0, 1) used in the backward pass ("Shake-Shake-Image"); at eval both are 0.5.
* Where the shape changes, the shortcut is ReLU, then two 1x1 convs (k/2 output channels each) on the subsampled
  input and on the input shifted by one pixel, concatenated, BN.
* Final ReLU, global average pool, FC.

``shakeshake26_2x96d_cifar``: paper (Table 1/2): 26.2M params.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

from ._common import CifarNet, ConvStem, block_stride, build_cifar_model, cifar_cfgs, init_weights

__all__ = ['ShakeShakeCifar', 'shake_shake']


def shake_shake(x1: torch.Tensor, x2: torch.Tensor, training: bool, shake_forward: bool = True,
                shake_backward: bool = True, per_image: bool = True) -> torch.Tensor:
    """Forward value ``alpha * x1 + (1 - alpha) * x2``, gradients ``beta`` / ``1 - beta``."""
    if not training:
        return 0.5 * (x1 + x2)
    shape = (x1.shape[0], 1, 1, 1) if per_image else (1, 1, 1, 1)
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype) if shake_forward else x1.new_full(shape, 0.5)
    beta = torch.rand(shape, device=x1.device, dtype=x1.dtype) if shake_backward else alpha
    # value: beta*x1 + (1-beta)*x2 + (alpha-beta)*(x1-x2) = alpha*x1 + (1-alpha)*x2; the detached term carries
    # no gradient, so d/dx1 = beta and d/dx2 = 1 - beta.
    return beta * x1 + (1 - beta) * x2 + ((alpha - beta) * (x1 - x2)).detach()


def _branch(in_chs: int, out_chs: int, stride: int, dd) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        act1=nn.ReLU(inplace=False),  # must not modify the block input, the shortcut and other branch read it
        conv1=nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd),
        bn1=nn.BatchNorm2d(out_chs, **dd),
        act2=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False, **dd),
        bn2=nn.BatchNorm2d(out_chs, **dd),
    ))


class ShakeShortcut(nn.Module):
    """Two-path 1x1 shortcut of Shake-Shake (second path shifted by one pixel)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dd=None):
        super().__init__()
        dd = dd or {}
        half = out_chs // 2
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chs, half, 1, bias=False, **dd)
        self.conv2 = nn.Conv2d(in_chs, out_chs - half, 1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        s = self.stride
        y1 = self.conv1(x[:, :, ::s, ::s])
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        y2 = self.conv2(shifted[:, :, ::s, ::s])
        return self.bn(torch.cat([y1, y2], 1))


class ShakeBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shake_forward: bool = True,
                 shake_backward: bool = True, per_image: bool = True, dd=None):
        super().__init__()
        dd = dd or {}
        self.branch1 = _branch(in_chs, out_chs, stride, dd)
        self.branch2 = _branch(in_chs, out_chs, stride, dd)
        if stride != 1 or in_chs != out_chs:
            self.shortcut = ShakeShortcut(in_chs, out_chs, stride, dd)
        else:
            self.shortcut = nn.Identity()
        self.shake_forward = shake_forward
        self.shake_backward = shake_backward
        self.per_image = per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = shake_shake(self.branch1(x), self.branch2(x), self.training,
                          self.shake_forward, self.shake_backward, self.per_image)
        return out + self.shortcut(x)


class ShakeShakeCifar(CifarNet):
    """Shake-Shake ResNet (Gastaldi 2017) for 32x32 inputs, 2 branches per block."""

    def __init__(
            self,
            depth: int = 26,
            base_width: int = 96,
            stem_width: int = 16,
            shake_forward: bool = True,
            shake_backward: bool = True,
            per_image: bool = True,
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.,
            global_pool: str = 'avg',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if (depth - 2) % 6:
            raise ValueError(f'depth must be 6n + 2, got {depth}')
        n = (depth - 2) // 6
        self._init_stem(in_chans, ConvStem(in_chans, stem_width, act=False, dd=dd), stem_width)
        widths = [base_width * 2 ** i for i in range(3)]
        prev, stages = stem_width, []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(ShakeBlock(prev, w, block_stride(i, j), shake_forward, shake_backward, per_image, dd))
                prev = w
            stages.append(blocks)
        self._init_stages(stages, widths, nn.ReLU(inplace=False))
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)


default_cfgs = cifar_cfgs(['shakeshake26_2x96d_cifar'])


@register_model
def shakeshake26_2x96d_cifar(pretrained: bool = False, **kwargs) -> ShakeShakeCifar:
    """Shake-Shake-Image 26 2x96d (Gastaldi 2017). Paper: 26.2M params."""
    model_args = dict(depth=26, base_width=96)
    return build_cifar_model(ShakeShakeCifar, 'shakeshake26_2x96d_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))
