"""Command line and YAML config for ``train.py``, using timm ``train.py``'s flag names and meanings.

A timm YAML config (flat mapping of arg dests to values) loads with ``-c``: values become defaults and
flags on the command line override them, as in timm. timm options we do not implement are accepted and
reported once as ignored; keys that are neither ours nor timm's (typos) are errors.
"""
import argparse
import difflib
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml

from .errors import UsageError
from .validation import KwargsAction, check_ranges

__all__ = ['UsageError', 'create_parser', 'parse_args', 'load_yaml_config', 'args_to_yaml', 'resolve_args',
           'TIMM_IGNORED', 'MIX_CHOICES']


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


# timm train.py options that are recognised but not implemented here (reported as ignored).
TIMM_IGNORED = (
    'input_key', 'target_key', 'dataset_trust_remote_code', 'train_num_samples', 'val_num_samples',
    'epoch_repeats', 'worker_seeding', 'recovery_interval', 'checkpoint_hist', 'save_images', 'tta',
    'use_multi_epochs_loader', 'log_wandb', 'wandb_project', 'wandb_tags', 'wandb_resume_id',
    'aug_repeats', 'aug_splits', 'jsd_loss', 'bce_loss', 'bce_sum', 'bce_target_thresh', 'bce_pos_weight',
    'split_bn', 'drop_connect', 'fuser', 'fast_norm', 'torchscript', 'torchcompile', 'torchcompile_mode',
    'amp_impl', 'model_dtype', 'synchronize_step', 'head_init_scale', 'head_init_bias', 'device_modules',
    'layer_decay_min_scale', 'layer_decay_no_opt_scale', 'opt_foreach', 'lr_decay_fn', 'lr_stable_timescale',
    'use_naflex', 'naflex_loader', 'naflex_train_seq_lens', 'naflex_max_seq_len', 'naflex_loss_scale',
    'naflex_patch_sizes', 'naflex_patch_size_probs', 'model_ema_warmup_power', 'loss_type', 'class_weight',
    'kd_model_name', 'kd_model_path', 'kd_distill_type', 'kd_loss_type', 'kd_loss_weight',
    'task_loss_weight', 'kd_temperature', 'kd_teacher_pretrained', 'distill_type', 'amp_scaler',
    'input_size_choices', 'batch_size_choices', 'batch_choice_weights', 'batch_choice_schedule',
    'train_crop_scale', 'grad_accum_on_batch', 'hflip_prob',
)

MIX_CHOICES_STATIC = ('none', 'mixup', 'cutmix', 'bc', 'bcplus', 'superclass')
# Not written to args.yaml: per-invocation switches, and the test hook.
_NOT_SAVED = ('config', 'data', 'local_rank', 'evaluate', 'max_epochs_this_run', 'resume', 'overwrite_experiment')


def _mix_choices() -> List[str]:
    try:
        from .mixing import list_mixups
        return ['none'] + [n for n in list_mixups() if n != 'none']
    except Exception:  # mixing core not importable yet
        return list(MIX_CHOICES_STATIC)


MIX_CHOICES = MIX_CHOICES_STATIC


