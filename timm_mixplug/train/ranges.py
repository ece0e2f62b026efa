"""The valid range of every ``train.py`` flag, checked before anything is built or written.

``all_ranges()`` maps each option dest to a ``rules.Rule``: the rows of timm's and the application's own flags
are here, a method's rows are declared by its spec (``MethodSpec.ranges``, collected from the registry).
``LATER`` rules (``rules.later``) mark values that only a later stage can judge (a model or optimizer name, a
split) -- those stages raise their own one-line error that names the flag, still before the run folder exists.
``all_no_invalid()`` lists the flags that cannot take a bad value (switches, free text). ``check_ranges(args)``
(called by ``config.resolve_args``; with ``io=True`` by the engine for the file and device checks) raises
``UsageError('--flag <range>, got <value>')`` for the first violation. A new flag must get an entry (here or in
its spec): tests/test_flag_contract.py fails otherwise.
"""
import argparse
import math
import os
from typing import Dict

import torch
from PIL import Image
from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
from timm.utils import ParseKwargs
from torch._dynamo import list_backends, lookup_backend

from timm_mixplug.errors import UsageError
from timm_mixplug.train.rules import (
    FRACTION, PROB, SEED, Rule, choice, existing_file, later, number, parser_choice)
from timm_mixplug.train.specs.base import all_specs

__all__ = ['all_ranges', 'all_no_invalid', 'check_ranges', 'flag_name', 'KwargsAction']


def _data_dir(v, a):
    if os.path.isdir(v) or getattr(a, 'dataset_download', False):
        return None
    name = (getattr(a, 'dataset', '') or '').lower()
    prefix = name.partition('/')[0] if '/' in name else ''
    if name == 'npz':
        return 'must be an existing folder holding <split>.npz files (x: N x H x W x C uint8 images, y: labels)'
    if prefix in ('torch', 'tfds', 'hfds', 'hfids', 'wds') and name not in ('torch/folder', 'torch/image_folder'):
        return f'must be an existing folder (or add --dataset-download to let --dataset {a.dataset} download into it)'
    return ('must be an existing folder with one folder per split (train/, validation/), each holding one folder '
            'of images per class')


def _output(v, a):
    path = os.path.abspath(v)
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return None
    return 'must be a folder, not a file' if path == os.path.abspath(v) else f'must be a folder ({path} is a file)'


def _experiment(v, a):
    bad = v in ('.', '..') or os.sep in v or (os.altsep and os.altsep in v)
    return 'must be a folder name (no path separators), created under --output' if bad else None


def _device(v, a):
    try:
        dev = torch.device(v)
    except (RuntimeError, TypeError, ValueError):
        return 'must be a torch device such as cpu, cuda or cuda:1'
    if dev.type == 'cuda' and not torch.cuda.is_available():
        return 'is cuda but CUDA is not available; use --device cpu'
    if dev.type == 'cuda' and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f'names GPU {dev.index} but only {torch.cuda.device_count()} are visible'
    return None


def _channels(v, a):
    chans = a.in_chans or (a.input_size[0] if a.input_size else 3)
    if len(v) not in (1, chans) or not all(math.isfinite(x) for x in v):
        return f'takes 1 or {chans} (--in-chans) finite values'
    return None


def _std(v, a):
    problem = _channels(v, a)
    return problem or (None if all(x > 0 for x in v) else 'values must be > 0')


def _aa(v, a):
    fn = rand_augment_transform if v.startswith('rand') else (
        augment_and_mix_transform if v.startswith('augmix') else auto_augment_transform)
    try:
        fn(v, dict(translate_const=10, img_mean=(124, 116, 104)))
    except Exception:
        return 'must be a timm auto-augment spec: rand-m9-mstd0.5, augmix-m5-w4-d2, original, v0, 3a, ...'
    return None


def _compile_backend(v, a):
    try:
        lookup_backend(v)
    except Exception:
        return f'must be a torch.compile backend ({", ".join(list_backends())})'
    return None


def _aug_repeats(v, a):
    return None if v == 0 or (math.isfinite(v) and v >= 1) else 'must be 0 (off) or a number >= 1'


def _aug_splits(v, a):
    return None if v == 0 or v >= 2 else 'must be 0 (off) or an integer >= 2'


def _img_mode(v, a):
    return None if v in Image.MODES else 'must be a PIL image mode: RGB, L, ...'


