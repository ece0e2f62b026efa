"""The 11-layer CNN of BC learning.

Tokozume, Ushiku, Harada, "Between-class Learning for Image Classification", CVPR 2018.

Layout (the authors' reference ``ConvNet``; 8 conv + 3 FC = 11 weight layers)::

    [conv3x3(64)  -BN-ReLU] x2, maxpool 2   32 -> 16
    [conv3x3(128) -BN-ReLU] x2, maxpool 2   16 -> 8
    [conv3x3(256) -BN-ReLU] x4, maxpool 2    8 -> 4
    flatten (256*4*4) - FC 1024 - ReLU - dropout 0.5 - FC 1024 - ReLU - dropout 0.5 - FC classes

Convolutions have no bias (BN follows); the FC layers have no BN. Convs are He-normal (fan-in) initialised, FC
weights U(+-1/sqrt(fan_in)) with zero bias, as in the reference.
"""
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import get_device_dtype
from timm.models import register_model, register_model_deprecations

from ._common import CifarNet, build_cifar_model, cifar_cfgs, init_weights

__all__ = ['CNN11BC']


def _conv_bn_relu(in_chs: int, out_chs: int, dd) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False, **dd),
        bn=nn.BatchNorm2d(out_chs, **dd),
        act=nn.ReLU(inplace=True),
    ))


class CNN11BC(CifarNet):
    """11-layer CNN (8 conv, 3 FC) used for the CIFAR experiments of BC learning (Tokozume et al., CVPR 2018).

    ``drop_rate`` is the dropout after each hidden FC layer (0.5 in the paper). ``num_features`` is the channel
    count of ``forward_features`` (256); ``head_hidden_size`` / ``forward_head(pre_logits=True)`` is 1024.
    """

    def __init__(
            self,
            num_classes: int = 10,
            in_chans: int = 3,
            img_size: Union[int, Tuple[int, int]] = 32,
            widths: Sequence[int] = (64, 128, 256),
            convs_per_stage: Sequence[int] = (2, 2, 4),
            fc_width: int = 1024,
            drop_rate: float = 0.5,
            global_pool: str = '',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if global_pool not in ('', 'flatten'):
            raise ValueError('cnn11_bc_cifar flattens its 4x4 feature map into the FC head; '
                             'global_pool is not supported')
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        reduction = 2 ** len(widths)
        if img_size[0] % reduction or img_size[1] % reduction:
            raise ValueError(f'img_size {img_size} must be divisible by {reduction}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Identity()
        stages = []
        self.feature_info = []
        prev = in_chans
        for i, (w, n) in enumerate(zip(widths, convs_per_stage)):
            layers = []
            for _ in range(n):
                layers.append(_conv_bn_relu(prev, w, dd))
                prev = w
            layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=w, reduction=2 ** (i + 1), module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Identity()
        self.num_features = prev
        self.feat_size = (img_size[0] // reduction, img_size[1] // reduction)

        flat = prev * self.feat_size[0] * self.feat_size[1]
        self.pre_logits = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(1),
            fc4=nn.Linear(flat, fc_width, **dd),
            act4=nn.ReLU(inplace=True),
            drop4=nn.Dropout(drop_rate),
            fc5=nn.Linear(fc_width, fc_width, **dd),
            act5=nn.ReLU(inplace=True),
            drop5=nn.Dropout(drop_rate),
        ))
        self.head_hidden_size = fc_width
        self.fc = nn.Linear(fc_width, num_classes, **dd) if num_classes > 0 else nn.Identity()
        init_weights(self, conv_mode='fan_in')

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool not in (None, '', 'flatten'):
            raise ValueError('cnn11_bc_cifar does not support global pooling')
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            nn.init.zeros_(self.fc.bias)
        self.fc.train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.fc(x)


default_cfgs = cifar_cfgs(
    ['cnn11_bc_cifar'], pool_size=(4, 4), first_conv='stages.0.0.conv', fixed_input_size=True)


@register_model
def cnn11_bc_cifar(pretrained: bool = False, **kwargs) -> CNN11BC:
    """BC learning's 11-layer CNN (Tokozume et al., CVPR 2018), 32x32 input, FC dropout 0.5."""
    return build_cifar_model(CNN11BC, 'cnn11_bc_cifar', pretrained, feature_cfg=dict(out_indices=(0, 1, 2)),
                             **kwargs)


register_model_deprecations(__name__, {'cnn11_bc': 'cnn11_bc_cifar'})  # former name, warns