def _default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def create_parser(with_tasks: bool = True) -> argparse.ArgumentParser:
    """timm train.py's options (same names, defaults and meanings) plus ours; task groups via the registry."""
    p = _Parser(prog='train.py', allow_abbrev=False,
                description='timm-style training with BC/BC+, superclass mixup, DML, GLMC, ... '
                            '(timm_mixplug). `train.py validate ...` == `train.py --evaluate ...`.')
    p.add_argument('-c', '--config', default='', metavar='FILE', help='YAML config (timm train.py format)')

    g = p.add_argument_group('Dataset')
    g.add_argument('data', nargs='?', metavar='DIR', default=None,
                   help='path to dataset (positional is deprecated, use --data-dir)')
    g.add_argument('--data-dir', metavar='DIR', help='path to dataset (root dir)')
    g.add_argument('--dataset', metavar='NAME', default='',
                   help='dataset type + name ("<type>/<name>"), e.g. torch/cifar100, mixplug/digits '
                        '(built-in, offline); empty = ImageFolder/ImageTar')
    g.add_argument('--train-split', metavar='NAME', default='train')
    g.add_argument('--val-split', metavar='NAME', default='validation')
    g.add_argument('--dataset-download', action='store_true', default=False)
    g.add_argument('--class-map', default='', type=str, metavar='FILENAME')
    g.add_argument('--input-img-mode', default=None, type=str)

    g = p.add_argument_group('Model')
    g.add_argument('--model', default='resnet50', type=str, metavar='MODEL')
    g.add_argument('--pretrained', action='store_true', default=False)
    g.add_argument('--pretrained-path', default=None, type=str, help='load pretrained weights from this file')
    g.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH',
                   help='load model weights only (safetensors; .pth via torch.load(weights_only=True))')
    g.add_argument('--resume', default='', type=str, metavar='PATH',
                   help='resume model + optimizer + scheduler + RNG from a run dir or its last-state.safetensors')
    g.add_argument('--no-resume-opt', action='store_true', default=False)
    g.add_argument('--num-classes', type=int, default=None, metavar='N',
                   help='number of classes (default: from the dataset)')
    g.add_argument('--gp', default=None, type=str, metavar='POOL')
    g.add_argument('--img-size', type=int, default=None, metavar='N')
    g.add_argument('--in-chans', type=int, default=None, metavar='N')
    g.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N')
    g.add_argument('--crop-pct', default=None, type=float, metavar='N')
    g.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN')
    g.add_argument('--std', type=float, nargs='+', default=None, metavar='STD')
    g.add_argument('--interpolation', default='', type=str, metavar='NAME')
    g.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size per process')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N')
    g.add_argument('--channels-last', action='store_true', default=False)
    g.add_argument('--grad-accum-steps', type=int, default=1, metavar='N')
    g.add_argument('--grad-checkpointing', action='store_true', default=False)
    g.add_argument('--model-kwargs', nargs='*', default={}, action=KwargsAction)
    g.add_argument('--device', default=None, type=str, help='cuda, cpu, ... (default: cuda if available)')
    g.add_argument('--dist-backend', default=None, type=str, help='default: nccl for cuda, gloo for cpu')
    g.add_argument('--dist-url', default=None, type=str)
    g.add_argument('--amp', action='store_true', default=False)
    g.add_argument('--amp-dtype', default='float16', type=str, choices=['float16', 'bfloat16'])
    g.add_argument('--no-ddp-bb', action='store_true', default=False)
    g.add_argument('--local-rank', '--local_rank', default=0, type=int, help=argparse.SUPPRESS)

    g = p.add_argument_group('Optimizer')
    g.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER')
    g.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON')
    g.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA')
    g.add_argument('--momentum', type=float, default=0.9, metavar='M')
    g.add_argument('--weight-decay', type=float, default=2e-5)
    g.add_argument('--clip-grad', type=float, default=None, metavar='NORM')
    g.add_argument('--clip-mode', type=str, default='norm', choices=['norm', 'value', 'agc'])
    g.add_argument('--layer-decay', type=float, default=None)
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=KwargsAction)

    g = p.add_argument_group('Learning rate schedule')
    g.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER')
    g.add_argument('--sched-on-updates', action='store_true', default=False)
    g.add_argument('--lr', type=float, default=None, metavar='LR',
                   help='learning rate (default: --lr-base * global batch / --lr-base-size)')
    g.add_argument('--lr-base', type=float, default=0.1, metavar='LR')
    g.add_argument('--lr-base-size', type=int, default=256, metavar='DIV')
    g.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE', help='linear or sqrt')
    g.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct')
    g.add_argument('--lr-noise-pct', type=float, default=0.67)
    g.add_argument('--lr-noise-std', type=float, default=1.0)
    g.add_argument('--lr-cycle-mul', type=float, default=1.0)
    g.add_argument('--lr-cycle-decay', type=float, default=0.5)
    g.add_argument('--lr-cycle-limit', type=int, default=1)
    g.add_argument('--lr-k-decay', type=float, default=1.0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=0)
    g.add_argument('--epochs', type=int, default=300)
    g.add_argument('--start-epoch', default=None, type=int)
    g.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+')
    g.add_argument('--decay-epochs', type=float, default=90)
    g.add_argument('--warmup-epochs', type=int, default=5)
    g.add_argument('--warmup-prefix', action='store_true', default=False)
    g.add_argument('--cooldown-epochs', type=int, default=0)
    g.add_argument('--patience-epochs', type=int, default=10)
    g.add_argument('--decay-rate', '--dr', type=float, default=0.1)

    g = p.add_argument_group('Augmentation and regularization')
    g.add_argument('--no-aug', action='store_true', default=False)
    g.add_argument('--train-crop-mode', type=str, default=None)
    g.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT')
    g.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO')
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.)
    g.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT')
    g.add_argument('--color-jitter-prob', type=float, default=None)
    g.add_argument('--grayscale-prob', type=float, default=None)
    g.add_argument('--gaussian-blur-prob', type=float, default=None)
    g.add_argument('--aa', type=str, default=None, metavar='NAME')
    g.add_argument('--reprob', type=float, default=0.)
    g.add_argument('--remode', type=str, default='pixel')
    g.add_argument('--recount', type=int, default=1)
    g.add_argument('--resplit', action='store_true', default=False)
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (timm); selects --mix mixup if > 0')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (timm); selects --mix mixup if > 0')
    g.add_argument('--cutmix-minmax', type=float, nargs='+', default=None)
    g.add_argument('--mixup-prob', type=float, default=1.0)
    g.add_argument('--mixup-switch-prob', type=float, default=0.5)
    g.add_argument('--mixup-mode', type=str, default='batch')
    g.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N')
    g.add_argument('--smoothing', type=float, default=None,
                   help='label smoothing (default: 0.1 as in timm; 0 for bc, bcplus and superclass)')
    g.add_argument('--train-interpolation', type=str, default='random')
    g.add_argument('--drop', type=float, default=0.0, metavar='PCT')
    g.add_argument('--drop-path', type=float, default=None, metavar='PCT')
    g.add_argument('--drop-block', type=float, default=None, metavar='PCT')

    g = p.add_argument_group('Batch norm')
    g.add_argument('--bn-momentum', type=float, default=None)
    g.add_argument('--bn-eps', type=float, default=None)
    g.add_argument('--sync-bn', action='store_true', default=False)
    g.add_argument('--dist-bn', type=str, default='reduce', choices=['broadcast', 'reduce', ''])

    g = p.add_argument_group('Model EMA')
    g.add_argument('--model-ema', action='store_true', default=False)
    g.add_argument('--model-ema-force-cpu', action='store_true', default=False)
    g.add_argument('--model-ema-decay', type=float, default=0.9998)
    g.add_argument('--model-ema-warmup', action='store_true')

    g = p.add_argument_group('Miscellaneous')
    g.add_argument('--seed', type=int, default=42, metavar='S')
    g.add_argument('--log-interval', type=int, default=50, metavar='N')
    g.add_argument('-j', '--workers', type=int, default=4, metavar='N')
    g.add_argument('--pin-mem', action='store_true', default=False)
    g.add_argument('--no-prefetcher', action='store_true', default=False)
    g.add_argument('--output', default='', type=str, metavar='PATH', help='default: ./output/train')
    g.add_argument('--experiment', default='', type=str, metavar='NAME')
    g.add_argument('--overwrite-experiment', action='store_true', default=False,
                   help='train a new run into an existing --experiment folder, deleting its run files '
                        '(without it an existing folder is refused)')
    g.add_argument('--eval-metric', default='top1', type=str, metavar='EVAL_METRIC')

    g = p.add_argument_group('timm_mixplug')
    g.add_argument('--pad-crop', type=int, default=0, metavar='N',
                   help='CIFAR-style crop: zero-pad N pixels and take a random crop of the input size, in place '
                        "of timm's RandomResizedCrop (--scale/--ratio then unused); 0 = off")
    g.add_argument('--mix', default=None, choices=_mix_choices(),
                   help='batch mixing method (default: mixup if --mixup/--cutmix > 0, else none)')
    g.add_argument('--superclass-map', default=None, type=str, metavar='NAME|FILE',
                   help='superclass hierarchy: cifar100, imagenet1k or a YAML/JSON/CSV file '
                        '(default: cifar100 for torch/cifar100)')
    g.add_argument('--superclass-mode', default='beta', choices=['beta', 'choice'])
    g.add_argument('--superclass-alpha-same', type=float, default=8.0)
    g.add_argument('--superclass-alpha-diff', type=float, default=0.2)
    g.add_argument('--superclass-choice-same', type=float, default=0.5)
    g.add_argument('--superclass-choice-diff', type=float, nargs=2, default=[0.1, 0.9])
    tasks = ['classification']
    if with_tasks:
        from .tasks import get_task_spec, list_tasks, load_builtin_tasks
        load_builtin_tasks()
        tasks = list(list_tasks())
    g.add_argument('--task', default='classification', choices=tasks, help='training objective')
    g.add_argument('--evaluate', action='store_true', default=False,
                   help='only evaluate the --resume / --initial-checkpoint weights on --val-split')
    g.add_argument('--max-epochs-this-run', type=int, default=None, metavar='N',
                   help='stop (resumably) after N epochs in this invocation (preemption / testing)')
    try:  # --imb-factor / --imb-seed: long-tailed training subsets for every task
        from .longtail import add_longtail_args
        add_longtail_args(p)
    except ImportError:
        pass
    if with_tasks:
        for name in tasks:
            get_task_spec(name).add_args(p)

    known = {a.dest for a in p._actions}
    for dest in TIMM_IGNORED:
        if dest not in known:
            p.add_argument('--' + dest.replace('_', '-'), dest=dest, nargs='*', default=argparse.SUPPRESS,
                           help=argparse.SUPPRESS)
    return p