_INTERP = ('bilinear', 'bicubic', 'nearest', 'box', 'hamming', 'lanczos')
_RANGES: Dict[str, Rule] = {
    # dataset
    'config': later('reading the config', 'missing.yaml', expect='-c/--config'),
    'data': later('checking --data-dir (DIR is its deprecated positional form)', 'missing_dir',
                   expect='--data-dir'),
    'data_dir': Rule(_data_dir, 'must be an existing folder', ('missing_dir',), io=True),
    'dataset': later('creating the dataset', 'mixplug/nosuch'),
    'train_split': later('creating the dataset (the split must exist)', 'trian'),
    'val_split': later('creating the dataset (the split must exist)', 'nosuchsplit'),
    'class_map': Rule(existing_file, 'must be an existing file', ('missing.txt',), io=True),
    'input_img_mode': Rule(_img_mode, 'must be a PIL image mode', ('XYZ',)),
    'train_num_samples': number(lo=1, integer=True),
    'val_num_samples': number(lo=1, integer=True),
    'epoch_repeats': number(lo=0),
    'worker_seeding': choice(('all', 'part')),
    # model
    'model': later('creating the model', 'no_such_model'),
    'pretrained_path': Rule(existing_file, 'must be an existing file', ('missing.safetensors',), io=True),
    'initial_checkpoint': Rule(existing_file, 'must be an existing file', ('missing.safetensors',), io=True),
    'resume': later('loading the state (a run folder or its last-state.safetensors)', 'missing_run'),
    'num_classes': number(lo=1, integer=True),
    'gp': choice(('', 'avg', 'max', 'avgmax', 'catavgmax', 'fast', 'fastavg', 'fastmax', 'fastavgmax',
                   'fastcatavgmax')),
    'img_size': number(lo=1, integer=True),
    'in_chans': number(lo=1, integer=True),
    'input_size': number(lo=1, integer=True, n=3),
    'crop_pct': number(lo=0, hi=1, lo_open=True),
    'mean': Rule(_channels, 'takes 1 or --in-chans finite values', ('0.5 0.5', 'nan')),
    'std': Rule(_std, 'takes 1 or --in-chans values > 0', ('0', '0.2 0.2')),
    'interpolation': choice(('',) + _INTERP),
    'batch_size': number(lo=1, integer=True),
    'validation_batch_size': number(lo=1, integer=True),
    'grad_accum_steps': number(lo=1, integer=True),
    'model_kwargs': later('creating the model', 'no_such_kwarg=1'),
    'device': Rule(_device, 'must be an available torch device', ('foo',), io=True),
    'dist_backend': choice(('nccl', 'gloo', 'mpi', 'ucc', 'xccl', 'hccl')),
    'amp_dtype': parser_choice('float8'),
    'local_rank': number(lo=0, integer=True),
    'head_init_scale': number(),
    'head_init_bias': number(),
    'model_dtype': parser_choice('float8'),
    'torchcompile': Rule(_compile_backend, 'must be a torch.compile backend', ('no_such_backend',)),
    'torchcompile_mode': choice(('default', 'lite', 'reduce-overhead', 'max-autotune',
                                  'max-autotune-no-cudagraphs')),
    'device_modules': later('importing the modules', 'no_such_module_xyz'),
    # optimizer
    'opt': later('creating the optimizer', 'no_such_opt'),
    'opt_eps': number(lo=0, lo_open=True),
    'opt_betas': number(lo=0, hi=1, hi_open=True, n='+'),
    'momentum': number(**PROB),
    'weight_decay': number(lo=0),
    'clip_grad': number(lo=0, lo_open=True),
    'clip_mode': parser_choice(),
    'layer_decay': number(lo=0, hi=1, lo_open=True),
    'layer_decay_min_scale': number(**PROB),
    'layer_decay_no_opt_scale': number(**PROB),
    'opt_kwargs': later('creating the optimizer', 'no_such_kwarg=1'),
    # learning-rate schedule
    'sched': choice(('cosine', 'tanh', 'step', 'multistep', 'plateau', 'poly', 'wsd', 'rsqrt', 'constant')),
    'lr': number(lo=0),
    'lr_base': number(lo=0, lo_open=True),
    'lr_base_size': number(lo=1, integer=True),
    'lr_base_scale': choice(('', 'linear', 'sqrt')),
    'lr_noise': number(**PROB, n='+', ordered=True),
    'lr_noise_pct': number(lo=0),
    'lr_noise_std': number(lo=0),
    'lr_cycle_mul': number(lo=0, lo_open=True),
    'lr_cycle_decay': number(lo=0, lo_open=True),
    'lr_cycle_limit': number(lo=1, integer=True),
    'lr_k_decay': number(lo=0, lo_open=True),
    'warmup_lr': number(lo=0),
    'min_lr': number(lo=0),
    'epochs': number(lo=1, integer=True),
    'start_epoch': number(lo=0, integer=True),
    'decay_milestones': number(lo=1, integer=True, n='+', ordered=True),
    'decay_epochs': number(lo=0, lo_open=True),
    'warmup_epochs': number(lo=0, integer=True),
    'cooldown_epochs': number(lo=0, integer=True),
    'patience_epochs': number(lo=0, integer=True),
    'decay_rate': number(lo=0, hi=1, lo_open=True),
    # augmentation and regularisation
    'train_crop_mode': choice(('', 'rrc', 'rkrc', 'rkrr')),
    'scale': number(counted=True, lo=0, hi=1, lo_open=True, n=2, ordered=True),
    'ratio': number(counted=True, lo=0, lo_open=True, n=2, ordered=True),
    'hflip': number(**PROB),
    'vflip': number(**PROB),
    'color_jitter': number(lo=0),
    'color_jitter_prob': number(**PROB),
    'grayscale_prob': number(**PROB),
    'gaussian_blur_prob': number(**PROB),
    'aa': Rule(_aa, 'must be a timm auto-augment spec', ('bogus',)),
    'reprob': number(**PROB),
    'remode': choice(('const', 'rand', 'pixel')),
    'recount': number(lo=1, integer=True),
    'aug_repeats': Rule(_aug_repeats, 'must be 0 (off) or >= 1', ('-1', '0.5', 'nan')),
    'aug_splits': Rule(_aug_splits, 'must be 0 (off) or >= 2', ('-1', '1')),
    'bce_target_thresh': number(**PROB),
    'bce_pos_weight': number(lo=0, lo_open=True),
    'smoothing': number(**FRACTION),
    'train_interpolation': choice(('', 'random') + _INTERP),
    'drop': number(**FRACTION),
    'drop_path': number(**FRACTION),
    'drop_connect': number(**FRACTION),
    'drop_block': number(**FRACTION),
    'bn_momentum': number(lo=0, hi=1, lo_open=True),
    'bn_eps': number(lo=0, lo_open=True),
    'dist_bn': parser_choice(),
    'model_ema_decay': number(**PROB),
    # miscellaneous
    'seed': number(**SEED),
    'log_interval': number(lo=1, integer=True),
    'workers': number(lo=0, integer=True),
    'output': Rule(_output, 'must be a folder (it is created if missing)', ('afile',), io=True),
    'experiment': Rule(_experiment, 'must be a folder name', ('a/b',)),
    'val_interval': number(lo=1, integer=True),
    'checkpoint_hist': number(lo=0, integer=True),
    'recovery_interval': number(lo=0, integer=True),
    'eval_metric': later('creating the task (the metric must be one it reports)', 'nosuch'),
    # timm_mixplug
    'pad_crop': number(lo=0, integer=True),
    'mix': parser_choice(),
    'task': parser_choice(),
    'max_epochs_this_run': number(lo=1, integer=True),
    'threads': number(lo=0, integer=True),
    'imb_factor': number(lo=1),
    'imb_seed': number(**SEED),
}

