"""--mix NAME: the flags of the mixers that have any (timm's mixup / cutmix, superclass mixup).

The mixers themselves, and what they need from a training loop (loss, default label smoothing, zero-mean
input, collate support), are declared where they are registered (``timm_mixplug.data.mixing``); BC and BC+
have no flags of their own and need no spec here.
"""
from types import MappingProxyType

from timm_mixplug.data.hierarchy import load_hierarchy
from timm_mixplug.train.rules import PROB, Rule, choice, number, parser_choice, superclass_map
from timm_mixplug.train.specs.base import MixSpec, register_mix

__all__ = ['TimmMixupSpec', 'SuperclassSpec']

_TIMM_MIXUP_FLAGS = ('mixup', 'cutmix', 'cutmix_minmax', 'mixup_prob', 'mixup_switch_prob', 'mixup_mode')
_BETA = ('superclass_alpha_same', 'superclass_alpha_diff')
_CHOICE = ('superclass_choice_same', 'superclass_choice_diff')


class TimmMixupSpec(MixSpec):
    """timm's ``Mixup`` (``--mix mixup`` / ``--mix cutmix``, or implied by ``--mixup`` / ``--cutmix`` > 0)."""
    reads = MixSpec.reads + _TIMM_MIXUP_FLAGS
    ranges = MappingProxyType({
        **MixSpec.ranges,
        'mixup': number(lo=0),
        'cutmix': number(lo=0),
        'cutmix_minmax': number(counted=True, lo=0, hi=1, lo_open=True, n=2, ordered=True),
        'mixup_prob': number(**PROB),
        'mixup_switch_prob': number(**PROB),
        'mixup_mode': choice(('batch', 'pair', 'elem')),
    })

    def mixer_kwargs(self, args, info):
        mixup = args.mixup if args.mixup > 0 else (1.0 if self.name == 'mixup' else 0.0)
        cutmix = args.cutmix if args.cutmix > 0 else (1.0 if self.name == 'cutmix' else 0.0)
        return dict(mixup_alpha=mixup, cutmix_alpha=cutmix, cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob,
                    switch_prob=args.mixup_switch_prob, mode=args.mixup_mode)


register_mix('mixup', TimmMixupSpec)
register_mix('cutmix', TimmMixupSpec)


@register_mix('superclass')
class SuperclassSpec(MixSpec):
    """Superclass mixup: the mixing ratio drawn by whether a pair shares a superclass."""
    ranges = MappingProxyType({
        **MixSpec.ranges,
        'superclass_map': Rule(superclass_map, 'must be a built-in hierarchy or a file', ('missing.yaml',), io=True),
        'superclass_mode': parser_choice(),
        'superclass_alpha_same': number(lo=0, lo_open=True),
        'superclass_alpha_diff': number(lo=0, lo_open=True),
        'superclass_choice_same': number(**PROB),
        'superclass_choice_diff': number(**PROB, n=2, ordered=True),
    })

    def add_args(self, parser):
        g = parser.add_argument_group('Superclass mixup (--mix superclass)')
        g.add_argument('--superclass-map', default=None, type=str, metavar='NAME|FILE',
                       help='superclass hierarchy: cifar100, imagenet1k or a YAML/JSON/CSV file '
                            '(default: cifar100 for torch/cifar100)')
        g.add_argument('--superclass-mode', default='beta', choices=['beta', 'choice'],
                       help='superclass mixing ratio: Beta draws (beta) or fixed choices (choice)')
        g.add_argument('--superclass-alpha-same', type=float, default=8.0,
                       help='Beta alpha for pairs of the same superclass')
        g.add_argument('--superclass-alpha-diff', type=float, default=0.2,
                       help='Beta alpha for pairs of different superclasses')
        g.add_argument('--superclass-choice-same', type=float, default=0.5,
                       help='mixing ratio for same-superclass pairs (--superclass-mode choice)')
        g.add_argument('--superclass-choice-diff', type=float, nargs=2, default=[0.1, 0.9],
                       help='the two mixing ratios for different-superclass pairs (--superclass-mode choice)')

    def resolve_defaults(self, args):
        if args.superclass_map is None and args.dataset.lower() == 'torch/cifar100':
            args.superclass_map = 'cifar100'

    def check_args(self, args):
        if not args.superclass_map:
            raise ValueError('--mix superclass needs --superclass-map (cifar100, imagenet1k or a YAML/JSON/CSV file)')

    def unused_flags(self, args):
        other = _CHOICE if args.superclass_mode == 'beta' else _BETA
        return {d: f'with --superclass-mode {args.superclass_mode}' for d in other}

    def mixer_kwargs(self, args, info):
        try:
            hierarchy = load_hierarchy(args.superclass_map, num_classes=info.num_classes, class_names=info.class_names)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise ValueError(f'--superclass-map: {str(e).strip().splitlines()[0]}') from None
        return dict(hierarchy=hierarchy, mode=args.superclass_mode, alpha_same=args.superclass_alpha_same,
                    alpha_diff=args.superclass_alpha_diff, choice_same=args.superclass_choice_same,
                    choice_diff=tuple(args.superclass_choice_diff))
