"""Training / evaluation engine behind ``train.py``, built from timm's library pieces.

Reproducibility: the model is initialised from ``--seed``; at the start of every epoch the python, numpy
and torch RNGs are re-seeded from (seed, epoch, rank), the distributed sampler uses (seed, epoch) and the
loader workers are restarted, so each epoch's data order, augmentation, mixing and dropout are a function of
(seed, epoch, rank) only: ranks draw different mixing randomness, the same seed gives the same run, and a
resumed run repeats the uninterrupted run exactly (on CPU).
"""
import csv
import logging
import os
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Dict

import numpy as np
import torch
import torch.nn as nn
import yaml

from timm_mixplug.train import options as timm_options
from timm_mixplug.train.cli import args_to_yaml
from timm_mixplug.errors import UsageError
from timm_mixplug.train.run_folder import NonFiniteLoss
from timm_mixplug.train.specs.base import DataInfo, TaskSpec, get_task_spec

_logger = logging.getLogger('train')

__all__ = ['run', 'train_one_epoch', 'validate', 'create_mixer', 'create_criterion', 'epoch_seed',
           'seed_everything', 'plot_summary', 'COLLATE_EXACT']

# Mixers whose collate equals the device mixer up to rounding (BC+ emits float pixels, PrefetchLoader normalises).
COLLATE_EXACT = ('mixup', 'cutmix', 'bc', 'superclass', 'bcplus')


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 32-bit seed that differs for every (seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _user_errors(fn, *a, what: str = '', **kw):
    """Call ``fn``; configuration errors (ValueError, KeyError, AssertionError...) become one UsageError line."""
    try:
        return fn(*a, **kw)
    except UsageError:
        raise
    except (ValueError, KeyError, AssertionError, FileNotFoundError, RuntimeError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f'{what}: {msg}' if what else msg) from None


def create_timm_model(args, num_classes: int, **overrides) -> nn.Module:
    """``--model`` with the user's timm options; ``--initial-checkpoint`` weights loaded (no pickle)."""
    import timm
    from timm_mixplug.utils.checkpoint import CheckpointError, load_weights
    in_chans = 3
    if args.in_chans is not None:
        in_chans = args.in_chans
    elif args.input_size is not None:
        in_chans = args.input_size[0]
    kw = dict(pretrained=args.pretrained, num_classes=num_classes, drop_rate=args.drop,
              drop_path_rate=args.drop_path, drop_block_rate=args.drop_block, global_pool=args.gp,
              bn_momentum=args.bn_momentum, bn_eps=args.bn_eps, in_chans=in_chans)
    if args.pretrained_path:
        kw['pretrained_cfg_overlay'] = dict(file=args.pretrained_path)
    kw.update(args.model_kwargs or {})
    kw.update(overrides)
    if not timm.is_model(args.model):
        raise UsageError(f'unknown --model {args.model!r} (see timm.list_models())')
    what = f'cannot create --model {args.model}' + (' with --model-kwargs' if args.model_kwargs else '')
    model = _user_errors(timm.create_model, args.model, what=what, **kw)
    if args.initial_checkpoint:
        sd = load_weights(args.initial_checkpoint)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f'--initial-checkpoint {args.initial_checkpoint} does not match --model '
                                  f'{args.model} with {num_classes} classes: {str(e).splitlines()[0]}') from None
    model = timm_options.apply_model_options(model, args)  # after the weights, as timm
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    return model


def create_mixer(args, info: DataInfo, data_config: Dict[str, Any], collate: bool = False):
    """The ``--mix`` mixer (device-side, or a FastCollateMixup-style collate with ``collate=True``)."""
    if args.mix == 'none':
        return None
    from timm_mixplug.data.mixing.base import create_mixup
    kw: Dict[str, Any] = {}
    if args.mix in ('mixup', 'cutmix'):
        kw = dict(mixup_alpha=args.mixup if args.mixup > 0 else (1.0 if args.mix == 'mixup' else 0.0),
                  cutmix_alpha=args.cutmix if args.cutmix > 0 else (1.0 if args.mix == 'cutmix' else 0.0),
                  cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob, switch_prob=args.mixup_switch_prob,
                  mode=args.mixup_mode)
    elif args.mix == 'superclass':
        from timm_mixplug.data.hierarchy import load_hierarchy
        hierarchy = _user_errors(load_hierarchy, args.superclass_map, num_classes=info.num_classes,
                                 class_names=info.class_names, what='--superclass-map')
        kw = dict(hierarchy=hierarchy, mode=args.superclass_mode, alpha_same=args.superclass_alpha_same,
                  alpha_diff=args.superclass_alpha_diff, choice_same=args.superclass_choice_same,
                  choice_diff=tuple(args.superclass_choice_diff))
    elif args.mix == 'bcplus' and collate:
        kw = dict(mean=tuple(data_config['mean']), std=tuple(data_config['std']))
    return _user_errors(create_mixup, args.mix, info.num_classes, label_smoothing=args.smoothing,
                        collate=collate, what=f'--mix {args.mix}', **kw)


