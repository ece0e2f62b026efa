"""Everything a run builds from its flags before the first step: data, model(s), mixer, loss, task, loaders.

Nothing here writes a file; bad input raises ``UsageError``.
"""
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Optional

import timm
import torch
import torch.nn as nn
from timm.data import ImageDataset, create_loader, resolve_data_config
from timm.data.loader import fast_collate
from timm.layers import convert_sync_batchnorm
from timm.utils import NativeScaler, random_seed
from torch.utils.data import default_collate

from timm_mixplug.data.datasets import apply_pad_crop
from timm_mixplug.data.mixing import create_mixup, get_mixer_spec, set_dataset_partners
from timm_mixplug.data.mixing.placement import COLLATE, describe_path, mixing_path
from timm_mixplug.data.seeded import SeededItems
from timm_mixplug.data.wrappers import ExcludeUnreadable
from timm_mixplug.errors import UsageError
from timm_mixplug.task.distill import set_student_normalization
from timm_mixplug.train import options as timm_options
from timm_mixplug.train.data import create_datasets, is_longtail
from timm_mixplug.train.pretrained_cache import weights_unavailable
from timm_mixplug.train.sense_checks import eval_geometry, pad_crop_note
from timm_mixplug.train.specs import DataInfo, TaskSpec, get_mix_spec, get_task_spec
from timm_mixplug.train.weight_files import check_pretrained_loaded, load_strict
from timm_mixplug.utils.precision import emulated_bf16_cpu

_logger = logging.getLogger('train')

__all__ = ['Built', 'build', 'create_timm_model', 'create_teacher', 'create_mixer', 'user_errors', 'amp_setup', 'resolve_lr']


def user_errors(fn, *a, what: str = '', **kw):
    """Call ``fn``; configuration errors (ValueError, KeyError, AssertionError...) become one UsageError line."""
    try:
        return fn(*a, **kw)
    except UsageError:
        raise
    except (ValueError, KeyError, AssertionError, FileNotFoundError, RuntimeError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f'{what}: {msg}' if what else msg) from None


def _create_pretrained(name: str, what: str, kw: Dict[str, Any], flags=('--pretrained', '--model',
                                                                      '--pretrained-path')) -> nn.Module:
    """``timm.create_model(pretrained=True)`` with the Hub client's per-retry lines silenced: weights that are
    neither in the local cache nor downloadable give one line naming where they were looked for, at once when
    the cache and the network can tell before the download is tried (``pretrained_cache``)."""
    cfg = timm.models.get_pretrained_cfg(name)
    source = getattr(cfg, 'hf_hub_id', None) or getattr(cfg, 'url', None) or name

    def unavailable(why: str) -> UsageError:
        return UsageError(f'{flags[0]}: the weights of {flags[1]} {name} ({source}) are not in the local cache and '
                          f'could not be downloaded ({why}): download them where the internet is reachable (they '
                          f'are cached for later runs), or give the file with {flags[2]}')
    why = weights_unavailable(name, kw.get('pretrained_cfg_overlay'))
    if why:
        raise unavailable(why)
    logs = [logging.getLogger('huggingface_hub'), logging.getLogger('timm')]  # timm: 'Loading pretrained ...'
    levels = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.ERROR)
    try:
        model = user_errors(timm.create_model, name, what=what, **kw)
    except UsageError as e:
        if 'cache' not in str(e) and 'connect' not in str(e).lower():
            raise
        raise unavailable('the download failed') from None
    finally:
        for lg, level in zip(logs, levels):
            lg.setLevel(level)
    _logger.info(f'Loaded the pretrained weights of {name} ({source})')
    return model


def _in_chans(args) -> int:
    if args.in_chans is not None:
        return args.in_chans
    return args.input_size[0] if args.input_size is not None else 3


