"""Command line and YAML config for ``train.py``, using timm ``train.py``'s flag names and meanings.

A timm YAML config (flat mapping of arg dests to values) loads with ``-c`` (``yaml_config``): values become
defaults and flags on the command line override them, as in timm. Every upstream option is accepted
(``flags.TIMM_FLAGS``); those we do not implement are refused when set away from timm's default; keys that are
neither ours nor timm's (typos) are errors.

The parser is timm's flags (``flags``), ours, and every registered method spec's group (``specs``); after
parsing, every value goes through the range table (``ranges``), the selected methods' ``check_args``, and the
check that every method option set away from its default is read by a selected method.
"""
import argparse
import sys
from typing import Any, Dict, Optional, Sequence

import torch
import yaml

from timm_mixplug.data.mixing import get_mixer_spec, list_mixups
from timm_mixplug.errors import UsageError
from timm_mixplug.train.data import add_longtail_args
from timm_mixplug.train.flags import REFUSED, TIMM_FLAGS, refused_settings
from timm_mixplug.train.options import check_args as check_timm_options
from timm_mixplug.train.ranges import KwargsAction, check_ranges
from timm_mixplug.train.specs import (
    add_method_args, check_flags_consumed, get_mix_spec, get_task_spec, list_tasks)
from timm_mixplug.train.fit_defaults import fit_warmup
from timm_mixplug.train.yaml_config import config_defaults, given_options

__all__ = ['UsageError', 'create_parser', 'parse_args', 'split_argv', 'args_to_yaml', 'resolve_args']


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


# Not written to args.yaml: per-invocation switches, and the test hook.
_NOT_SAVED = ('config', 'data', 'local_rank', 'evaluate', 'max_epochs_this_run', 'resume', 'overwrite_experiment')


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose help does not state its default."""

    def _get_help_string(self, action):
        h = action.help or ''
        if 'default' not in h and action.default is not argparse.SUPPRESS and (
                action.option_strings or action.nargs in ('?', '*')):
            h += ' (default: %(default)s)'
        return h


def _default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def _add_timm_flags(p: argparse.ArgumentParser) -> None:
    """Every upstream timm train.py option, from ``flags.TIMM_FLAGS``."""
    groups = {}
    for f in TIMM_FLAGS:
        if f.group not in groups:
            groups[f.group] = p.add_argument_group(f.group)
        kw = dict(f.kwargs)
        if kw.get('action') == 'parse_kwargs':
            kw['action'] = KwargsAction
        if f.our_default != '<timm>':
            kw['default'] = f.our_default
        help = f.help if f.status != REFUSED else f.help + f" [refused unless at timm's default: {f.why}]"
        if f.dest == 'local_rank':
            help = argparse.SUPPRESS
        if f.flags[0].startswith('-'):
            groups[f.group].add_argument(*f.flags, dest=f.dest, help=help, **kw)
        else:  # the positional
            groups[f.group].add_argument(f.dest, help=help, **kw)


def create_parser() -> argparse.ArgumentParser:
    """train.py's parser: timm train.py's options (``flags``), ours, the long-tail options and every registered
    method spec's group (``specs.add_method_args``, which records the options each method owns)."""
    p = _Parser(prog='train.py', allow_abbrev=False, formatter_class=_HelpFormatter,
                description='timm-style training with BC/BC+, superclass mixup, DML, GLMC, ... '
                            '(timm_mixplug). Every option of timm\'s train.py is accepted (with -c too); '
                            'those marked [refused unless at timm\'s default] are refused when set away from it. '
                            '`train.py validate ...` == `train.py --evaluate ...`.',
                epilog='Which method helps on your data: python -m timm_mixplug compare --methods ce,bc,bcplus '
                       '-- TRAIN.PY FLAGS (seeds, paired 95 % intervals; see python -m timm_mixplug compare --help).')
    p.add_argument('-c', '--config', default='', metavar='FILE',
                   help='YAML config (flat mapping of option names to values, as timm\'s args.yaml); several -c '
                        'apply in order (a later file overrides an earlier one); command-line flags override them')
    _add_timm_flags(p)

    g = p.add_argument_group('Distributed (ours)')
    g.add_argument('--dist-backend', default=None, type=str,
                   help='torch.distributed backend (default: nccl for cuda, gloo otherwise)')
    g.add_argument('--dist-url', default=None, type=str, help='torch.distributed init_method')

    g = p.add_argument_group('timm_mixplug')
    g.add_argument('--overwrite-experiment', action='store_true', default=False,
                   help='train a new run into an existing --experiment folder, deleting its run files '
                        '(without it an existing folder is refused)')
    g.add_argument('--pad-crop', type=int, default=0, metavar='N',
                   help='CIFAR-style crop: zero-pad N pixels and take a random crop of the input size, in place '
                        "of timm's RandomResizedCrop (--scale/--ratio then unused); 0 = off")
    g.add_argument('--mix', default=None, choices=['none'] + [n for n in list_mixups() if n != 'none'],
                   help='batch mixing method (default: mixup if --mixup/--cutmix > 0, else none)')
    g.add_argument('--task', default='classification', choices=list(list_tasks()), help='training objective')
    g.add_argument('--evaluate', action='store_true', default=False,
                   help='only evaluate the --resume / --initial-checkpoint weights on --val-split')
    g.add_argument('--threads', type=int, default=0, metavar='N',
                   help='torch threads per process; 0 = OMP_NUM_THREADS if set, else the cores that are free '
                        '(CPU count minus the load average, the loader workers and the other local processes)')
    g.add_argument('--max-epochs-this-run', type=int, default=None, metavar='N',
                   help='stop (resumably) after N epochs in this invocation (preemption / testing)')
    g.add_argument('--allow-extra-classes', action='store_true',
                   help='allow --num-classes above the training data\'s class count (extra outputs never see a label)')
    add_longtail_args(p)
    add_method_args(p)
    return p


