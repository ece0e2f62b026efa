"""--task aux: auxiliary heads on any timm backbone, trained jointly, from train.py's flags."""
from types import MappingProxyType

from timm_mixplug.data.hierarchy import load_hierarchy
from timm_mixplug.data.transforms import DeviceAugment
from timm_mixplug.task.aux import AUGMENT_TASKS, AUX_TASKS, AuxTask, IndexedDataset, parse_aux_tasks
from timm_mixplug.train.rules import SEED, Rule, number, superclass_map
from timm_mixplug.train.specs.base import TaskSpec, register_task

__all__ = ['AuxSpec']

# option -> the auxiliary tasks that read it
_TASK_FLAGS = {
    'aux_hierarchy': ('superclass',),
    'aux_random_classes': ('random_labels',),
    'aux_random_seed': ('random_labels',),
    'aux_crop_preflip': ('crop_pos',),
    'aux_cutout_length': ('cutout',),
    'aux_ricap_beta': ('ricap',),
    'aux_ricap_border_margin': ('ricap',),
    'aux_seg_grid': ('cutout', 'ricap'),
    'aux_crop_padding': AUGMENT_TASKS,
    'aux_no_flip': AUGMENT_TASKS,
}


def _needs_plain_loader(args, names) -> bool:
    """An augmentation-prediction task crops / flips on the device to record its targets, so the training
    loader must not (``--no-aug``: ToTensor + Normalize only). Label tasks keep the loader's augmentation."""
    return bool(set(names) & set(AUGMENT_TASKS)) and (args.aux_crop_padding > 0 or not args.aux_no_flip)


def _input_size(args):
    if args.input_size:
        return tuple(args.input_size)
    if args.img_size:
        return (args.in_chans or 3, args.img_size, args.img_size)
    return None


def _check_aux_tasks(v, a):
    try:
        parse_aux_tasks(v)
    except ValueError:
        return f'must be a comma list of distinct tasks from {", ".join(AUX_TASKS)}'
    return None


def _check_aux_weights(v, a):
    try:
        parse_aux_tasks(a.aux_tasks or '', v)
    except ValueError:
        return "must give one weight per --aux-tasks entry: '0.5,1', one value for all, or 'crop_pos=0.5'"
    return None