def create_teacher(args, num_classes: int) -> nn.Module:
    """The distillation teacher ``--kd-model-name`` with ``--kd-pretrained-path`` weights (ours or timm's,
    loaded strictly), else its pretrained weights from timm's hub cache (upstream train.py's teacher)."""
    name = args.kd_model_name
    if not timm.is_model(name):
        raise UsageError(f'unknown --kd-model-name {name!r} (see timm.list_models())')
    what = f'cannot create the teacher --kd-model-name {name}'
    kw = dict(num_classes=num_classes, in_chans=_in_chans(args))
    if not args.kd_pretrained_path:
        return _create_pretrained(name, what, dict(kw, pretrained=True),
                                  flags=('--kd-model-name', '--kd-model-name', '--kd-pretrained-path'))
    teacher = user_errors(timm.create_model, name, what=what, **kw)
    load_strict(teacher, args.kd_pretrained_path, '--kd-pretrained-path', f'--kd-model-name {name}', num_classes)
    return teacher


def create_timm_model(args, num_classes: int, model_name: Optional[str] = None, **overrides) -> nn.Module:
    """``--model`` (or ``model_name``, e.g. a DML peer) with the user's timm options; ``--initial-checkpoint``
    weights loaded (no pickle)."""
    kw = dict(pretrained=args.pretrained, num_classes=num_classes, drop_rate=args.drop,
              drop_path_rate=args.drop_path, drop_block_rate=args.drop_block, global_pool=args.gp,
              bn_momentum=args.bn_momentum, bn_eps=args.bn_eps, in_chans=_in_chans(args))
    if args.pretrained_path:
        kw['pretrained_cfg_overlay'] = dict(file=args.pretrained_path)
    kw.update(args.model_kwargs or {})
    kw.update(overrides)
    name = model_name or args.model
    if not timm.is_model(name):
        raise UsageError(f'unknown --model {name!r} (see timm.list_models())')
    what = f'cannot create --model {name}' + (' with --model-kwargs' if args.model_kwargs else '')
    if kw['pretrained'] and not args.pretrained_path:
        model = _create_pretrained(name, what, kw)
    elif kw['pretrained']:  # --pretrained-path: every parameter from the file but a classifier timm resets
        cfg = timm.models.get_pretrained_cfg(name)
        head = getattr(cfg, 'classifier', None) if cfg is not None and cfg.num_classes != num_classes else None
        model = check_pretrained_loaded(lambda pretrained: user_errors(
            timm.create_model, name, what=what, **dict(kw, pretrained=pretrained)), args.pretrained_path,
            f'--model {name}', [head] if isinstance(head, str) else list(head or ()))
    else:
        model = user_errors(timm.create_model, name, what=what, **kw)
    if args.initial_checkpoint:
        load_strict(model, args.initial_checkpoint, '--initial-checkpoint', f'--model {name}', num_classes)
    model = timm_options.apply_model_options(model, args)  # after the weights, as timm
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    return model


def create_mixer(args, info: DataInfo, data_config: Dict[str, Any], collate: bool = False):
    """The ``--mix`` mixer (device-side, or a FastCollateMixup-style collate with ``collate=True``)."""
    mix_spec = get_mix_spec(args.mix)
    if mix_spec is None:
        return None
    kw = user_errors(mix_spec.mixer_kwargs, args, info, what=f'--mix {args.mix}')
    if collate and get_mixer_spec(args.mix).collate_needs_norm:
        kw.update(mean=tuple(data_config['mean']), std=tuple(data_config['std']))
    return user_errors(create_mixup, args.mix, info.num_classes, label_smoothing=args.smoothing,
                       collate=collate, what=f'--mix {args.mix}', **kw)


def amp_setup(args, device):
    """``--amp [--amp-dtype]``: (autocast context factory, loss scaler or None), as timm's train.py."""
    if not args.amp:
        return nullcontext, None
    dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
    if dtype == torch.bfloat16 and emulated_bf16_cpu(device) and args.rank == 0:
        _logger.warning('--amp-dtype bfloat16: this CPU has no native bf16 (AVX512-BF16 or AMX), so autocast '
                        'emulates it, several times slower than fp32 (10x for resnet20_cifar on an AVX2 CPU); '
                        'drop --amp for speed')
    autocast = partial(torch.autocast, device_type=device.type, dtype=dtype)
    scaler = None
    if dtype == torch.float16 and device.type == 'cuda':
        scaler = NativeScaler(device=device.type)
    return autocast, scaler


