"""--task dml: Deep Mutual Learning (Zhang et al., CVPR 2018) from train.py's flags."""
from types import MappingProxyType
from typing import List, Optional

import timm
import torch.nn as nn

from timm_mixplug.task.dml import KL_REDUCTIONS, DMLTask
from timm_mixplug.train.data import is_longtail
from timm_mixplug.train.rules import later, number, parser_choice
from timm_mixplug.train.specs.base import TaskSpec, register_task

__all__ = ['DMLSpec', 'parse_dml_peers']


def parse_dml_peers(spec: Optional[str], default_model: str) -> List[str]:
    """``--dml-peers``: '' -> 2 x --model; 'N' -> N x --model; 'a,b,...' -> those timm model names."""
    spec = (spec or '').strip()
    if not spec:
        return [default_model] * 2
    if spec.isdigit():
        n = int(spec)
        if n < 2:
            raise ValueError(f'--dml-peers needs at least 2 peers, got {n}.')
        return [default_model] * n
    names = [s.strip() for s in spec.split(',') if s.strip()]
    if len(names) < 2:
        raise ValueError(f'--dml-peers needs at least 2 comma-separated model names, got {spec!r}.')
    return names


@register_task('dml')
class DMLSpec(TaskSpec):
    help = 'Deep Mutual Learning (Zhang et al. 2018): K peers, each trained with its task loss + KL to the others'
    ranges = MappingProxyType({
        'dml_peers': later('creating --task dml', 'resnet20_cifar,no_such_model', ('--task', 'dml')),
        'dml_kl_weight': number(lo=0),
        'dml_temperature': number(lo=0, lo_open=True),
        'dml_kl_reduction': parser_choice(),
    })
    weight_settings = ('dml_peers',)

    def compare_presets(self):
        return {'dml': ['--task', 'dml'], 'dml_superclass': ['--task', 'dml', '--mix', 'superclass']}

    def add_args(self, parser):
        g = parser.add_argument_group('Deep Mutual Learning (--task dml)')
        g.add_argument('--dml-peers', default='', type=str, metavar='MODELS',
                       help='peer models: comma-separated timm names (e.g. resnet32_cifar,resnet32_cifar), or a '
                            'number N of --model copies (default: 2 x --model)')
        g.add_argument('--dml-kl-weight', type=float, default=1.0, help='weight of the KL mimicry term')
        g.add_argument('--dml-temperature', type=float, default=1.0, help='softmax temperature of the KL term')
        g.add_argument('--dml-kl-reduction', default='mean', choices=KL_REDUCTIONS,
                       help='mean (paper) or sum (reference code) over the other peers')

    def check_args(self, args):
        names = parse_dml_peers(args.dml_peers, args.model)
        unknown = [n for n in names if not timm.is_model(n)]
        if unknown:
            raise ValueError(f'unknown --dml-peers model(s) {", ".join(unknown)} (see timm.list_models()).')
        if len(set(names)) > 1 and args.initial_checkpoint:
            raise ValueError('--initial-checkpoint loads one --model; it cannot initialise peers of different '
                             'architectures.')

    def create_model(self, args, info, create_fn):
        """The peers, each built by ``create_fn`` (the user's timm options) for its architecture; peers are
        initialised one after another from the seeded RNG."""
        return nn.ModuleList([create_fn(model_name=name) for name in parse_dml_peers(args.dml_peers, args.model)])

    def create_task(self, args, model, criterion, mixer, info, device):
        return DMLTask(list(model), criterion=criterion, kl_weight=args.dml_kl_weight,
                       temperature=args.dml_temperature, kl_reduction=args.dml_kl_reduction,
                       train_counts=info.class_counts if is_longtail(args) else None, device=device, verbose=False)