# Flags with no invalid value: switches (store_true) and free text.
_NO_INVALID: Dict[str, str] = {
    'help': 'prints the help',
    'dist_url': 'free text passed to torch.distributed',
    'input_key': "free text: the dataset reader's input column (a missing one is reported when it is read)",
    'target_key': "free text: the dataset reader's target column (a missing one is reported when it is read)",
    'wandb_project': 'free text (a W&B project name)',
    'wandb_tags': 'free text (W&B tags)',
    'wandb_resume_id': 'free text (a W&B run id)',
    **{d: 'switch' for d in (
        'dataset_download', 'allow_extra_classes', 'pretrained', 'no_resume_opt', 'channels_last',
        'grad_checkpointing', 'amp', 'no_ddp_bb', 'sched_on_updates', 'warmup_prefix', 'no_aug', 'resplit', 'sync_bn', 'model_ema',
        'model_ema_force_cpu', 'model_ema_warmup', 'pin_mem', 'no_prefetcher', 'evaluate',
        'overwrite_experiment', 'dataset_trust_remote_code', 'fast_norm', 'jsd_loss', 'bce_loss', 'bce_sum',
        'split_bn', 'use_multi_epochs_loader', 'log_wandb', 'save_images', 'synchronize_step')},
}


class KwargsAction(ParseKwargs):
    """timm's ``ParseKwargs`` (``KEY=VALUE ...`` -> dict) with a parser error naming the flag for an item
    without ``=`` (timm's raises a bare ValueError)."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if v and '=' not in v]
        if bad:
            raise argparse.ArgumentError(self, f'expects KEY=VALUE items, got {bad[0]!r}')
        super().__call__(parser, namespace, values, option_string)


def all_ranges() -> Dict[str, Rule]:
    """The range of every flag: timm's and the application's (here) and each registered method's (its spec)."""
    table = dict(_RANGES)
    for spec in all_specs():
        table.update(spec.ranges)
    return table


def all_no_invalid() -> Dict[str, str]:
    """Flags that cannot take a bad value: switches and free text (here and each method's ``no_invalid``)."""
    table = dict(_NO_INVALID)
    for spec in all_specs():
        table.update({dest: 'switch' for dest in spec.switches})
    return table


def flag_name(dest: str) -> str:
    return {'config': '-c/--config', 'data': 'DIR (positional)'}.get(dest, '--' + dest.replace('_', '-'))


def _show(value) -> str:
    return ' '.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check_ranges(args, io: bool = False) -> None:
    """Raise ``UsageError`` naming the flag and its valid range for the first value outside it (``io``: the
    checks of files and devices instead of the plain value checks)."""
    for dest, rule in all_ranges().items():
        value = getattr(args, dest, None)
        if rule.check is None or rule.io != io or value is None or value == '':
            continue
        problem = rule.check(value, args)
        if problem:
            raise UsageError(f'{flag_name(dest)} {problem}, got {_show(value)}')