def create_criterion(args) -> nn.Module:
    """The training loss (``timm_options.create_train_loss``: BC's KL for bc/bcplus, timm's losses otherwise)."""
    return timm_options.create_train_loss(args)


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _batch_size(input, target) -> int:
    for t in (target, input):
        if isinstance(t, torch.Tensor):
            return int(t.shape[0])
        if isinstance(t, (list, tuple)) and t and isinstance(t[0], torch.Tensor):
            return int(t[0].shape[0])
        if isinstance(t, dict) and t:
            return _batch_size(None, next(iter(t.values())))
    return 0


def _prep_input(input, args, zero_mean_input: bool):
    if isinstance(input, torch.Tensor) and input.is_floating_point():
        if args.model_dtype:
            input = input.to(getattr(torch, args.model_dtype))
        if zero_mean_input:
            from timm_mixplug.data.mixing.bc import zero_mean
            input = zero_mean(input)
        if args.channels_last and input.ndim == 4:
            input = input.contiguous(memory_format=torch.channels_last)
    return input


def _fmt_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


def train_one_epoch(epoch: int, task, loader, optimizer, args, device, *, mixer=None, lr_scheduler=None,
                    loss_scaler=None, amp_autocast=nullcontext, num_updates: int = 0, num_epochs: int = 1,
                    prefetched: bool = True, zero_mean_input: bool = False, on_update=None):
    """One epoch; returns (metrics, num_updates). metrics: loss (+ task extras) averaged over all samples of
    all ranks, samples_per_sec (all ranks), lr. ``on_update(epoch, num_updates, batch_idx)`` after each update."""
    from timm.utils import dispatch_clip_grad
    task.train()
    accum = args.grad_accum_steps
    n_batches = len(loader)
    last_idx = n_batches - 1
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    extra_sums: Dict[str, torch.Tensor] = OrderedDict()
    n_local = 0
    primary = args.rank == 0
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    clip_params = None
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
    for batch_idx, (input, target) in enumerate(loader):
        if not prefetched:
            input, target = _to_device(input, device), _to_device(target, device)
        input = _prep_input(input, args, zero_mean_input)
        if mixer is not None:
            input, target = mixer(input, target)
        need_update = (batch_idx + 1) % accum == 0 or batch_idx == last_idx
        sync_ctx = task.no_sync() if (args.distributed and not need_update) else nullcontext()
        with sync_ctx:
            with amp_autocast():
                out = task(input, target)
            loss = out['loss']
            scaled = loss / accum if accum > 1 else loss
            if args.clip_grad is not None and clip_params is None:
                clip_params = list(task.get_clip_parameters(exclude_head='agc' in args.clip_mode))
            if loss_scaler is not None:
                loss_scaler(scaled, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=clip_params, need_update=need_update)
            else:
                scaled.backward()
                if need_update:
                    if args.clip_grad is not None:
                        dispatch_clip_grad(clip_params, value=args.clip_grad, mode=args.clip_mode)
                    optimizer.step()
        if need_update:
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            task.update_ema(step=num_updates)
            if lr_scheduler is not None:
                lr_scheduler.step_update(num_updates=num_updates)
            if on_update is not None:
                on_update(epoch, num_updates, batch_idx)
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), batch_idx, bad_step)
        bs = int(out['output'].shape[0]) if isinstance(out.get('output'), torch.Tensor) else _batch_size(input, target)
        n_local += bs
        loss_sum += loss.detach().to(torch.float64) * bs
        for k, v in out.items():
            if k not in ('loss', 'output') and isinstance(v, torch.Tensor) and v.numel() == 1:
                if k not in extra_sums:
                    extra_sums[k] = torch.zeros((), dtype=torch.float64, device=device)
                extra_sums[k] += v.detach().to(torch.float64).reshape(()) * bs
        if primary and (batch_idx % args.log_interval == 0 or batch_idx == last_idx):
            if not args.distributed and bad_step.item() >= 0:  # stop early (ranks stop together at the end)
                raise NonFiniteLoss(epoch, int(bad_step.item()))
            elapsed = time.perf_counter() - start
            step_time = elapsed / (batch_idx + 1)
            lr = _mean_lr(optimizer)
            rate = n_local * args.world_size / max(elapsed, 1e-9)
            eta_epoch = step_time * (last_idx - batch_idx)
            eta_run = eta_epoch + step_time * n_batches * (num_epochs - epoch - 1)
            _logger.info(
                f'Train: {epoch} [{batch_idx:>4d}/{n_batches} ({100. * (batch_idx + 1) / n_batches:>3.0f}%)]  '
                f'Loss: {loss.item():#.4g} ({(loss_sum / max(n_local, 1)).item():#.4g})  LR: {lr:.3e}  '
                f'{rate:>7.1f} samples/s  ETA: {_fmt_eta(eta_epoch)} (run {_fmt_eta(eta_run)})')
    elapsed = time.perf_counter() - start
    totals = torch.stack([loss_sum, torch.tensor(float(n_local), dtype=torch.float64, device=device),
                          (bad_step >= 0).to(torch.float64), *extra_sums.values()])
    if args.distributed:
        torch.distributed.all_reduce(totals)
    if totals[2].item() > 0 or not np.isfinite(totals[0].item()):
        step = int(bad_step.item())
        raise NonFiniteLoss(epoch, step if step >= 0 else None)
    n_total = max(totals[1].item(), 1.0)
    metrics = OrderedDict(loss=totals[0].item() / n_total)
    for i, k in enumerate(extra_sums):
        metrics[k] = totals[3 + i].item() / n_total
    metrics['samples_per_sec'] = totals[1].item() / max(elapsed, 1e-9)
    metrics['lr'] = _mean_lr(optimizer)
    return metrics, num_updates