def load_yaml_config(path: str) -> Dict[str, Any]:
    """Read a flat YAML mapping; keys may use - or _."""
    if not os.path.isfile(path):
        raise UsageError(f'-c/--config file not found: {path}')
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UsageError(f'cannot parse config {path}: {str(e).splitlines()[0]}') from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise UsageError(f'config {path} must be a mapping of option names to values, got {type(cfg).__name__}')
    return {str(k).replace('-', '_'): v for k, v in cfg.items()}


def _coerce(action: argparse.Action, key: str, value, source: str):
    """Convert a YAML value with the option's type; check choices."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UsageError(f'{source}: {key} must be true or false, got {value!r}')
        return value
    typ = action.type

    def one(v):
        if typ is not None and not isinstance(v, bool):
            try:
                v = typ(v)
            except (TypeError, ValueError):
                raise UsageError(f'{source}: {key} expects {getattr(typ, "__name__", typ)} values, got {v!r}') from None
        if action.choices is not None and v not in action.choices:
            raise UsageError(f'{source}: invalid {key} {v!r} (choose from {", ".join(map(str, action.choices))})')
        return v

    if isinstance(action, argparse._StoreAction) and action.nargs not in (None, '?'):
        vals = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(action.nargs, int) and len(vals) != action.nargs:
            raise UsageError(f'{source}: {key} takes {action.nargs} values, got {value!r}')
        return [one(v) for v in vals]
    if isinstance(action, argparse._StoreAction):
        return one(value)
    if isinstance(action, KwargsAction):
        if not isinstance(value, dict):
            raise UsageError(f'{source}: {key} must be a mapping, got {value!r}')
    return value


def _split_argv(argv: Sequence[str]):
    """Handle the ``validate`` sub-command (== --evaluate)."""
    argv = list(argv)
    if argv and argv[0] == 'validate':
        return argv[1:] + ['--evaluate']
    return argv


def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """Parse ``-c`` YAML + command line into a Namespace (``args.ignored``: timm options we don't implement)."""
    argv = _split_argv(sys.argv[1:] if argv is None else argv)
    pre = _Parser(add_help=False, allow_abbrev=False)
    pre.add_argument('-c', '--config', default='')
    cfg_args, _ = pre.parse_known_args(argv)
    parser = parser or create_parser()
    actions = {a.dest: a for a in parser._actions if a.dest not in ('help',)}
    ignored: Dict[str, Any] = {}
    if cfg_args.config:
        cfg = load_yaml_config(cfg_args.config)
        defaults = {}
        for key, value in cfg.items():
            if key in TIMM_IGNORED:
                ignored[key] = value
            elif key == 'local_rank':  # set by the launcher, never by a config
                continue
            elif key in actions and actions[key].help is not argparse.SUPPRESS:
                defaults[key] = _coerce(actions[key], key, value, cfg_args.config)
            else:
                options = [d for d, a in actions.items() if a.help is not argparse.SUPPRESS]
                close = difflib.get_close_matches(key, options, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                raise UsageError(f"unknown option '{key}' in config {cfg_args.config}{hint}")
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for dest in TIMM_IGNORED:
        if hasattr(args, dest) and dest in actions and actions[dest].help is argparse.SUPPRESS:
            ignored[dest] = getattr(args, dest)
            delattr(args, dest)
    args.ignored = ignored
    return resolve_args(args)


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check every value's range (``validation.RANGES``), fill defaults that depend on other options and check
    combinations (raises UsageError)."""
    check_ranges(args)
    if args.data and args.data_dir and args.data != args.data_dir:
        raise UsageError(f'two dataset folders: DIR {args.data} and --data-dir {args.data_dir}; give only --data-dir')
    if args.data and not args.data_dir:
        args.data_dir = args.data
    args.data = None
    if args.device is None:
        args.device = _default_device()
    if args.mix is None:
        args.mix = 'mixup' if (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax) else 'none'
    if args.smoothing is None:
        args.smoothing = 0.0 if args.mix in ('bc', 'bcplus', 'superclass') else 0.1
    if args.superclass_map is None and args.mix == 'superclass' and args.dataset.lower() == 'torch/cifar100':
        args.superclass_map = 'cifar100'
    if args.mix != 'none' and args.batch_size % 2:
        raise UsageError(f'--mix {args.mix} pairs the images of a batch, so --batch-size (per process) must be '
                         f'even; got {args.batch_size}')
    if args.pad_crop and args.no_aug:
        raise UsageError('--pad-crop is a training augmentation; it cannot be combined with --no-aug')
    if args.pad_crop and args.train_crop_mode not in (None, '', 'rrc'):
        raise UsageError(f'--pad-crop replaces the default random-resized crop; drop --train-crop-mode '
                         f'{args.train_crop_mode}')
    if args.evaluate and not (args.resume or args.initial_checkpoint or args.pretrained):
        raise UsageError('--evaluate needs weights: --resume RUN_DIR|FILE, --initial-checkpoint FILE or --pretrained')
    if args.overwrite_experiment and (args.resume or not args.experiment):
        raise UsageError('--overwrite-experiment replaces the folder of a new --experiment NAME; drop it'
                         + (' when resuming (--resume continues the run)' if args.resume else ''))
    if args.resume and args.initial_checkpoint and not args.evaluate:
        raise UsageError('use either --resume (continue a run) or --initial-checkpoint (weights only), not both')
    if args.mix == 'superclass' and not args.superclass_map:
        raise UsageError('--mix superclass needs --superclass-map (cifar100, imagenet1k or a YAML/JSON/CSV file)')
    return args


def args_to_yaml(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> str:
    """The resolved config as YAML, loadable again with ``-c`` (only option dests, no runtime fields)."""
    parser = parser or create_parser()
    dests = [a.dest for a in parser._actions
             if a.dest not in ('help',) and a.help is not argparse.SUPPRESS and a.dest not in _NOT_SAVED]
    out = {}
    for d in dests:
        if hasattr(args, d):
            v = getattr(args, d)
            out[d] = list(v) if isinstance(v, tuple) else v
    return yaml.safe_dump(out, default_flow_style=False, sort_keys=False)
