"""--task nonharmonic: importance-sampled augmentation (non-harmonic learning) from train.py's flags."""
import logging
from types import MappingProxyType
from typing import Optional

import torch
from timm.data.loader import fast_collate

from timm_mixplug.data.transforms import DeviceAugment
from timm_mixplug.task.nonharmonic import IMPORTANCE, SCORE_MODES, MultiViewDataset, NonHarmonicTask, multiview_collate
from timm_mixplug.train.rules import PROB, number, parser_choice
from timm_mixplug.train.specs.base import TaskSpec, register_task
from timm_mixplug.utils.precision import native_bf16

__all__ = ['NonHarmonicSpec', 'resolve_score_dtype']

_logger = logging.getLogger(__name__)
_DTYPES = {'none': None, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
_DEVICE_VIEW_FLAGS = ('nh_view_padding', 'nh_view_no_flip', 'nh_view_cutout')


def resolve_score_dtype(name: str, device: torch.device, amp: bool) -> Optional[torch.dtype]:
    """``--nh-score-dtype``: 'auto' scores in bf16 when the step runs in fp32 (no ``--amp``) on a device with
    native bf16, else inherits the step's numerics (None); other names map to their dtype."""
    if name != 'auto':
        return _DTYPES[name]
    return torch.bfloat16 if not amp and native_bf16(device) else None


@register_task('nonharmonic')
class NonHarmonicSpec(TaskSpec):
    help = 'importance-sampled augmentation: score M views per image, train on one sampled by its loss'
    mixes_itself = True  # the mixer is applied to the sampled views
    ranges = MappingProxyType({
        'nh_views': number(lo=1, integer=True),
        'nh_temperature': number(lo=0),
        'nh_uniform': number(**PROB),
        'nh_importance': parser_choice(),
        'nh_score_mode': parser_choice(),
        'nh_score_dtype': parser_choice(),
        'nh_score_scale': number(lo=0, hi=1, lo_open=True),
        'nh_score_batch': number(lo=0, integer=True),
        'nh_view_padding': number(lo=0, integer=True),
        'nh_view_cutout': number(lo=0, integer=True),
    })
    switches = ('nh_device_views', 'nh_view_no_flip')

    def compare_presets(self):
        views = ['--task', 'nonharmonic', '--nh-device-views', '--no-aug']
        return {'nh': views + ['--nh-views', '4'], 'nh_uniform': views + ['--nh-views', '1']}

    def add_args(self, parser):
        g = parser.add_argument_group('Importance-sampled augmentation (--task nonharmonic)')
        g.add_argument('--nh-views', type=int, default=4, metavar='M',
                       help='augmented views per image scored each step; one is sampled')
        g.add_argument('--nh-temperature', type=float, default=1.0,
                       help='p ~ loss^(1/T); 1 = proportional to loss, 0 = max-loss view (MaxUp)')
        g.add_argument('--nh-uniform', type=float, default=0.0, help='uniform mixing floor u: p = (1-u) p + u/M')
        g.add_argument('--nh-importance', default='loss', choices=IMPORTANCE,
                       help='importance of a view: its CE loss or its error 1 - p(true class)')
        g.add_argument('--nh-score-mode', default='eval', choices=SCORE_MODES,
                       help='score views in eval mode (BN running stats) or train mode (batch stats, restored)')
        g.add_argument('--nh-score-dtype', default='auto', choices=['auto', *sorted(_DTYPES)],
                       help='autocast dtype for scoring. none: inherit the training autocast (exact); auto: '
                            'bfloat16 when training runs in fp32 on a device with native bf16 (same view choice '
                            'in 99.8%% of draws, docs/nonharmonic_aux.md), else none')
        g.add_argument('--nh-score-scale', type=float, default=1.0,
                       help='resize views by this factor for scoring only (<1: cheaper, approximate; CNNs)')
        g.add_argument('--nh-score-batch', type=int, default=0, help='score in chunks of this many views (0 = all)')
        g.add_argument('--nh-device-views', action='store_true',
                       help='make the M views on the device (pad-crop, flip, cutout) from one loaded image '
                            'instead of MultiViewDataset; the loader must then skip crop/flip')
        g.add_argument('--nh-view-padding', type=int, default=4, help='--nh-device-views: zero padding of the crop')
        g.add_argument('--nh-view-no-flip', action='store_true', help='--nh-device-views: no horizontal flip')
        g.add_argument('--nh-view-cutout', type=int, default=0, help='--nh-device-views: Cutout length (0 = none)')

    def check_args(self, args):
        if args.nh_device_views and not args.no_aug:
            raise ValueError('--nh-device-views crops and flips on the device; add --no-aug so the loader does not.')

    def unused_flags(self, args):
        return {} if args.nh_device_views else {d: 'without --nh-device-views' for d in _DEVICE_VIEW_FLAGS}

    def wrap_dataset(self, dataset, args, info, is_training):
        if not is_training or args.nh_device_views:
            return dataset
        return MultiViewDataset(dataset, args.nh_views)

    def create_collate(self, args, info, collate):
        if args.nh_device_views:
            return collate
        # prefetcher: timm's fast_collate flattens the view tuples view-major (M*B, ...), which the task reads
        return collate if collate is fast_collate else multiview_collate

    def create_task(self, args, model, criterion, mixer, info, device):
        view_augment = DeviceAugment(padding=args.nh_view_padding, flip=not args.nh_view_no_flip,
                                     cutout_length=args.nh_view_cutout) if args.nh_device_views else None
        score_dtype = resolve_score_dtype(args.nh_score_dtype, torch.device(device), args.amp)
        if args.nh_score_dtype == 'auto':  # other ranks log warnings only
            _logger.info(f'--nh-score-dtype auto: scoring views in '
                         f'{"bfloat16" if score_dtype else "the training step numerics (no native bf16 or --amp on)"}')
        return NonHarmonicTask(
            model, num_views=args.nh_views, mixer=mixer, criterion=criterion, temperature=args.nh_temperature,
            uniform_mix=args.nh_uniform, importance=args.nh_importance, score_mode=args.nh_score_mode,
            score_dtype=score_dtype, score_scale=args.nh_score_scale, score_batch_size=args.nh_score_batch or None,
            channels_last=args.channels_last, view_augment=view_augment, device=device)
