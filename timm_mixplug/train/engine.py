"""The run behind ``train.py``: train (with resume) or evaluate, from parsed flags (``train.config``).

Reproducibility: the model is initialised from ``--seed``; at the start of every epoch the python, numpy
and torch RNGs are re-seeded from (seed, epoch, rank), the distributed sampler uses (seed, epoch) and the
loader workers are restarted, so each epoch's data order, augmentation, mixing and dropout are a function of
(seed, epoch, rank) only: ranks draw different mixing randomness, the same seed gives the same run, and a
resumed run repeats the uninterrupted run exactly (on CPU).
"""
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import yaml
from timm.models import safe_model_name
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    distribute_bn, get_outdir, get_state_dict, init_distributed_device, random_seed, trim_summary, unwrap_model)
from torch.nn.parallel import DistributedDataParallel

from timm_mixplug.errors import UsageError
from timm_mixplug.train import options as timm_options
from timm_mixplug.train.build import Built, amp_setup, build, resolve_lr, user_errors
from timm_mixplug.train.config import args_to_yaml
from timm_mixplug.train.eval_weights import load_eval_weights, run_weights_file, settings_source
from timm_mixplug.train.faults import write_fault_message
from timm_mixplug.train.loop import train_one_epoch, validate
from timm_mixplug.train.ranges import check_ranges
from timm_mixplug.train.resume import (
    changed_settings, check_data_config, data_record, restore_optimizer, restore_plateau, saved_args)
from timm_mixplug.train.run_ema import keep_run_ema
from timm_mixplug.train.run_folder import (
    NonFiniteLoss, Terminated, interrupted_message, lock_run_folder, prepare_run_folder, resume_command)
from timm_mixplug.train.run_settings import parse_train_args
from timm_mixplug.train.sense_checks import check_eval_metric_group
from timm_mixplug.train.timm_checkpoint import load_resume_state, resolve_resume_path
from timm_mixplug.train.wandb_log import start_wandb
from timm_mixplug.utils.batch_images import batch_grid
from timm_mixplug.utils.checkpoint import (
    CheckpointError, atomic_write_bytes, capture_rng, remove_stale_temp, restore_rng,
    save_train_state, save_weights, scheduler_state)
from timm_mixplug.utils.checkpoint_history import CheckpointHistory, RecoveryWriter
from timm_mixplug.utils.random import epoch_seed
from timm_mixplug.utils.summary import plot_summary, write_summary_row

_logger = logging.getLogger('train')

__all__ = ['main', 'run', 'train', 'evaluate', 'RunState']


@dataclass
class RunState:
    """What the epoch loop carries besides the built pieces: optimisation objects, schedule and progress."""
    optimizer: Any
    lr_scheduler: Any
    loss_scaler: Any
    amp_autocast: Callable
    num_epochs: int
    start_epoch: int
    num_updates: int
    decreasing: bool  # the eval metric improves downwards (a loss)
    output_dir: Optional[str]  # None on ranks other than 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None


# ---- the run ----

def _setup_logging(primary: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter('%(message)s'))
        root.addHandler(h)
    root.setLevel(logging.INFO if primary else logging.WARNING)


def _init_distributed(args) -> torch.device:
    try:
        return init_distributed_device(args)
    except AssertionError as e:
        raise UsageError(str(e) or f'cannot use --device {args.device}') from None


def _eval_state(task, ema: bool = False):
    return get_state_dict(task.get_eval_model(ema=ema), unwrap_model)


def _open_resume(args):
    """``--resume``: (state path, sections, meta) of the training state, read before the build so that the data
    can be checked against what the weights were trained on (``args.trained_data``). A bare state dict (weights
    only) is refused: it has no epoch, optimizer or settings to resume."""
    state_path = resolve_resume_path(args.resume)
    sections, meta = load_resume_state(state_path)
    if meta.get('_weights_only'):
        raise CheckpointError(f'--resume {args.resume}: {state_path} holds model weights only (no epoch, optimizer '
                              f'or settings); start from them with --initial-checkpoint {state_path}')
    _check_state_settings(args, state_path, meta)
    args.trained_data = meta.get('data')
    return state_path, sections, meta


