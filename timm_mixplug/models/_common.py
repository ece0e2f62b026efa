"""Shared plumbing for the CIFAR-scale (32x32 input) architectures registered with timm.

Everything here is architecture-agnostic: dataset statistics, the pretrained-cfg factory, the builder that
refuses ``pretrained=True`` (no weights are published for these models), and a small base class that gives the
networks timm's classifier interface (``forward_features`` / ``forward_head`` / ``get_classifier`` /
``reset_classifier`` / ``num_features`` / ``set_grad_checkpointing`` / ``feature_info``).
"""
from typing import Any, Dict, List, Optional, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg

__all__ = [
    'CIFAR10_MEAN', 'CIFAR10_STD', 'CIFAR100_MEAN', 'CIFAR100_STD',
    'CifarNet', 'ConvStem', 'cifar_cfgs', 'build_cifar_model', 'init_weights', 'block_stride', 'drop_path_rates',
]

# Per-channel statistics of the training sets (pixel values scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _cfg(**kwargs) -> Dict[str, Any]:
    cfg = {
        'url': '',  # no released weights: these are training recipes, not checkpoints
        'num_classes': 10,
        'input_size': (3, 32, 32),
        'pool_size': (8, 8),
        'crop_pct': 1.0,
        'interpolation': 'bilinear',
        'mean': CIFAR10_MEAN,
        'std': CIFAR10_STD,
        'first_conv': 'stem.conv',
        'classifier': 'fc',
        'license': 'apache-2.0',
    }
    cfg.update(kwargs)
    return cfg


def cifar_cfgs(names: Sequence[str], **kwargs) -> Dict[str, Any]:
    """Default cfgs for ``names``: tag ``.cifar10`` (the default) and ``.cifar100``.

    The tags carry no weights; they only select the dataset statistics and default class count, e.g.
    ``timm.create_model('resnet32_cifar.cifar100')`` -> 100 classes, CIFAR-100 mean/std.
    """
    cfgs = {}
    for name in names:
        cfgs[f'{name}.cifar10'] = _cfg(**kwargs)
        cfgs[f'{name}.cifar100'] = _cfg(**dict(kwargs, num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD))
    return generate_default_cfgs(cfgs)


def _cfg_has_weights(cfg) -> bool:
    d = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    return any(d.get(k) for k in ('url', 'file', 'hf_hub_id', 'state_dict'))


def build_cifar_model(model_cls: Type[nn.Module], variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``build_model_with_cfg`` wrapper.

    * ``pretrained=True`` raises unless the caller supplies a weight source (e.g.
      ``pretrained_cfg_overlay=dict(file='my_run.pth')``): no weights are published for these models.
    * With neither a tag nor an explicit ``pretrained_cfg``, ``num_classes=100`` selects the ``.cifar100`` cfg
      (CIFAR-100 mean/std) so ``timm.data.resolve_data_config`` matches the likely dataset.
    """
    pretrained_cfg = kwargs.pop('pretrained_cfg', None)
    overlay = kwargs.pop('pretrained_cfg_overlay', None)
    if not pretrained_cfg and kwargs.get('num_classes') == 100:
        pretrained_cfg = 'cifar100'
    if pretrained:
        resolved = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
        if not _cfg_has_weights(resolved):
            raise RuntimeError(
                f'{variant}: timm_mixplug publishes no pretrained weights for its CIFAR architectures. '
                f'Use pretrained=False (random init), or pass your own checkpoint with '
                f"pretrained_cfg_overlay=dict(file='path/to/weights.pth') or checkpoint_path=...")
    feature_cfg = kwargs.pop('feature_cfg', None) or {}
    feature_cfg.setdefault('flatten_sequential', True)
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=overlay,
        feature_cfg=feature_cfg,
        **kwargs,
    )


@torch.no_grad()
def init_weights(module: nn.Module, conv_mode: str = 'fan_out') -> None:
    """He-normal convs (``conv_mode`` fan), unit BN, zero biases; Linear keeps PyTorch's U(+-1/sqrt(fan_in))."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def block_stride(stage: int, block: int) -> int:
    """Stride of block ``block`` in stage ``stage``: each stage after the first halves the resolution in its
    first block."""
    return 2 if stage > 0 and block == 0 else 1


def drop_path_rates(drop_path_rate: float, layers: Sequence[int]) -> List[List[float]]:
    """Per-block stochastic depth rates, increasing linearly with block index, grouped per stage."""
    total = sum(layers)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, i = [], 0
    for n in layers:
        out.append(rates[i:i + n])
        i += n
    return out


class ConvStem(nn.Module):
    """3x3 stride-1 stem conv, optionally followed by BN and ReLU (a plain module, not ``nn.Sequential``, so
    timm's feature extractor can tap it by name)."""

    def __init__(self, in_chs: int, out_chs: int, norm: bool = True, act: bool = True, dd=None):
        super().__init__()
        dd = dd or {}
        self.conv = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class CifarNet(nn.Module):
    """Base class: ``stem -> stages -> final (norm/act) -> global pool -> dropout -> fc``.

    Subclasses build ``self.stem``, ``self.stages`` (an ``nn.Sequential`` of stages), ``self.final`` (or
    ``nn.Identity``), fill ``self.feature_info`` and then call ``self._init_head`` -- usually through
    ``_init_stem`` and ``_init_stages`` (stage ``i`` at stride ``2 ** i``).
    """

    def _init_stem(self, in_chans: int, stem: nn.Module, stem_chs: int) -> None:
        self.in_chans = in_chans
        self.grad_checkpointing = False
        self.stem = stem
        self.feature_info = [dict(num_chs=stem_chs, reduction=1, module='stem')]

    def _init_stages(self, stages: Sequence[Sequence[nn.Module]], stage_chs: Sequence[int], final: nn.Module) -> None:
        """``self.stages`` from per-stage module lists (stage ``i`` at stride ``2 ** i``, ``stage_chs[i]`` output
        channels), their ``feature_info`` entries, and ``self.final``."""
        self.stages = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        for i, chs in enumerate(stage_chs):
            self.feature_info.append(dict(num_chs=chs, reduction=2 ** i, module=f'stages.{i}'))
        self.final = final

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float, dd) -> None:
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.global_pool, self.fc = create_classifier(num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if getattr(self, 'grad_checkpointing', False) and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
