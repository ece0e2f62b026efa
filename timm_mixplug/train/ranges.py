"""The valid range of every ``train.py`` flag, checked before anything is built or written.

``RANGES`` maps each option dest to a ``Rule``: ``check(value, args)`` returns what is wrong (or None),
``text`` states the valid range (it is the fix in the error line), ``bad`` gives invalid example values (the
contract test feeds each one to ``train.py``). ``LATER`` rules mark values that only a later stage can judge
(a model or optimizer name, a split) -- those stages raise their own one-line error that names the flag,
still before the run folder exists. ``NO_INVALID`` lists the flags that cannot take a bad value (switches,
free text). ``check_ranges(args)`` (called by ``config.resolve_args``; with ``io=True`` by the engine
for the file and device checks) raises ``UsageError('--flag <range>, got <value>')`` for the first
violation. A new flag must get an entry here: tests/test_flag_contract.py fails otherwise.
"""
import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from timm.utils import ParseKwargs

from timm_mixplug.errors import UsageError

__all__ = ['Rule', 'RANGES', 'NO_INVALID', 'check_ranges', 'flag_name', 'KwargsAction']


@dataclass(frozen=True)
class Rule:
    """``check(value, args) -> None | problem``; ``text``: the valid range; ``bad``: invalid CLI values;
    ``context``: extra argv the bad values need to be reached (e.g. the task that reads the flag);
    ``expect``: text the error line contains (default: the flag); ``io``: the check looks at this machine
    (files, devices), so it runs when training / evaluation starts, not when a config is parsed."""
    check: Optional[Callable[[Any, Any], Optional[str]]]
    text: str
    bad: Tuple[str, ...] = ()
    context: Tuple[str, ...] = ()
    expect: str = ''
    io: bool = False


def _num(lo=None, hi=None, lo_open=False, hi_open=False, integer=False, n=None, ordered=False,
         counted=False) -> Rule:
    """A number (or ``n`` numbers, ``n='+'`` for one or more) in [lo, hi] (open ends as asked); ``counted``:
    the parser takes any count (nargs '+'), so a wrong count is a bad value too."""
    kind = 'an integer' if integer else 'a number'
    if lo is not None and hi is not None:
        rng = f'in {"(" if lo_open else "["}{lo}, {hi}{")" if hi_open else "]"}'
    elif lo is not None:
        rng = f'{">" if lo_open else ">="} {lo}'
    elif hi is not None:
        rng = f'{"<" if hi_open else "<="} {hi}'
    else:
        rng = 'finite'
    text = f'must be {kind} {rng}' if n is None else \
        f'takes {"one or more" if n == "+" else n} values, each {rng}' + (' in ascending order' if ordered else '')

    def ok(v) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return not ((lo is not None and (v <= lo if lo_open else v < lo))
                    or (hi is not None and (v >= hi if hi_open else v > hi)))

    def check(value, args):
        vals = [value] if n is None else list(value)
        if n not in (None, '+') and len(vals) != n:
            return text
        if not all(ok(v) for v in vals) or (ordered and vals != sorted(vals)):
            return text
        return None

    bad = []
    step = 1 if integer else (0.5 if (hi is None or lo is None) else (hi - lo) / 2)
    if lo is not None:
        bad.append(str(lo if lo_open else lo - step))
    if hi is not None:
        bad.append(str(hi if hi_open else hi + step))
    if not integer:
        bad.append('nan')
    if n not in (None, '+'):  # out-of-range values with the right count (and a wrong count)
        good = lo + step if lo is not None else (hi - step if hi is not None else 0)
        good = int(good) if integer else good
        bad = [' '.join([b] + [str(good)] * (n - 1)) for b in bad]
        if counted:
            bad.append(' '.join([str(good)] * (n + 1)))
    return Rule(check, text, tuple(bad))


def _choice(options: Sequence[str], bad: str = 'bogus') -> Rule:
    opts = list(options)
    text = 'must be one of ' + ', '.join(repr(o) if o == '' else o for o in opts)
    return Rule(lambda v, a: None if v in opts else text, text, (bad,))