def split_argv(argv: Sequence[str]):
    """Handle the ``validate`` sub-command (== --evaluate)."""
    argv = list(argv)
    if argv and argv[0] == 'validate':
        return argv[1:] + ['--evaluate']
    return argv


def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """Parse ``-c`` YAML + command line into a resolved Namespace (raises ``UsageError``; also for a refused
    timm option set away from timm's default, ``flags.REFUSED``). ``parser`` (default
    ``create_parser()``) may carry defaults of its own, e.g. a run's settings for ``validate``."""
    argv = split_argv(sys.argv[1:] if argv is None else argv)
    parser = parser or create_parser()
    actions = {a.dest: a for a in parser._actions if a.dest not in ('help',)}
    pristine = {d: a.default for d, a in actions.items()}  # before the config's values become defaults
    from_config = config_defaults(argv, actions, pristine)
    parser.set_defaults(**from_config)
    args = parser.parse_args(argv)
    args.given = given_options(argv, actions, from_config)  # the rest is at its default (fit_defaults)
    refused = refused_settings(vars(args))
    if refused:
        dest, why = next(iter(refused.items()))
        raise UsageError(f'--{dest.replace("_", "-")} {getattr(args, dest)}: not supported with timm_mixplug ({why}); '
                         f'drop it')
    return resolve_args(args, pristine)


def resolve_args(args: argparse.Namespace, defaults: Dict[str, Any]) -> argparse.Namespace:
    """Check every value's range (``ranges.all_ranges``), fill defaults that depend on other options (the
    selected methods' ``resolve_defaults`` among them), check combinations and that every method option away from
    its value in ``defaults`` is read (UsageError)."""
    check_ranges(args)
    if args.data and args.data_dir and args.data != args.data_dir:
        raise UsageError(f'two dataset folders: DIR {args.data} and --data-dir {args.data_dir}; give only --data-dir')
    if args.data and not args.data_dir:
        args.data_dir = args.data
    args.data = None
    if args.drop_connect is not None:  # timm's old name of --drop-path
        if args.drop_path is not None and args.drop_path != args.drop_connect:
            raise UsageError(f'--drop-connect {args.drop_connect} is the old name of --drop-path, which is '
                             f'{args.drop_path}; give only --drop-path')
        args.drop_path, args.drop_connect = args.drop_connect, None
    if args.device is None:
        args.device = _default_device()
    if args.mix is None:
        args.mix = 'mixup' if (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax) else 'none'
    if args.smoothing is None:
        args.smoothing = 0.1 if args.mix == 'none' else get_mixer_spec(args.mix).label_smoothing
    if args.imb_seed != defaults.get('imb_seed') and not args.imb_factor:
        raise UsageError('--imb-seed seeds the long-tailed subset of --imb-factor; add --imb-factor or drop it')
    if args.mix != 'none' and get_mixer_spec(args.mix).even_batch and args.batch_size % 2:
        raise UsageError(f'--mix {args.mix} pairs the images of a batch, so --batch-size (per process) must be '
                         f'even; got {args.batch_size}')
    args.notes = [n for n in [fit_warmup(args, getattr(args, 'given', None))] if n]
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
    check_timm_options(args)
    for spec in (get_task_spec(args.task), get_mix_spec(args.mix)):
        if spec is not None:
            spec.resolve_defaults(args)
            try:
                spec.check_args(args)
            except ValueError as e:
                raise UsageError(f'{spec.selector}: {e}') from None
    check_flags_consumed(args, defaults)
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