@register_task('aux')
class AuxSpec(TaskSpec):
    help = ('auxiliary tasks: superclass / random labels, crop position, cutout and RICAP segmentation heads '
            'on any timm backbone')
    mixes_itself = True  # the task augments (and, for the superclass task, mixes) on the device itself
    reads = ('superclass_map',)  # the superclass task's hierarchy when --aux-hierarchy is not given
    ranges = MappingProxyType({
        'aux_tasks': Rule(_check_aux_tasks, 'must be a comma list of auxiliary tasks', ('no_such_task', 'cutout,cutout')),
        'aux_weights': Rule(_check_aux_weights, 'must give a weight per --aux-tasks entry', ('x', '1,2,3'),
                            ('--aux-tasks', 'cutout,superclass')),
        'aux_hierarchy': Rule(superclass_map, 'must be a built-in hierarchy or a file', ('missing.yaml',), io=True),
        'aux_random_classes': number(lo=0, integer=True),
        'aux_random_seed': number(**SEED),
        'aux_crop_padding': number(lo=0, integer=True),
        'aux_cutout_length': number(lo=0, integer=True),
        'aux_ricap_beta': number(lo=0, lo_open=True),
        'aux_ricap_border_margin': number(lo=0, integer=True),
        'aux_seg_grid': number(lo=1, integer=True),
    })
    switches = ('aux_no_flip', 'aux_crop_preflip')
    weight_settings = ('aux_tasks', 'aux_random_classes', 'aux_seg_grid')

    def compare_presets(self):
        return {'aux': ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--no-aug']}

    def add_args(self, parser):
        g = parser.add_argument_group('Auxiliary tasks (--task aux)')
        g.add_argument('--aux-tasks', default='', help=f'comma list of {",".join(AUX_TASKS)} (empty = off)')
        g.add_argument('--aux-weights', default='', help="loss weights: '0.5,1' (in task order) or 'crop_pos=0.5'")
        g.add_argument('--aux-hierarchy', default=None,
                       help='hierarchy for the superclass task (load_hierarchy; default --superclass-map or cifar100)')
        g.add_argument('--aux-random-classes', type=int, default=0, help='random-label classes (0 = num_classes)')
        g.add_argument('--aux-random-seed', type=int, default=0, help='seed of the fixed random-label table')
        g.add_argument('--aux-crop-padding', type=int, default=4,
                       help='device pad-and-crop (0 = off: the loader crops; then no crop_pos task)')
        g.add_argument('--aux-no-flip', action='store_true', help='no device horizontal flip')
        g.add_argument('--aux-crop-preflip', action='store_true',
                       help='crop_pos target from the pre-flip offset (the paper\'s setting; flip-aware by default)')
        g.add_argument('--aux-cutout-length', type=int, default=16, help='Cutout side for the cutout task')
        g.add_argument('--aux-ricap-beta', type=float, default=0.3, help='RICAP Beta(b, b) for the ricap task')
        g.add_argument('--aux-ricap-border-margin', type=int, default=0,
                       help='keep the RICAP boundary this many pixels off the border (0 = RICAP; >= 1 makes the '
                            '4-way segmentation learnable)')
        g.add_argument('--aux-seg-grid', type=int, default=8, help='minimum segmentation-head resolution')

    def check_args(self, args):
        names = parse_aux_tasks(args.aux_tasks or '', args.aux_weights or None)
        if not names:
            raise ValueError(f'--task aux needs --aux-tasks (any of {", ".join(AUX_TASKS)}).')
        if 'crop_pos' in names and args.aux_crop_padding <= 0:
            raise ValueError('the crop_pos task needs --aux-crop-padding > 0 (the crop is made on the device).')
        if _needs_plain_loader(args, names) and not args.no_aug:
            raise ValueError('--aux-tasks crop_pos/cutout/ricap crop and flip on the device to record their '
                             'targets; add --no-aug so the loader does not.')
        if 'cutout' in names and 'ricap' in names:
            raise ValueError('cutout and ricap are separate pipelines in the paper; choose one of them.')
        if 'ricap' in names and names.keys() & {'random_labels', 'crop_pos'}:
            raise ValueError('random_labels / crop_pos targets are undefined on RICAP-combined images.')
        if args.mix not in (None, '', 'none') and (set(names) - {'superclass'}):
            raise ValueError(f'--mix {args.mix} with --task aux supports only the superclass task (the other '
                             f'targets need unmixed images).')

    def unused_flags(self, args):
        names = set(parse_aux_tasks(args.aux_tasks or ''))
        out = {d: f'without --aux-tasks {"/".join(tasks)}' for d, tasks in _TASK_FLAGS.items()
               if not names & set(tasks)}
        if 'superclass' not in names or args.aux_hierarchy:
            out['superclass_map'] = 'by --task aux without its superclass task (or with --aux-hierarchy)'
        return out

    def wrap_dataset(self, dataset, args, info, is_training):
        if is_training and 'random_labels' in parse_aux_tasks(args.aux_tasks or ''):
            return IndexedDataset(dataset)
        return dataset

    def create_task(self, args, model, criterion, mixer, info, device):
        weights = parse_aux_tasks(args.aux_tasks, args.aux_weights or None)
        hierarchy = None
        if 'superclass' in weights:
            source = args.aux_hierarchy or args.superclass_map or 'cifar100'
            hierarchy = load_hierarchy(source, num_classes=info.num_classes, class_names=info.class_names)
            if hierarchy.class_to_super.unique().numel() < 2:
                raise ValueError(f'the superclass task needs classes in 2 or more superclasses, but {source} puts '
                                 f'all {info.num_classes} classes in one (its loss would be 0 and its accuracy 100 %); '
                                 f'give --aux-hierarchy (or --superclass-map) a map with 2 or more superclasses, or '
                                 f'drop superclass from --aux-tasks')
        augment = None if not set(weights) & set(AUGMENT_TASKS) else DeviceAugment(
            padding=args.aux_crop_padding, flip=not args.aux_no_flip,
            cutout_length=args.aux_cutout_length if 'cutout' in weights else 0,
            ricap_beta=args.aux_ricap_beta if 'ricap' in weights else 0.0,
            ricap_border_margin=args.aux_ricap_border_margin, num_classes=info.num_classes,
            label_smoothing=args.smoothing)
        num_samples = int(sum(info.class_counts)) if info.class_counts else None
        return AuxTask(
            model, weights, info.num_classes, hierarchy=hierarchy, num_samples=num_samples,
            random_classes=args.aux_random_classes or None, random_seed=args.aux_random_seed, augment=augment,
            mixer=mixer, criterion=criterion if mixer is not None else None, label_smoothing=args.smoothing,
            input_size=_input_size(args), seg_grid=args.aux_seg_grid, crop_flip_aware=not args.aux_crop_preflip,
            device=device)