def _check_state_settings(args, state_path: str, meta) -> None:
    """The model, task and class count the state was trained with must be this run's (the class count is
    known once the data is read: checked again after the build)."""
    for key in ('model', 'task', 'num_classes'):
        if key in meta and getattr(args, key) is not None and meta[key] != getattr(args, key):
            raise CheckpointError(f'cannot resume {state_path}: it was trained with {key}={meta[key]!r}, '
                                  f'not {getattr(args, key)!r}')


def _load_resume(b: Built, args, optimizer, loss_scaler, opened):
    """Load an opened training state (``_open_resume``) into the (not yet DDP-wrapped) task; returns its meta."""
    state_path, sections, meta = opened
    _check_state_settings(args, state_path, meta)
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
    note = check_data_config(meta.get('data'), b.data_config, b.zero_mean_input, state_path)
    if note and args.rank == 0:
        _logger.info(note)
    meta['_path'] = state_path
    meta['_sections'] = sections
    return meta


def _ema_usable(args, device) -> bool:
    return args.model_ema and not (args.model_ema_force_cpu and device.type != 'cpu')


def evaluate(args) -> Dict[str, float]:
    """``--evaluate`` / ``validate``: metrics of the given weights on ``--val-split`` (writes nothing)."""
    device = _init_distributed(args)
    _setup_logging(args.rank == 0)
    weights = run_weights_file(args.resume)  # RUN/best.safetensors: RUN's settings, these weights, no EMA
    if weights:
        args.resume, args.model_ema = settings_source(weights), False
    opened = _open_resume(args) if args.resume else None
    b = build(args, device, training=False)
    _log_process_notes(args)
    if opened:
        meta = _load_resume(b, args, None, None, opened)
        done = int(meta.get('epoch') or 0)
        _logger.info(f"Loaded {meta['_path']} (after epoch {done - 1}: {done} epoch(s) trained)")
    if weights:
        load_eval_weights(b.task, weights)
        _logger.info(f'Evaluating the weights of {weights} with the settings of {meta["_path"]}')
    amp_autocast, _ = amp_setup(args, device)
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

    device = _init_distributed(args)
    primary = args.rank == 0
    _setup_logging(primary)
    if primary and args.distributed:
        _logger.info(f'Distributed training: {args.world_size} processes, backend '
                     f'{torch.distributed.get_backend()}, device {device}.')
    if args.experiment and not args.resume:  # refuse a used folder before the (slow) build; cleared later
        prepare_run_folder(os.path.join(args.output or './output/train', args.experiment), args, False, clear=False)
    opened = _open_resume(args) if args.resume else None
    keep_run_ema(args, opened)  # a run continued in its folder keeps its EMA: no stale -ema files there
    b = build(args, device, training=True)
    _log_process_notes(args)
    task = b.task

    resolve_lr(args)
    opt_kw = optimizer_kwargs(cfg=args)
    opt_kw.update(args.opt_kwargs or {})
    optimizer = user_errors(create_optimizer_v2, task.get_trainable_module(), **opt_kw,
                             what=f'--opt {args.opt}' + (' with --opt-kwargs' if args.opt_kwargs else ''))
    amp_autocast, loss_scaler = amp_setup(args, device)

    start_epoch, num_updates, best_metric, best_epoch = 0, 0, None, None
    meta = saved = None
    if opened:
        meta = _load_resume(b, args, optimizer, loss_scaler, opened)
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
    check_eval_metric_group(args.eval_metric, b.info.class_counts, b.loader_eval.dataset)  # a shot group: not empty
    decreasing = 'loss' in args.eval_metric

    updates_per_epoch = (len(b.loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = user_errors(
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
        ddp_kw = _ddp_buffer_kwargs(not args.no_ddp_bb)
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
            try:
                output_dir = get_outdir(output_dir)
            except OSError as e:
                raise UsageError(f'cannot create the run folder {output_dir}: {e.strerror or e}; choose another '
                                 f'--output') from None
        args.run_lock = lock_run_folder(output_dir)  # before anything is written or removed there
        if meta is None or os.path.abspath(output_dir) != run_dir:  # checked (again) under the lock, then cleared
            prepare_run_folder(output_dir, args, resuming=False)
        stale = remove_stale_temp(output_dir)
        if stale:
            _logger.warning(f'Removed temporary files of an interrupted write from {output_dir}: {", ".join(stale)}')
        if meta is not None:
            changed = changed_settings(args, saved)
            _logger.info(f'Resuming {meta["_path"]} after epoch {start_epoch - 1} ({start_epoch} epoch(s) trained); '
                         f'settings changed from the '
                         f'checkpoint\'s: {", ".join(changed) if changed else "none"}')
        args.run_dir, args.epochs_done = output_dir, start_epoch
        resolved = args_to_yaml(args)
        # args.yaml describes the weights in the folder: a run continued in its own folder rewrites it only with
        # the first state its (possibly new) settings produce (_train_loop), a new folder gets it now
        args.args_yaml_pending = resolved if meta is not None and os.path.abspath(output_dir) == run_dir else None
        if args.args_yaml_pending is None:
            atomic_write_bytes(os.path.join(output_dir, 'args.yaml'), resolved.encode())
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
        return _train_loop(args, b, device, RunState(
            optimizer=optimizer, lr_scheduler=lr_scheduler, loss_scaler=loss_scaler, amp_autocast=amp_autocast,
            num_epochs=num_epochs, start_epoch=start_epoch, num_updates=num_updates, decreasing=decreasing,
            output_dir=output_dir, best_metric=best_metric, best_epoch=best_epoch))
    finally:
        if primary:
            logging.getLogger().removeHandler(log_file)
            log_file.close()


def _train_loop(args, b: Built, device, s: RunState) -> Dict[str, Any]:
    """Epochs ``s.start_epoch`` .. end (or ``--max-epochs-this-run``): train, evaluate, write the epoch's files."""
    task = b.task
    primary = args.rank == 0
    mixers = [m for m in (b.collate_mixer, b.mixer, b.task_mixer) if m is not None]
    ema_ok = task.has_ema() and _ema_usable(args, device)
    kw = dict(amp_autocast=s.amp_autocast, prefetched=b.prefetched, zero_mean_input=b.zero_mean_input)
    stop_at = s.num_epochs if args.max_epochs_this_run is None else min(s.num_epochs, s.start_epoch + args.max_epochs_this_run)
    eval_metrics: Dict[str, float] = {}

    trained_data = data_record(b.info, b.data_config, b.zero_mean_input)
    settings = yaml.safe_load(args_to_yaml(args))  # the settings that produced each state, kept with it

    def train_state(next_epoch: int, n_updates: int):
        sections = OrderedDict(
            model=unwrap_model(task.get_trainable_module()).state_dict(),
            ema=task.get_trainable_module(ema=True).state_dict() if task.has_ema() else None,
            optimizer=s.optimizer.state_dict(),
            scheduler=scheduler_state(s.lr_scheduler) if s.lr_scheduler is not None else None,
            scaler=s.loss_scaler.state_dict() if s.loss_scaler is not None else None,
            task=task.get_task_state() or None,
            rng=capture_rng())
        smeta = dict(epoch=next_epoch, num_updates=n_updates, best_metric=s.best_metric, best_epoch=s.best_epoch,
                     eval_metric=args.eval_metric, model=args.model, task=args.task, mix=args.mix,
                     num_classes=args.num_classes, world_size=args.world_size, num_epochs=s.num_epochs,
                     sched=args.sched, lr=args.lr, epochs=args.epochs, data=trained_data, args=settings)
        return sections, smeta

    save_images = None
    if args.save_images and primary:

        def _save(epoch, input, target):  # --save-images: the epoch's first batch, after mixing
            if isinstance(input, torch.Tensor) and input.ndim == 4:
                atomic_write_bytes(os.path.join(s.output_dir, f'train-batch-{epoch}.png'), batch_grid(
                    input, target, mean=b.data_config['mean'], std=b.data_config['std'],
                    zero_mean_input=b.zero_mean_input, class_names=b.info.class_names))
        save_images = _save
        if b.spec.mixes_itself:
            _logger.info(f'--save-images: --task {args.task} mixes or augments inside the task, so the PNGs show '
                         f'each epoch\'s first batch as the task receives it, before that')

    history = CheckpointHistory(s.output_dir, args.checkpoint_hist, s.decreasing) if primary else None
    recovery = RecoveryWriter(s.output_dir if primary else None, args.recovery_interval, train_state)
    for epoch in range(s.start_epoch, stop_at):
        random_seed(epoch_seed(args.seed, epoch, args.rank), 0)
        timm_options.set_loader_epoch(b.loader_train, epoch)
        if hasattr(task, 'set_epoch'):  # epoch-dependent objectives (GLMC's re-balancing schedule)
            task.set_epoch(epoch, s.num_epochs)
        mix_on = not (args.mixup_off_epoch and epoch >= args.mixup_off_epoch)
        for m in mixers:
            m.mixup_enabled = mix_on
        t0 = time.perf_counter()
        train_metrics, s.num_updates = train_one_epoch(
            epoch, task, b.loader_train, s.optimizer, args, device, mixer=b.mixer, lr_scheduler=s.lr_scheduler,
            loss_scaler=s.loss_scaler, num_updates=s.num_updates, num_epochs=stop_at, on_update=recovery,
            on_first_batch=save_images, **kw)
        if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(task.get_trainable_module(), args.world_size, args.dist_bn == 'reduce')
            if task.has_ema():
                distribute_bn(task.get_trainable_module(ema=True), args.world_size, args.dist_bn == 'reduce')
        evaluated = (epoch + 1) % args.val_interval == 0 or epoch + 1 == s.num_epochs  # --val-interval, as timm
        eval_metrics = validate(task, b.loader_eval, args, device, **kw) if evaluated else OrderedDict()
        ema_metrics = validate(task, b.loader_eval, args, device, ema=True, **kw) if ema_ok and evaluated else None
        ref = ema_metrics if ema_metrics is not None else eval_metrics
        metric = ref.get(args.eval_metric)
        if s.lr_scheduler is not None:
            s.lr_scheduler.step(epoch + 1, metric)
        improved = metric is not None and np.isfinite(metric) and (s.best_metric is None or (
            metric < s.best_metric if s.decreasing else metric > s.best_metric))
        if improved:
            s.best_metric, s.best_epoch = metric, epoch
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
            csv_path = os.path.join(s.output_dir, 'summary.csv')
            write_summary_row(csv_path, row)
            if getattr(b, 'wandb', None) is not None:
                b.wandb.log(row)
            if not plot_summary(csv_path, os.path.join(s.output_dir, 'summary.png')) and epoch == s.start_epoch:
                _logger.info('summary.png is not drawn: it needs matplotlib (pip install "timm_mixplug[plot]")')
            wmeta = dict(model=args.model, epoch=epoch, task=args.task, mix=args.mix)
            if improved:
                save_weights(os.path.join(s.output_dir, 'best.safetensors'), _eval_state(task), **wmeta)
                if task.has_ema():
                    save_weights(os.path.join(s.output_dir, 'best-ema.safetensors'), _eval_state(task, True), **wmeta)
            history.save(metric, lambda: _eval_state(task, ema_metrics is not None), **wmeta)
            save_weights(os.path.join(s.output_dir, 'last.safetensors'), _eval_state(task), **wmeta)
            if task.has_ema():
                save_weights(os.path.join(s.output_dir, 'last-ema.safetensors'), _eval_state(task, True), **wmeta)
            sections, smeta = train_state(epoch + 1, s.num_updates)
            save_train_state(os.path.join(s.output_dir, 'last-state.safetensors'), sections, smeta)
            if getattr(args, 'args_yaml_pending', None):
                atomic_write_bytes(os.path.join(s.output_dir, 'args.yaml'), args.args_yaml_pending.encode())
                args.args_yaml_pending = None
            recovery.clear()
            args.epochs_done = epoch + 1
    if primary:
        if s.best_metric is not None:
            _logger.info(f'*** Best {args.eval_metric}: {s.best_metric:.4f} (epoch {s.best_epoch}); run folder {s.output_dir}')
        if stop_at < s.num_epochs:
            rest = _without_flag(getattr(args, 'argv', []), '--max-epochs-this-run')
            _logger.info(f'Unfinished: stopped after epoch {stop_at - 1} of 0..{s.num_epochs - 1} '
                         f'(--max-epochs-this-run {args.max_epochs_this_run}); continue with: '
                         f'{resume_command(rest, s.output_dir, args.world_size)}')
    return dict(output_dir=s.output_dir, best_metric=s.best_metric, best_epoch=s.best_epoch, eval_metrics=eval_metrics)


def _without_flag(argv, flag: str):
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + '='):
            out.append(a)
    return out


def _ddp_buffer_kwargs(sync: bool) -> Dict[str, bool]:
    """``--no-ddp-bb`` for DDP: ``forward_sync_buffers`` where torch has it (>= 2.13 deprecates
    ``broadcast_buffers`` with a FutureWarning per rank), else ``broadcast_buffers``."""
    new = 'forward_sync_buffers' in inspect.signature(DistributedDataParallel.__init__).parameters
    return {'forward_sync_buffers' if new else 'broadcast_buffers': sync}


def _log_process_notes(args) -> None:
    """The thread / worker choices, logged once the run is built (an error line comes first and alone)."""
    if args.rank == 0:
        for line in getattr(args, 'process_notes', ()):
            _logger.info(line)


def run(args) -> Dict[str, Any]:
    """``--evaluate`` or training with parsed ``args``. Raises UsageError for bad input."""
    try:
        check_ranges(args, io=True)
        _setup_logging(int(os.environ.get('RANK', '0')) == 0)
        args.process_notes = list(getattr(args, 'notes', ())) + timm_options.apply_process_options(args)
        if args.evaluate:
            return evaluate(args)
        return train(args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv=None) -> int:
    """Command line entry (train.py, ``python -m timm_mixplug.train.engine``): 0 on success, 2 on bad input, 1 when
    the loss became NaN / inf, 130 on Ctrl-C, 143 on SIGTERM; each failure prints one ``train.py: ...`` line."""
    primary = int(os.environ.get('RANK', '0')) == 0  # under torchrun: one error line, from rank 0
    args = None

    def on_sigterm(signum, frame):
        raise Terminated()
    previous = previous_int = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        # SIGINT stops the run with its resume line even where the launching shell ignored it (a background
        # job of a script starts with SIGINT ignored, and python then installs no handler)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = parse_train_args(sys.argv[1:] if argv is None else argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume command lines
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
    except OSError as e:  # a full disk, a deleted run folder...: the previous files are intact
        message = write_fault_message(e, getattr(args, 'run_dir', None))
        if message is None:
            raise
        if primary:
            print(f'train.py: error: {message}', file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        if primary:
            print(interrupted_message(args, argv, 'terminated (SIGTERM)' if term else 'interrupted'), file=sys.stderr)
        return 143 if term else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