def resolve_lr(args) -> None:
    """``--lr`` from ``--lr-base`` scaled by the global batch over ``--lr-base-size`` when not given (timm's rule)."""
    if args.lr is not None:
        return
    global_batch = args.batch_size * args.world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    if not args.lr_base_scale:
        on = args.opt.lower()
        args.lr_base_scale = 'sqrt' if any(o in on for o in ('ada', 'lamb')) else 'linear'
    if args.lr_base_scale == 'sqrt':
        ratio = ratio ** 0.5
    args.lr = args.lr_base * ratio


@dataclass
class Built:
    """Everything :func:`build` creates for a run."""
    spec: TaskSpec
    info: DataInfo
    data_config: Dict[str, Any]
    task: Any  # the timm.task.TrainingTask
    prefetched: bool  # the loaders are timm's PrefetchLoader (batches arrive normalised on the device)
    zero_mean_input: bool  # the mixer zero-means every input image (BC+), at train and eval time
    collate_mixer: Optional[Callable]  # mixes in the training collate
    mixer: Optional[Callable]  # mixes on the device before the task
    task_mixer: Optional[Callable]  # handed to a task that mixes itself
    loader_eval: Any
    loader_train: Any = None
    wandb: Any = None


def _loaders(args, spec: TaskSpec, info: DataInfo, data_config, ds_train, ds_eval, collate_mixer, device,
             use_prefetcher: bool):
    """(train loader or None, eval loader): timm's ``create_loader`` with the run's augmentation flags."""
    common = dict(mean=data_config['mean'], std=data_config['std'], num_workers=args.workers,
                  distributed=args.distributed, pin_memory=args.pin_mem, device=device,
                  use_prefetcher=use_prefetcher, persistent_workers=False)
    loader_eval = user_errors(
        create_loader, spec.wrap_dataset(ds_eval, args, info, False), input_size=data_config['input_size'],
        batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'],
        crop_mode=data_config.get('crop_mode'), what='eval loader', **common, **timm_options.loader_kwargs(args, False))
    if ds_train is None:
        return None, loader_eval
    ds_train = timm_options.wrap_train_dataset(spec.wrap_dataset(ds_train, args, info, True), args)
    if not isinstance(ds_train, torch.utils.data.IterableDataset):  # augmentation apart from mixing
        ds_train = SeededItems(ds_train, seed=args.seed, rank=args.rank)
    collate = spec.create_collate(args, info, collate_mixer or (fast_collate if use_prefetcher else default_collate))
    interp = args.train_interpolation
    if args.no_aug or not interp:
        interp = data_config['interpolation']
    loader = user_errors(
        create_loader, ds_train, input_size=data_config['input_size'], batch_size=args.batch_size,
        is_training=True, no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        re_split=args.resplit, train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio,
        hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob or 0.,
        gaussian_blur_prob=args.gaussian_blur_prob or 0., auto_augment=args.aa, interpolation=interp,
        collate_fn=collate, what='train loader', **common, **timm_options.loader_kwargs(args, True))
    timm_options.apply_repeat_aug(loader, args)
    pad_crop = args.pad_crop and apply_pad_crop(loader.dataset, args.pad_crop, tuple(data_config['input_size'][-2:]),
                                                data_config['mean'], fit=eval_geometry(data_config))
    if args.pad_crop and not pad_crop:
        raise UsageError(f'--pad-crop: no timm training transform to replace on the --task {args.task} dataset')
    args.process_notes += [n for n in [pad_crop_note(pad_crop or None, loader.dataset)] if n]
    sampler = getattr(loader, 'sampler', None)
    if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        sampler.seed = args.seed  # same shuffle on all ranks, changes with --seed
    if len(loader) == 0:
        raise UsageError('the training loader yields no full batch; lower --batch-size')
    return loader, loader_eval