def _mean_lr(optimizer) -> float:
    lrs = [g['lr'] for g in optimizer.param_groups]
    return sum(lrs) / len(lrs)


@torch.no_grad()
def validate(task, loader, args, device, *, ema: bool = False, amp_autocast=nullcontext, prefetched: bool = True,
             zero_mean_input: bool = False) -> Dict[str, float]:
    """Evaluate ``task``'s eval model (or EMA) with the task's evaluator; metrics over all ranks."""
    from timm.task import evaluation_sample_limit
    task.eval()
    model = task.get_eval_model(ema=ema)
    if isinstance(model, nn.Module):
        model.eval()
    evaluator = task.create_evaluator(max_samples=evaluation_sample_limit(loader))
    eval_forward = getattr(task, 'eval_forward', None)
    for input, target in loader:
        if not prefetched:
            input, target = _to_device(input, device), _to_device(target, device)
        input = _prep_input(input, args, zero_mean_input)
        with amp_autocast():
            output = eval_forward(input, ema=ema) if eval_forward is not None else model(input)
        evaluator.update(output, target)
    return OrderedDict(evaluator.compute(distributed=args.distributed))


# ---- summary.csv and plot ----

def write_summary_row(path: str, row: Dict[str, Any]) -> None:
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    header = None
    if not new:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
    if header is not None and header != list(row.keys()):  # columns changed (e.g. resumed with --model-ema)
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
        rows.append(row)
        keys = list(OrderedDict.fromkeys([k for r in rows for k in r.keys()]))
        tmp = path + '.tmp'
        with open(tmp, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
        return
    with open(path, 'a', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(row.keys()))
        if new:
            w.writeheader()
        w.writerow(row)


def plot_summary(csv_path: str, png_path: str) -> bool:
    """Loss / accuracy / lr curves from summary.csv as a PNG; False if matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(csv_path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False

    def col(k):
        return [float(r[k]) if r.get(k) not in (None, '') else float('nan') for r in rows]

    ep = col('epoch')
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k in ('train_loss', 'eval_loss', 'ema_eval_loss'):
        if k in rows[0]:
            axes[0].plot(ep, col(k), marker='.', label=k)
    axes[0].set_title('loss')
    for k in ('eval_top1', 'eval_top5', 'ema_eval_top1'):
        if k in rows[0]:
            axes[1].plot(ep, col(k), marker='.', label=k)
    axes[1].set_title('accuracy (%)')
    if 'lr' in rows[0]:
        axes[2].plot(ep, col('lr'), marker='.', label='lr')
    axes[2].set_title('learning rate')
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = png_path + '.tmp.png'
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True


# ---- the run ----

def _setup_logging(primary: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter('%(message)s'))
        root.addHandler(h)
    root.setLevel(logging.INFO if primary else logging.WARNING)


def _init_distributed(args) -> torch.device:
    from timm.utils import init_distributed_device
    try:
        return init_distributed_device(args)
    except AssertionError as e:
        raise UsageError(str(e) or f'cannot use --device {args.device}') from None


def _amp(args, device):
    if not args.amp:
        return nullcontext, None
    dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
    autocast = partial(torch.autocast, device_type=device.type, dtype=dtype)
    scaler = None
    if dtype == torch.float16 and device.type == 'cuda':
        from timm.utils import NativeScaler
        scaler = NativeScaler(device=device.type)
    return autocast, scaler


def _resolve_lr(args) -> None:
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


class _Built:
    """Everything ``_build`` creates (one namespace instead of a long tuple)."""


def _build(args, device, training: bool) -> _Built:
    """Create data, model(s), mixer, criterion and task; no files are written here."""
    from timm.data import create_loader, resolve_data_config
    from timm.data.loader import fast_collate
    from torch.utils.data import default_collate
    from timm_mixplug.data.datasets import apply_pad_crop, create_datasets

    b = _Built()
    spec: TaskSpec = get_task_spec(args.task)
    _user_errors(spec.check_args, args, what=f'--task {args.task}')
    # the training split also gives the per-class counts for long-tailed evaluation in --evaluate
    ds_train, ds_eval, info = create_datasets(args, train=training or (getattr(args, 'imb_factor', None) or 0) > 1)
    args.num_classes = info.num_classes
    if training:
        per_rank = len(ds_train) // args.world_size
        if per_rank < args.batch_size:
            raise UsageError(f'the training split has {len(ds_train)} images ({per_rank} per process), fewer than '
                             f'one --batch-size of {args.batch_size}; lower the batch size')
    b.spec, b.info = spec, info

    seed_everything(args.seed)  # model init: identical on all ranks
    model = _user_errors(spec.create_model, args, info, partial(create_timm_model, args, info.num_classes),
                         what=f'--task {args.task}')
    first = model[0] if isinstance(model, (list, tuple, nn.ModuleList)) else model
    data_config = resolve_data_config(vars(args), model=first, verbose=args.rank == 0)
    b.data_config = data_config

    use_prefetcher = not args.no_prefetcher and spec.use_prefetcher is not False
    b.prefetched = use_prefetcher
    b.zero_mean_input = args.mix == 'bcplus'
    collate_mix = (training and use_prefetcher and not spec.mixes_itself and args.mix in COLLATE_EXACT)
    b.collate_mixer = create_mixer(args, info, data_config, collate=True) if collate_mix else None
    device_mixer = None if collate_mix else create_mixer(args, info, data_config, collate=False)
    b.mixer = None if spec.mixes_itself else device_mixer  # what the engine applies on the device
    criterion = create_criterion(args)
    task = _user_errors(spec.create_task, args, model, criterion, device_mixer if spec.mixes_itself else None,
                        info, device, what=f'--task {args.task}')
    task.to(device=device, dtype=timm_options.model_dtype(args))
    b.task_mixer = device_mixer if spec.mixes_itself else None
    if args.channels_last:
        task.get_trainable_module().to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn and training:
        if device.type == 'cuda':
            from timm.layers import convert_sync_batchnorm
            convert_sync_batchnorm(task.get_trainable_module())
        elif args.rank == 0:
            _logger.warning('--sync-bn needs CUDA; ignored on this device.')
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                       device=torch.device('cpu') if args.model_ema_force_cpu else None)
    timm_options.compile_task(task, args)
    b.task = task

    workers = args.workers
    eval_bs = args.validation_batch_size or args.batch_size
    ds_eval = spec.wrap_dataset(ds_eval, args, info, False)
    b.loader_eval = _user_errors(
        create_loader, ds_eval, input_size=data_config['input_size'], batch_size=eval_bs, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        num_workers=workers, distributed=args.distributed, crop_pct=data_config['crop_pct'],
        crop_mode=data_config.get('crop_mode'), pin_memory=args.pin_mem, device=device,
        use_prefetcher=use_prefetcher, persistent_workers=False, what='eval loader',
        **timm_options.loader_kwargs(args, False))
    b.loader_train = None
    if training:
        ds_train = timm_options.wrap_train_dataset(spec.wrap_dataset(ds_train, args, info, True), args)
        default = fast_collate if use_prefetcher else default_collate
        collate = spec.create_collate(args, info, b.collate_mixer or default)
        interp = args.train_interpolation
        if args.no_aug or not interp:
            interp = data_config['interpolation']
        b.loader_train = _user_errors(
            create_loader, ds_train, input_size=data_config['input_size'], batch_size=args.batch_size,
            is_training=True, no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
            re_split=args.resplit, train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio,
            hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
            color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob or 0.,
            gaussian_blur_prob=args.gaussian_blur_prob or 0., auto_augment=args.aa, interpolation=interp,
            mean=data_config['mean'], std=data_config['std'], num_workers=workers,
            distributed=args.distributed, collate_fn=collate, pin_memory=args.pin_mem, device=device,
            use_prefetcher=use_prefetcher, persistent_workers=False, what='train loader',
            **timm_options.loader_kwargs(args, True))
        timm_options.apply_repeat_aug(b.loader_train, args)
        if args.pad_crop and not apply_pad_crop(b.loader_train.dataset, args.pad_crop,
                                                tuple(data_config['input_size'][-2:]), data_config['mean']):
            raise UsageError(f'--pad-crop: no timm training transform to replace on the --task {args.task} dataset')
        sampler = getattr(b.loader_train, 'sampler', None)
        if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
            sampler.seed = args.seed  # same shuffle on all ranks, changes with --seed
        if len(b.loader_train) == 0:
            raise UsageError('the training loader yields no full batch; lower --batch-size')
    return b


def _eval_state(task, ema: bool = False):
    from timm.utils import get_state_dict, unwrap_model
    return get_state_dict(task.get_eval_model(ema=ema), unwrap_model)


def _load_resume(b: _Built, args, optimizer, loss_scaler, path: str):
    """Load a training state into the (not yet DDP-wrapped) task; returns its meta."""
    from timm.utils import unwrap_model
    from timm_mixplug.utils.checkpoint import CheckpointError, load_resume_state, resolve_resume_path, restore_rng
    from timm_mixplug.train.resume import restore_optimizer
    state_path = resolve_resume_path(path)
    sections, meta = load_resume_state(state_path)
    for key in ('model', 'task', 'num_classes'):
        if key in meta and meta[key] != getattr(args, key):
            raise CheckpointError(f'cannot resume {state_path}: it was trained with {key}={meta[key]!r}, '
                                  f'not {getattr(args, key)!r}')
    try:
        unwrap_model(b.task.get_trainable_module()).load_state_dict(sections['model'], strict=True)
        if b.task.has_ema():
            if 'ema' in sections:
                b.task.get_trainable_module(ema=True).load_state_dict(sections['ema'], strict=True)
            elif args.rank == 0:
                _logger.warning('The checkpoint has no EMA weights; EMA restarts from the resumed model.')
        if sections.get('task'):
            b.task.load_task_state(sections['task'])
        if optimizer is not None and 'optimizer' in sections and not args.no_resume_opt:
            meta['_saved_lrs'] = restore_optimizer(optimizer, sections['optimizer'])
        if loss_scaler is not None and sections.get('scaler'):
            loss_scaler.load_state_dict(sections['scaler'])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f'cannot resume from {state_path}: {str(e).splitlines()[0]}') from None
    if 'rng' in sections:
        restore_rng(sections['rng'])
    meta['_path'] = state_path
    meta['_sections'] = sections
    return meta


def _ema_usable(args, device) -> bool:
    return args.model_ema and not (args.model_ema_force_cpu and device.type != 'cpu')


def evaluate(args) -> Dict[str, float]:
    """``--evaluate`` / ``validate``: metrics of the given weights on ``--val-split`` (writes nothing)."""
    device = _init_distributed(args)
    _setup_logging(args.rank == 0)
    _report_ignored(args)
    b = _build(args, device, training=False)
    if args.resume:
        meta = _load_resume(b, args, None, None, args.resume)
        _logger.info(f"Loaded {meta['_path']} (epoch {meta.get('epoch')})")
    amp_autocast, _ = _amp(args, device)
    kw = dict(amp_autocast=amp_autocast, prefetched=b.prefetched, zero_mean_input=b.zero_mean_input)
    metrics = validate(b.task, b.loader_eval, args, device, **kw)
    if b.task.has_ema() and _ema_usable(args, device):
        for k, v in validate(b.task, b.loader_eval, args, device, ema=True, **kw).items():
            metrics['ema_' + k] = v
    if args.rank == 0:
        _logger.info('Eval: ' + '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
    return metrics


def train(args) -> Dict[str, Any]:
    """Train with the resolved ``args``; returns the final summary (best metric, output dir...)."""
    from timm.models import safe_model_name
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs
    from timm.utils import get_outdir, trim_summary, unwrap_model
    from timm_mixplug.utils.checkpoint import atomic_write_bytes, remove_stale_temp
    from timm_mixplug.train.resume import changed_settings, restore_plateau, saved_args
    from timm_mixplug.train.run_folder import prepare_run_folder

    device = _init_distributed(args)
    primary = args.rank == 0
    _setup_logging(primary)
    _report_ignored(args)
    if primary and args.distributed:
        _logger.info(f'Distributed training: {args.world_size} processes, backend '
                     f'{torch.distributed.get_backend()}, device {device}.')
    if args.experiment and not args.resume:  # refuse a used folder before the (slow) build; cleared later
        prepare_run_folder(os.path.join(args.output or './output/train', args.experiment), args, False, clear=False)
    b = _build(args, device, training=True)
    task = b.task

    _resolve_lr(args)
    opt_kw = optimizer_kwargs(cfg=args)
    opt_kw.update(args.opt_kwargs or {})
    optimizer = _user_errors(create_optimizer_v2, task.get_trainable_module(), **opt_kw,
                             what=f'--opt {args.opt}' + (' with --opt-kwargs' if args.opt_kwargs else ''))
    amp_autocast, loss_scaler = _amp(args, device)

    start_epoch, num_updates, best_metric, best_epoch = 0, 0, None, None
    meta = saved = None
    if args.resume:
        meta = _load_resume(b, args, optimizer, loss_scaler, args.resume)
        start_epoch = int(meta['epoch'])
        best_metric, best_epoch = meta.get('best_metric'), meta.get('best_epoch')
        saved = saved_args(meta['_path'], meta)
    if args.start_epoch is not None:
        start_epoch = args.start_epoch

    evaluator_cls = type(task.create_evaluator())
    names = getattr(evaluator_cls, 'metric_names', None)
    if names and args.eval_metric not in names:
        raise UsageError(f'--eval-metric {args.eval_metric!r} is not reported by --task {args.task} '
                         f'(reports: {", ".join(names)})')
    decreasing = 'loss' in args.eval_metric

    updates_per_epoch = (len(b.loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = _user_errors(
        create_scheduler_v2, optimizer, **scheduler_kwargs(args, decreasing_metric=decreasing),
        updates_per_epoch=updates_per_epoch, what=f'--sched {args.sched}')
    num_updates = start_epoch * updates_per_epoch
    if meta is not None and lr_scheduler is not None and saved.get('sched') == args.sched == 'plateau' \
            and '_saved_lrs' in meta:  # the only timm scheduler with history: restore it
        restore_plateau(lr_scheduler, optimizer, meta['_sections'].get('scheduler'), meta['_saved_lrs'],
                        args.lr / float(saved.get('lr') or args.lr))
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
    if start_epoch >= num_epochs:
        raise UsageError(f'nothing to do: the run already finished {start_epoch} of {num_epochs} epochs')

    if args.distributed:
        ddp_kw = dict(broadcast_buffers=not args.no_ddp_bb)
        task.prepare_distributed(device_ids=[device.index] if device.type == 'cuda' else None, **ddp_kw)

    # ---- everything validated: now create the run folder ----
    output_dir = None
    if primary:
        run_dir = os.path.dirname(os.path.abspath(meta['_path'])) if meta is not None else None
        if meta is not None and not args.experiment and meta.get('_format') != 'timm':  # continue our run folder
            output_dir = run_dir
        else:
            exp_name = args.experiment or '-'.join([
                datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model),
                str(b.data_config['input_size'][-1])])
            output_dir = os.path.join(args.output or './output/train', exp_name)
            prepare_run_folder(output_dir, args, resuming=os.path.abspath(output_dir) == run_dir)
            output_dir = get_outdir(output_dir)
        stale = remove_stale_temp(output_dir)
        if stale:
            _logger.warning(f'Removed temporary files of an interrupted write from {output_dir}: {", ".join(stale)}')
        if meta is not None:
            changed = changed_settings(args, saved)
            _logger.info(f'Resuming {meta["_path"]} after epoch {start_epoch - 1}; settings changed from the '
                         f'checkpoint\'s: {", ".join(changed) if changed else "none"}')
        args.run_dir, args.epochs_done = output_dir, start_epoch
        resolved = args_to_yaml(args)
        atomic_write_bytes(os.path.join(output_dir, 'args.yaml'), resolved.encode())
        from timm_mixplug.train.wandb_log import start_wandb
        b.wandb = start_wandb(args, os.path.basename(output_dir), yaml.safe_load(resolved))
        trim_summary(os.path.join(output_dir, 'summary.csv'), start_epoch)
        log_file = logging.FileHandler(os.path.join(output_dir, 'train.log'))
        log_file.setFormatter(logging.Formatter('%(message)s'))
        logging.getLogger().addHandler(log_file)
        n_params = sum(p.numel() for p in unwrap_model(task.get_trainable_module()).parameters())
        _logger.info(f'Model {args.model} ({n_params / 1e6:.2f}M params), task {args.task}, mix {args.mix}, '
                     f'{args.num_classes} classes, input {tuple(b.data_config["input_size"])}, '
                     f'{len(b.loader_train)} batches/epoch of {args.batch_size} x {args.world_size} process(es), '
                     f'lr {args.lr:.4g}; epochs {start_epoch}..{num_epochs - 1}; output {output_dir}')

    try:
        return _train_loop(args, b, device, optimizer, lr_scheduler, loss_scaler, amp_autocast, num_epochs,
                           start_epoch, num_updates, best_metric, best_epoch, decreasing, output_dir)
    finally:
        if primary:
            logging.getLogger().removeHandler(log_file)
            log_file.close()


def _train_loop(args, b, device, optimizer, lr_scheduler, loss_scaler, amp_autocast, num_epochs, start_epoch,
                num_updates, best_metric, best_epoch, decreasing, output_dir):
    from timm.utils import distribute_bn, unwrap_model
    from timm_mixplug.utils.checkpoint import capture_rng, save_train_state, save_weights, scheduler_state
    from timm_mixplug.utils.checkpoint_history import CheckpointHistory, RecoveryWriter
    task = b.task
    primary = args.rank == 0
    mixers = [m for m in (b.collate_mixer, b.mixer, b.task_mixer) if m is not None]
    ema_ok = task.has_ema() and _ema_usable(args, device)
    kw = dict(amp_autocast=amp_autocast, prefetched=b.prefetched, zero_mean_input=b.zero_mean_input)
    stop_at = num_epochs if args.max_epochs_this_run is None else min(num_epochs, start_epoch + args.max_epochs_this_run)
    eval_metrics: Dict[str, float] = {}

    def train_state(next_epoch: int, n_updates: int):
        sections = OrderedDict(
            model=unwrap_model(task.get_trainable_module()).state_dict(),
            ema=task.get_trainable_module(ema=True).state_dict() if task.has_ema() else None,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler_state(lr_scheduler) if lr_scheduler is not None else None,
            scaler=loss_scaler.state_dict() if loss_scaler is not None else None,
            task=task.get_task_state() or None,
            rng=capture_rng())
        smeta = dict(epoch=next_epoch, num_updates=n_updates, best_metric=best_metric, best_epoch=best_epoch,
                     eval_metric=args.eval_metric, model=args.model, task=args.task, mix=args.mix,
                     num_classes=args.num_classes, world_size=args.world_size, num_epochs=num_epochs,
                     sched=args.sched, lr=args.lr, epochs=args.epochs)
        return sections, smeta

    history = CheckpointHistory(output_dir, args.checkpoint_hist, decreasing) if primary else None
    recovery = RecoveryWriter(output_dir if primary else None, args.recovery_interval, train_state)
    for epoch in range(start_epoch, stop_at):
        seed_everything(epoch_seed(args.seed, epoch, args.rank))
        timm_options.set_loader_epoch(b.loader_train, epoch)
        if hasattr(task, 'set_epoch'):  # epoch-dependent objectives (GLMC's re-balancing schedule)
            task.set_epoch(epoch, num_epochs)
        mix_on = not (args.mixup_off_epoch and epoch >= args.mixup_off_epoch)
        for m in mixers:
            m.mixup_enabled = mix_on
        t0 = time.perf_counter()
        train_metrics, num_updates = train_one_epoch(
            epoch, task, b.loader_train, optimizer, args, device, mixer=b.mixer, lr_scheduler=lr_scheduler,
            loss_scaler=loss_scaler, num_updates=num_updates, num_epochs=stop_at, on_update=recovery, **kw)
        if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(task.get_trainable_module(), args.world_size, args.dist_bn == 'reduce')
            if task.has_ema():
                distribute_bn(task.get_trainable_module(ema=True), args.world_size, args.dist_bn == 'reduce')
        evaluated = (epoch + 1) % args.val_interval == 0 or epoch + 1 == num_epochs  # --val-interval, as timm
        eval_metrics = validate(task, b.loader_eval, args, device, **kw) if evaluated else OrderedDict()
        ema_metrics = validate(task, b.loader_eval, args, device, ema=True, **kw) if ema_ok and evaluated else None
        ref = ema_metrics if ema_metrics is not None else eval_metrics
        metric = ref.get(args.eval_metric)
        if lr_scheduler is not None:
            lr_scheduler.step(epoch + 1, metric)
        improved = metric is not None and np.isfinite(metric) and (best_metric is None or (
            metric < best_metric if decreasing else metric > best_metric))
        if improved:
            best_metric, best_epoch = metric, epoch
        epoch_time = time.perf_counter() - t0
        if primary:
            _logger.info(f'Epoch {epoch}: train_loss {train_metrics["loss"]:.4f}  '
                         + '  '.join(f'eval_{k} {v:.4f}' for k, v in eval_metrics.items())
                         + (f'  ema_top1 {ema_metrics.get("top1", float("nan")):.2f}' if ema_metrics else '')
                         + f'  {train_metrics["samples_per_sec"]:.1f} samples/s  ({epoch_time:.1f}s)')
            row = OrderedDict(epoch=epoch)
            row.update((f'train_{k}', v) for k, v in train_metrics.items() if k not in ('samples_per_sec', 'lr'))
            row.update((f'eval_{k}', v) for k, v in eval_metrics.items())
            if ema_metrics is not None:
                row.update((f'ema_eval_{k}', v) for k, v in ema_metrics.items())
            row['lr'] = train_metrics['lr']
            row['samples_per_sec'] = train_metrics['samples_per_sec']
            row['epoch_time'] = epoch_time
            csv_path = os.path.join(output_dir, 'summary.csv')
            write_summary_row(csv_path, row)
            if getattr(b, 'wandb', None) is not None:
                b.wandb.log(row)
            plot_summary(csv_path, os.path.join(output_dir, 'summary.png'))
            wmeta = dict(model=args.model, epoch=epoch, task=args.task, mix=args.mix)
            if improved:
                save_weights(os.path.join(output_dir, 'best.safetensors'), _eval_state(task), **wmeta)
                if task.has_ema():
                    save_weights(os.path.join(output_dir, 'best-ema.safetensors'), _eval_state(task, True), **wmeta)
            history.save(metric, lambda: _eval_state(task, ema_metrics is not None), **wmeta)
            save_weights(os.path.join(output_dir, 'last.safetensors'), _eval_state(task), **wmeta)
            if task.has_ema():
                save_weights(os.path.join(output_dir, 'last-ema.safetensors'), _eval_state(task, True), **wmeta)
            sections, smeta = train_state(epoch + 1, num_updates)
            save_train_state(os.path.join(output_dir, 'last-state.safetensors'), sections, smeta)
            recovery.clear()
            args.epochs_done = epoch + 1
    if primary:
        if best_metric is not None:
            _logger.info(f'*** Best {args.eval_metric}: {best_metric:.4f} (epoch {best_epoch}); run folder {output_dir}')
    return dict(output_dir=output_dir, best_metric=best_metric, best_epoch=best_epoch, eval_metrics=eval_metrics)


def _report_ignored(args) -> None:
    if args.rank == 0 and getattr(args, 'ignored', None):
        _logger.warning('Ignoring timm train.py options not implemented by timm_mixplug: '
                        + ', '.join(f'{k}={v}' for k, v in args.ignored.items()))


def run(args) -> Dict[str, Any]:
    """``--evaluate`` or training with parsed ``args``. Raises UsageError for bad input."""
    from timm_mixplug.train.ranges import check_ranges
    try:
        check_ranges(args, io=True)
        timm_options.apply_process_options(args)
        if args.evaluate:
            return evaluate(args)
        return train(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv=None) -> int:
    """Command line entry (train.py, ``python -m timm_mixplug.train.engine``): 0 on success, 2 on bad input, 1 when
    the loss became NaN / inf, 130 on Ctrl-C; each failure prints one ``train.py: ...`` line."""
    import sys
    from timm_mixplug.train.cli import parse_args
    from timm_mixplug.train.run_folder import interrupted_message
    primary = int(os.environ.get('RANK', '0')) == 0  # under torchrun: one error line, from rank 0
    args = None
    try:
        args = parse_args(argv)
        if args.evaluate and args.resume:  # the weights' own settings
            from timm_mixplug.train.resume import apply_run_settings
            args = apply_run_settings(sys.argv[1:] if argv is None else argv, args)
        run(args)
    except UsageError as e:
        if primary:
            print(f'train.py: error: {e}', file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        if primary:
            state = os.path.join(getattr(args, 'run_dir', '') or '', 'last-state.safetensors')
            kept = f'; the last good state is {state}' if os.path.isfile(state) else ''
            print(f'train.py: error: {e}{kept}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if primary:
            print(interrupted_message(args, argv), file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
