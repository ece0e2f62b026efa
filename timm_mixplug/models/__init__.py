"""CIFAR-scale (32x32 input) architectures of the papers reproduced by timm_mixplug, registered with timm.

Importing this package registers the models, after which ``timm.create_model('resnet32_cifar', num_classes=100)``
works. Every model exposes timm's classifier interface; none has pretrained weights. See docs/models.md.
"""
from ._common import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from .cifar_cnn import CNN11BC, cnn11_bc_cifar
from .cifar_densenet import DenseNetBCCifar, densenet_bc_190_40_cifar
from .cifar_pyramidnet import PyramidNetCifar, pyramidnet110_a270_cifar, pyramidnet272_a200_cifar
from .cifar_resnet import (
    PreActResNetCifar, ResNetCifar, preactresnet18_cifar, resnet20_cifar, resnet32_cifar, resnet32_glmc_cifar,
    resnet56_cifar, resnet110_cifar, wrn28_10_cifar,
)
from .cifar_resnext import ResNeXtCifar, resnext29_8x64d_cifar, resnext29_16x64d_cifar
from .cifar_shakeshake import ShakeShakeCifar, shakeshake26_2x96d_cifar

#: Names registered with timm by this package.
CIFAR_MODELS = (
    'cnn11_bc_cifar',
    'resnet20_cifar', 'resnet32_cifar', 'resnet56_cifar', 'resnet110_cifar', 'resnet32_glmc_cifar',
    'preactresnet18_cifar', 'wrn28_10_cifar',
    'pyramidnet110_a270_cifar', 'pyramidnet272_a200_cifar',
    'resnext29_8x64d_cifar', 'resnext29_16x64d_cifar',
    'densenet_bc_190_40_cifar', 'shakeshake26_2x96d_cifar',
)