def _parser_choice(bad: str = 'bogus') -> Rule:
    """The parser's ``choices`` (from a registry for --mix / --task) reject anything else."""
    return Rule(None, 'must be one of the choices --help lists', (bad,))


def _later(where: str, bad: str, context: Sequence[str] = (), expect: str = '') -> Rule:
    return Rule(None, f'checked when {where}', (bad,), tuple(context), expect)


def _existing_file(v, a):
    return None if os.path.isfile(v) else 'must be an existing file'


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
    import torch
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
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
    fn = rand_augment_transform if v.startswith('rand') else (
        augment_and_mix_transform if v.startswith('augmix') else auto_augment_transform)
    try:
        fn(v, dict(translate_const=10, img_mean=(124, 116, 104)))
    except Exception:
        return 'must be a timm auto-augment spec: rand-m9-mstd0.5, augmix-m5-w4-d2, original, v0, 3a, ...'
    return None


def _superclass_map(v, a):
    from timm_mixplug.data.hierarchy import BUILTIN_HIERARCHIES
    if v in BUILTIN_HIERARCHIES or os.path.isfile(v):
        return None
    return f'must be {", ".join(BUILTIN_HIERARCHIES)} or an existing YAML/JSON/CSV file'


def _aux_tasks(v, a):
    from timm_mixplug.task.aux import AUX_TASKS, parse_aux_tasks
    try:
        parse_aux_tasks(v)
    except ValueError:
        return f'must be a comma list of distinct tasks from {", ".join(AUX_TASKS)}'
    return None


def _aux_weights(v, a):
    from timm_mixplug.task.aux import parse_aux_tasks
    try:
        parse_aux_tasks(a.aux_tasks or '', v)
    except ValueError:
        return "must give one weight per --aux-tasks entry: '0.5,1', one value for all, or 'crop_pos=0.5'"
    return None


def _compile_backend(v, a):
    from torch._dynamo import list_backends, lookup_backend
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
    from PIL import Image
    return None if v in Image.MODES else 'must be a PIL image mode: RGB, L, ...'


_INTERP = ('bilinear', 'bicubic', 'nearest', 'box', 'hamming', 'lanczos')
_SEED = dict(lo=0, hi=2 ** 32 - 1, integer=True)
_PROB = dict(lo=0, hi=1)
_FRACTION = dict(lo=0, hi=1, hi_open=True)

def _with(rule: Rule, *context: str) -> Rule:
    """``rule`` whose invalid examples need ``context`` on the command line to be read."""
    return dataclasses.replace(rule, context=tuple(context))


_KD = ('--kd-model-name', 'resnet20_cifar')  # the distillation flags are read with a teacher

