"""DenseNet-BC for CIFAR.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017, Sec. 3-4:
3x3 stem conv with 2k channels; three dense blocks of (L - 4) / 6 bottleneck layers
(BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), output concatenated to the input); transitions
BN-ReLU-conv1x1(floor(theta * C))-avgpool2 with compression theta = 0.5; final BN-ReLU, global average pool, FC.

``densenet_bc_190_40_cifar``: L = 190, k = 40 (31 layers per block). Paper (Table 2): 25.6M params.
"""
from collections import OrderedDict
from typing import List

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from timm.models import register_model

from ._common import CifarNet, ConvStem, build_cifar_model, cifar_cfgs, init_weights

__all__ = ['DenseNetBCCifar']


class DenseLayer(nn.Module):
    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0., dd=None):
        super().__init__()
        dd = dd or {}
        inner = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, inner, 1, bias=False, **dd)
        self.norm2 = nn.BatchNorm2d(inner, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False, **dd)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.norm1(x)))
        return self.drop(self.conv2(self.act2(self.norm2(out))))


class DenseBlock(nn.Module):
    """Dense block; with ``grad_checkpointing`` each layer's (concat + bottleneck) is recomputed in backward,
    which is what keeps DenseNet-BC-190 trainable at batch 64+ (memory is quadratic in depth otherwise)."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.,
                 dd=None):
        super().__init__()
        self.layers = nn.ModuleList([
            DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop_rate, dd) for i in range(num_layers)])
        self.out_chs = in_chs + num_layers * growth_rate
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats: List[torch.Tensor] = [x]
        for layer in self.layers:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                new = cp.checkpoint(lambda *f, _l=layer: _l(torch.cat(f, 1)), *feats, use_reentrant=False)
            else:
                new = layer(torch.cat(feats, 1))
            feats.append(new)
        return torch.cat(feats, 1)


class Transition(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, dd=None):
        dd = dd or {}
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_chs, **dd),
            act=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_chs, out_chs, 1, bias=False, **dd),
            pool=nn.AvgPool2d(2, 2),
        ))


class DenseNetBCCifar(CifarNet):
    """DenseNet-BC (Huang et al., CVPR 2017) for 32x32 inputs. ``block_drop_rate`` is the per-layer dropout the
    paper used only without data augmentation."""

    def __init__(
            self,
            depth: int = 190,
            growth_rate: int = 40,
            compression: float = 0.5,
            bn_size: int = 4,
            num_classes: int = 10,
            in_chans: int = 3,
            block_drop_rate: float = 0.,
            drop_rate: float = 0.,
            global_pool: str = 'avg',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if (depth - 4) % 6:
            raise ValueError(f'DenseNet-BC depth must be 6n + 4, got {depth}')
        n = (depth - 4) // 6
        prev = 2 * growth_rate
        self._init_stem(in_chans, ConvStem(in_chans, prev, norm=False, act=False, dd=dd), prev)
        stages, stage_chs = [], []
        for i in range(3):
            mods = []
            if i > 0:  # the transition halves the resolution
                out = int(prev * compression)
                mods.append(Transition(prev, out, dd))
                prev = out
            block = DenseBlock(n, prev, growth_rate, bn_size, block_drop_rate, dd)
            prev = block.out_chs
            mods.append(block)
            stages.append(mods)
            stage_chs.append(prev)
        final = nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(prev, **dd), act=nn.ReLU(inplace=True)))
        self._init_stages(stages, stage_chs, final)
        self._init_head(prev, num_classes, global_pool, drop_rate, dd)
        init_weights(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = False  # handled per dense layer, finer than per stage
        for m in self.modules():
            if isinstance(m, DenseBlock):
                m.grad_checkpointing = enable


default_cfgs = cifar_cfgs(['densenet_bc_190_40_cifar'])


@register_model
def densenet_bc_190_40_cifar(pretrained: bool = False, **kwargs) -> DenseNetBCCifar:
    """DenseNet-BC, L = 190, k = 40 (Huang et al., CVPR 2017). Paper: 25.6M params."""
    model_args = dict(depth=190, growth_rate=40)
    return build_cifar_model(DenseNetBCCifar, 'densenet_bc_190_40_cifar', pretrained,
                             feature_cfg=dict(out_indices=(0, 1, 2, 3)), **dict(model_args, **kwargs))