def build(args, device, training: bool) -> Built:
    """Create data, model(s), mixer, criterion, task and loaders; no files are written here."""

    spec = get_task_spec(args.task)
    # the training split also gives the per-class counts for long-tailed evaluation in --evaluate
    ds_train, ds_eval, info = create_datasets(args, train=training or is_longtail(args))
    args.num_classes = info.num_classes
    if training:
        per_rank = len(ds_train) // args.world_size
        if per_rank < args.batch_size:
            raise UsageError(f'the training split has {len(ds_train)} images ({per_rank} per process), fewer than '
                             f'one --batch-size of {args.batch_size}; lower the batch size')
    else:
        ds_train = None

    random_seed(args.seed, 0)  # model init: identical on all ranks
    model = user_errors(spec.create_model, args, info, partial(create_timm_model, args, info.num_classes),
                        what=f'--task {args.task}')
    first = model[0] if isinstance(model, (list, tuple, nn.ModuleList)) else model
    data_config = resolve_data_config(vars(args), model=first, verbose=False)  # logged after the checks, in one line
    args.process_notes = list(getattr(args, 'process_notes', None) or []) + ['Data config: ' + ', '.join(
        f'{k} {tuple(v) if isinstance(v, list) else v}' for k, v in data_config.items())]

    use_prefetcher = not args.no_prefetcher and spec.use_prefetcher is not False
    mixer_spec = get_mixer_spec(args.mix) if args.mix != 'none' else None
    mix_path = None
    if training and mixer_spec is not None and not spec.mixes_itself:  # one start-up line says where it mixes
        mix_path = mixing_path(mixer_spec, device, use_prefetcher)
        args.process_notes.append(describe_path(args.mix, mix_path, device, use_prefetcher))
    collate_mix = mix_path == COLLATE
    collate_mixer = create_mixer(args, info, data_config, collate=True) if collate_mix else None
    device_mixer = None if collate_mix else create_mixer(args, info, data_config, collate=False)
    task = user_errors(spec.create_task, args, model, timm_options.create_train_loss(args),
                       device_mixer if spec.mixes_itself else None, info, device, what=f'--task {args.task}')
    if getattr(args, 'kd_model_name', None):  # the teacher's input is renormalised from the data pipeline's
        set_student_normalization(task, data_config['mean'], data_config['std'])
    task.to(device=device, dtype=timm_options.model_dtype(args))
    if args.channels_last:
        task.get_trainable_module().to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn and training:
        if device.type == 'cuda':
            convert_sync_batchnorm(task.get_trainable_module())
        elif args.rank == 0:
            _logger.warning('--sync-bn needs CUDA; ignored on this device.')
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                       device=torch.device('cpu') if args.model_ema_force_cpu else None)
    timm_options.compile_task(task, args)
    if isinstance(ds_eval, ImageDataset) and not ds_eval.load_bytes:  # unreadable files: excluded, counted
        ds_eval = ExcludeUnreadable(ds_eval)
    loader_train, loader_eval = _loaders(args, spec, info, data_config, ds_train, ds_eval, collate_mixer, device,
                                         use_prefetcher)
    if loader_train is not None:  # BC / BC+: partners from the training set where a batch holds one class
        set_dataset_partners(collate_mixer or device_mixer, loader_train.dataset, mean=data_config['mean'],
                             std=data_config['std'])
    return Built(spec=spec, info=info, data_config=data_config, task=task, prefetched=use_prefetcher,
                 zero_mean_input=mixer_spec is not None and mixer_spec.zero_mean_input,
                 collate_mixer=collate_mixer, mixer=None if spec.mixes_itself else device_mixer,
                 task_mixer=device_mixer if spec.mixes_itself else None,
                 loader_eval=loader_eval, loader_train=loader_train)