RANGES: Dict[str, Rule] = {
    # dataset
    'config': _later('reading the config', 'missing.yaml', expect='-c/--config'),
    'data': _later('checking --data-dir (DIR is its deprecated positional form)', 'missing_dir',
                   expect='--data-dir'),
    'data_dir': Rule(_data_dir, 'must be an existing folder', ('missing_dir',), io=True),
    'dataset': _later('creating the dataset', 'mixplug/nosuch'),
    'train_split': _later('creating the dataset (the split must exist)', 'trian'),
    'val_split': _later('creating the dataset (the split must exist)', 'nosuchsplit'),
    'class_map': Rule(_existing_file, 'must be an existing file', ('missing.txt',), io=True),
    'input_img_mode': Rule(_img_mode, 'must be a PIL image mode', ('XYZ',)),
    'train_num_samples': _num(lo=1, integer=True),
    'val_num_samples': _num(lo=1, integer=True),
    'epoch_repeats': _num(lo=0),
    'worker_seeding': _choice(('all', 'part')),
    # model
    'model': _later('creating the model', 'no_such_model'),
    'pretrained_path': Rule(_existing_file, 'must be an existing file', ('missing.safetensors',), io=True),
    'initial_checkpoint': Rule(_existing_file, 'must be an existing file', ('missing.safetensors',), io=True),
    'resume': _later('loading the state (a run folder or its last-state.safetensors)', 'missing_run'),
    'num_classes': _num(lo=1, integer=True),
    # knowledge distillation (timm's --kd-* flags; a teacher needs --kd-model-name)
    'kd_model_name': _later('creating the teacher', 'no_such_model', expect='--kd-model-name'),
    'kd_pretrained_path': _with(Rule(_existing_file, 'must be an existing file', ('missing.safetensors',), io=True),
                                *_KD),
    'kd_distill_type': _parser_choice(),
    'kd_loss_type': _with(_choice(('kl',), bad='mse'), *_KD),
    'distill_loss_weight': _with(_num(lo=0), *_KD),
    'task_loss_weight': _with(_num(lo=0), *_KD),
    'kd_temperature': _with(_num(lo=0, lo_open=True), *_KD),
    'kd_student_feature_dim': _with(_num(lo=1, integer=True), *_KD, '--kd-distill-type', 'feature'),
    'kd_teacher_feature_dim': _with(_num(lo=1, integer=True), *_KD, '--kd-distill-type', 'feature'),
    'kd_token_distill_type': _parser_choice(),
    'gp': _choice(('', 'avg', 'max', 'avgmax', 'catavgmax', 'fast', 'fastavg', 'fastmax', 'fastavgmax',
                   'fastcatavgmax')),
    'img_size': _num(lo=1, integer=True),
    'in_chans': _num(lo=1, integer=True),
    'input_size': _num(lo=1, integer=True, n=3),
    'crop_pct': _num(lo=0, hi=1, lo_open=True),
    'mean': Rule(_channels, 'takes 1 or --in-chans finite values', ('0.5 0.5', 'nan')),
    'std': Rule(_std, 'takes 1 or --in-chans values > 0', ('0', '0.2 0.2')),
    'interpolation': _choice(('',) + _INTERP),
    'batch_size': _num(lo=1, integer=True),
    'validation_batch_size': _num(lo=1, integer=True),
    'grad_accum_steps': _num(lo=1, integer=True),
    'model_kwargs': _later('creating the model', 'no_such_kwarg=1'),
    'device': Rule(_device, 'must be an available torch device', ('foo',), io=True),
    'dist_backend': _choice(('nccl', 'gloo', 'mpi', 'ucc', 'xccl', 'hccl')),
    'amp_dtype': _parser_choice('float8'),
    'local_rank': _num(lo=0, integer=True),
    'head_init_scale': _num(),
    'head_init_bias': _num(),
    'model_dtype': _parser_choice('float8'),
    'torchcompile': Rule(_compile_backend, 'must be a torch.compile backend', ('no_such_backend',)),
    'torchcompile_mode': _choice(('default', 'lite', 'reduce-overhead', 'max-autotune',
                                  'max-autotune-no-cudagraphs')),
    'device_modules': _later('importing the modules', 'no_such_module_xyz'),
    # optimizer
    'opt': _later('creating the optimizer', 'no_such_opt'),
    'opt_eps': _num(lo=0, lo_open=True),
    'opt_betas': _num(lo=0, hi=1, hi_open=True, n='+'),
    'momentum': _num(**_PROB),
    'weight_decay': _num(lo=0),
    'clip_grad': _num(lo=0, lo_open=True),
    'clip_mode': _parser_choice(),
    'layer_decay': _num(lo=0, hi=1, lo_open=True),
    'layer_decay_min_scale': _num(**_PROB),
    'layer_decay_no_opt_scale': _num(**_PROB),
    'opt_kwargs': _later('creating the optimizer', 'no_such_kwarg=1'),
    # learning-rate schedule
    'sched': _choice(('cosine', 'tanh', 'step', 'multistep', 'plateau', 'poly', 'wsd', 'rsqrt', 'constant')),
    'lr': _num(lo=0),
    'lr_base': _num(lo=0, lo_open=True),
    'lr_base_size': _num(lo=1, integer=True),
    'lr_base_scale': _choice(('', 'linear', 'sqrt')),
    'lr_noise': _num(**_PROB, n='+', ordered=True),
    'lr_noise_pct': _num(lo=0),
    'lr_noise_std': _num(lo=0),
    'lr_cycle_mul': _num(lo=0, lo_open=True),
    'lr_cycle_decay': _num(lo=0, lo_open=True),
    'lr_cycle_limit': _num(lo=1, integer=True),
    'lr_k_decay': _num(lo=0, lo_open=True),
    'warmup_lr': _num(lo=0),
    'min_lr': _num(lo=0),
    'epochs': _num(lo=1, integer=True),
    'start_epoch': _num(lo=0, integer=True),
    'decay_milestones': _num(lo=1, integer=True, n='+', ordered=True),
    'decay_epochs': _num(lo=0, lo_open=True),
    'warmup_epochs': _num(lo=0, integer=True),
    'cooldown_epochs': _num(lo=0, integer=True),
    'patience_epochs': _num(lo=0, integer=True),
    'decay_rate': _num(lo=0, hi=1, lo_open=True),
    # augmentation and regularisation
    'train_crop_mode': _choice(('', 'rrc', 'rkrc', 'rkrr')),
    'scale': _num(counted=True, lo=0, hi=1, lo_open=True, n=2, ordered=True),
    'ratio': _num(counted=True, lo=0, lo_open=True, n=2, ordered=True),
    'hflip': _num(**_PROB),
    'vflip': _num(**_PROB),
    'color_jitter': _num(lo=0),
    'color_jitter_prob': _num(**_PROB),
    'grayscale_prob': _num(**_PROB),
    'gaussian_blur_prob': _num(**_PROB),
    'aa': Rule(_aa, 'must be a timm auto-augment spec', ('bogus',)),
    'reprob': _num(**_PROB),
    'remode': _choice(('const', 'rand', 'pixel')),
    'recount': _num(lo=1, integer=True),
    'aug_repeats': Rule(_aug_repeats, 'must be 0 (off) or >= 1', ('-1', '0.5', 'nan')),
    'aug_splits': Rule(_aug_splits, 'must be 0 (off) or >= 2', ('-1', '1')),
    'bce_target_thresh': _num(**_PROB),
    'bce_pos_weight': _num(lo=0, lo_open=True),
    'mixup': _num(lo=0),
    'cutmix': _num(lo=0),
    'cutmix_minmax': _num(counted=True, lo=0, hi=1, lo_open=True, n=2, ordered=True),
    'mixup_prob': _num(**_PROB),
    'mixup_switch_prob': _num(**_PROB),
    'mixup_mode': _choice(('batch', 'pair', 'elem')),
    'mixup_off_epoch': _num(lo=0, integer=True),
    'smoothing': _num(**_FRACTION),
    'train_interpolation': _choice(('', 'random') + _INTERP),
    'drop': _num(**_FRACTION),
    'drop_path': _num(**_FRACTION),
    'drop_connect': _num(**_FRACTION),
    'drop_block': _num(**_FRACTION),
    'bn_momentum': _num(lo=0, hi=1, lo_open=True),
    'bn_eps': _num(lo=0, lo_open=True),
    'dist_bn': _parser_choice(),
    'model_ema_decay': _num(**_PROB),
    # miscellaneous
    'seed': _num(**_SEED),
    'log_interval': _num(lo=1, integer=True),
    'workers': _num(lo=0, integer=True),
    'output': Rule(_output, 'must be a folder (it is created if missing)', ('afile',), io=True),
    'experiment': Rule(_experiment, 'must be a folder name', ('a/b',)),
    'val_interval': _num(lo=1, integer=True),
    'checkpoint_hist': _num(lo=0, integer=True),
    'recovery_interval': _num(lo=0, integer=True),
    'eval_metric': _later('creating the task (the metric must be one it reports)', 'nosuch'),
    # timm_mixplug
    'pad_crop': _num(lo=0, integer=True),
    'mix': _parser_choice(),
    'superclass_map': Rule(_superclass_map, 'must be a built-in hierarchy or a file', ('missing.yaml',), io=True),
    'superclass_mode': _parser_choice(),
    'superclass_alpha_same': _num(lo=0, lo_open=True),
    'superclass_alpha_diff': _num(lo=0, lo_open=True),
    'superclass_choice_same': _num(**_PROB),
    'superclass_choice_diff': _num(**_PROB, n=2, ordered=True),
    'task': _parser_choice(),
    'max_epochs_this_run': _num(lo=1, integer=True),
    'threads': _num(lo=0, integer=True),
    'imb_factor': _num(lo=1),
    'imb_seed': _num(**_SEED),
    # --task aux
    'aux_tasks': Rule(_aux_tasks, 'must be a comma list of auxiliary tasks', ('no_such_task', 'cutout,cutout')),
    'aux_weights': Rule(_aux_weights, 'must give a weight per --aux-tasks entry', ('x', '1,2,3'),
                        ('--aux-tasks', 'cutout,superclass')),
    'aux_hierarchy': Rule(_superclass_map, 'must be a built-in hierarchy or a file', ('missing.yaml',), io=True),
    'aux_random_classes': _num(lo=0, integer=True),
    'aux_random_seed': _num(**_SEED),
    'aux_crop_padding': _num(lo=0, integer=True),
    'aux_cutout_length': _num(lo=0, integer=True),
    'aux_ricap_beta': _num(lo=0, lo_open=True),
    'aux_ricap_border_margin': _num(lo=0, integer=True),
    'aux_seg_grid': _num(lo=1, integer=True),
    # --task dml
    'dml_peers': _later('creating --task dml', 'resnet20_cifar,no_such_model', ('--task', 'dml')),
    'dml_kl_weight': _num(lo=0),
    'dml_temperature': _num(lo=0, lo_open=True),
    'dml_kl_reduction': _parser_choice(),
    # --task glmc
    'glmc_contrast_weight': _num(lo=0),
    'glmc_beta': _num(lo=0, lo_open=True),
    'glmc_reweight_power': _num(lo=0),
    'glmc_resample_power': _num(lo=0),
    'glmc_proj_dim': _num(lo=1, integer=True),
    'glmc_clr_weight': _num(lo=0),
    'glmc_clr_tau': _num(lo=0, lo_open=True),
    # --task nonharmonic
    'nh_views': _num(lo=1, integer=True),
    'nh_temperature': _num(lo=0),
    'nh_uniform': _num(**_PROB),
    'nh_importance': _parser_choice(),
    'nh_score_mode': _parser_choice(),
    'nh_score_dtype': _parser_choice(),
    'nh_score_scale': _num(lo=0, hi=1, lo_open=True),
    'nh_score_batch': _num(lo=0, integer=True),
    'nh_view_padding': _num(lo=0, integer=True),
    'nh_view_cutout': _num(lo=0, integer=True),
}

# Flags with no invalid value: switches (store_true) and free text.
NO_INVALID = {
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
        'model_ema_force_cpu', 'model_ema_warmup', 'pin_mem', 'no_prefetcher', 'evaluate', 'aux_no_flip',
        'aux_crop_preflip', 'glmc_joint_forward', 'glmc_clr', 'nh_device_views', 'nh_view_no_flip',
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


def flag_name(dest: str) -> str:
    return {'config': '-c/--config', 'data': 'DIR (positional)'}.get(dest, '--' + dest.replace('_', '-'))


def _show(value) -> str:
    return ' '.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check_ranges(args, io: bool = False) -> None:
    """Raise ``UsageError`` naming the flag and its valid range for the first value outside it (``io``: the
    checks of files and devices instead of the plain value checks)."""
    for dest, rule in RANGES.items():
        value = getattr(args, dest, None)
        if rule.check is None or rule.io != io or value is None or value == '':
            continue
        problem = rule.check(value, args)
        if problem:
            raise UsageError(f'{flag_name(dest)} {problem}, got {_show(value)}')
