"""The epoch loop of a training run: train, evaluate, and write the epoch's files (summary row, weights, state)."""
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import yaml
from timm.utils import distribute_bn, get_state_dict, random_seed, unwrap_model

from timm_mixplug.train import options as timm_options
from timm_mixplug.train.build import Built
from timm_mixplug.train.config import args_to_yaml
from timm_mixplug.train.loop import train_one_epoch, validate
from timm_mixplug.train.resume import data_record
from timm_mixplug.train.run_folder import RunProgress, resume_command, without_flag
from timm_mixplug.utils.batch_images import batch_grid
from timm_mixplug.utils.checkpoint import (
    atomic_write_bytes, capture_rng, save_train_state, save_weights, scheduler_state)
from timm_mixplug.utils.checkpoint_history import CheckpointHistory, RecoveryWriter
from timm_mixplug.utils.random import epoch_seed
from timm_mixplug.utils.summary import plot_summary, write_summary_row

_logger = logging.getLogger('train')

__all__ = ['RunState', 'run_epochs', 'eval_state', 'ema_usable']


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
    progress: RunProgress  # the run folder (None on ranks other than 0) and the epochs it holds
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    wandb: Any = None

    @property
    def output_dir(self) -> Optional[str]:
        return self.progress.path


def eval_state(task, ema: bool = False):
    """The eval model's (or EMA's) plain weights, as timm saves them."""
    return get_state_dict(task.get_eval_model(ema=ema), unwrap_model)


def ema_usable(args, device) -> bool:
    return args.model_ema and not (args.model_ema_force_cpu and device.type != 'cpu')


def _state_writer(args, b: Built, s: RunState) -> Callable:
    """``(next_epoch, num_updates) -> (sections, meta)`` of the resumable training state."""
    task = b.task
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
        meta = dict(epoch=next_epoch, num_updates=n_updates, best_metric=s.best_metric, best_epoch=s.best_epoch,
                    eval_metric=args.eval_metric, model=args.model, task=args.task, mix=args.mix,
                    num_classes=args.num_classes, world_size=args.world_size, num_epochs=s.num_epochs,
                    sched=args.sched, lr=args.lr, epochs=args.epochs, data=trained_data, args=settings)
        return sections, meta
    return train_state


def _image_saver(args, b: Built, s: RunState) -> Optional[Callable]:
    """``--save-images``: writes each epoch's first batch, after mixing, as a labelled PNG grid (rank 0)."""
    if not args.save_images or args.rank != 0:
        return None

    def save(epoch, input, target):
        if isinstance(input, torch.Tensor) and input.ndim == 4:
            atomic_write_bytes(os.path.join(s.output_dir, f'train-batch-{epoch}.png'), batch_grid(
                input, target, mean=b.data_config['mean'], std=b.data_config['std'],
                zero_mean_input=b.zero_mean_input, class_names=b.info.class_names))
    if b.spec.mixes_itself:
        _logger.info(f'--save-images: --task {args.task} mixes or augments inside the task, so the PNGs show '
                     f'each epoch\'s first batch as the task receives it, before that')
    return save


def _evaluate_epoch(args, b: Built, device, s: RunState, epoch: int, kw: Dict[str, Any]):
    """(eval metrics, EMA metrics or None, the eval metric's value, improved) after ``epoch``."""
    task = b.task
    evaluated = (epoch + 1) % args.val_interval == 0 or epoch + 1 == s.num_epochs  # --val-interval, as timm
    eval_metrics = validate(task, b.loader_eval, args, device, **kw) if evaluated else OrderedDict()
    ema_metrics = validate(task, b.loader_eval, args, device, ema=True, **kw) \
        if task.has_ema() and ema_usable(args, device) and evaluated else None
    metric = (ema_metrics if ema_metrics is not None else eval_metrics).get(args.eval_metric)
    if s.lr_scheduler is not None:
        s.lr_scheduler.step(epoch + 1, metric)
    improved = metric is not None and np.isfinite(metric) and (s.best_metric is None or (
        metric < s.best_metric if s.decreasing else metric > s.best_metric))
    if improved:
        s.best_metric, s.best_epoch = metric, epoch
    return eval_metrics, ema_metrics, metric, improved


def _summary_row(epoch: int, train_metrics, eval_metrics, ema_metrics, epoch_time: float) -> Dict[str, Any]:
    row = OrderedDict(epoch=epoch)
    row.update((f'train_{k}', v) for k, v in train_metrics.items() if k not in ('samples_per_sec', 'lr'))
    row.update((f'eval_{k}', v) for k, v in eval_metrics.items())
    if ema_metrics is not None:
        row.update((f'ema_eval_{k}', v) for k, v in ema_metrics.items())
    row['lr'] = train_metrics['lr']
    row['samples_per_sec'] = train_metrics['samples_per_sec']
    row['epoch_time'] = epoch_time
    return row


def _write_summary(s: RunState, row: Dict[str, Any], first: bool) -> None:
    csv_path = os.path.join(s.output_dir, 'summary.csv')
    write_summary_row(csv_path, row)
    if s.wandb is not None:
        s.wandb.log(row)
    if not plot_summary(csv_path, os.path.join(s.output_dir, 'summary.png')) and first:
        _logger.info('summary.png is not drawn: it needs matplotlib (pip install "timm_mixplug[plot]")')


def _write_weights(args, task, s: RunState, history: CheckpointHistory, epoch: int, metric, improved: bool,
                   ema_evaluated: bool) -> None:
    """best / last weights (and their EMA twins) and the ``--checkpoint-hist`` history."""
    meta = dict(model=args.model, epoch=epoch, task=args.task, mix=args.mix)
    if improved:
        save_weights(os.path.join(s.output_dir, 'best.safetensors'), eval_state(task), **meta)
        if task.has_ema():
            save_weights(os.path.join(s.output_dir, 'best-ema.safetensors'), eval_state(task, True), **meta)
    history.save(metric, lambda: eval_state(task, ema_evaluated), **meta)
    save_weights(os.path.join(s.output_dir, 'last.safetensors'), eval_state(task), **meta)
    if task.has_ema():
        save_weights(os.path.join(s.output_dir, 'last-ema.safetensors'), eval_state(task, True), **meta)


def _write_state(s: RunState, train_state: Callable, epoch: int) -> None:
    """The resumable state after ``epoch``; a continued run's args.yaml is rewritten with its first state."""
    sections, meta = train_state(epoch + 1, s.num_updates)
    save_train_state(os.path.join(s.output_dir, 'last-state.safetensors'), sections, meta)
    if s.progress.args_yaml_pending:
        atomic_write_bytes(os.path.join(s.output_dir, 'args.yaml'), s.progress.args_yaml_pending.encode())
        s.progress.args_yaml_pending = None
    s.progress.epochs_done = epoch + 1


def _log_epoch(epoch: int, train_metrics, eval_metrics, ema_metrics, epoch_time: float) -> None:
    _logger.info(f'Epoch {epoch}: train_loss {train_metrics["loss"]:.4f}  '
                 + '  '.join(f'eval_{k} {v:.4f}' for k, v in eval_metrics.items())
                 + (f'  ema_top1 {ema_metrics.get("top1", float("nan")):.2f}' if ema_metrics else '')
                 + f'  {train_metrics["samples_per_sec"]:.1f} samples/s  ({epoch_time:.1f}s)')


def _start_epoch(args, b: Built, s: RunState, epoch: int, mixers) -> None:
    """Per-epoch seeding (a function of seed, epoch and rank), sampler epoch, task schedule, mixing switch."""
    random_seed(epoch_seed(args.seed, epoch, args.rank), 0)
    timm_options.set_loader_epoch(b.loader_train, epoch)
    if hasattr(b.task, 'set_epoch'):  # epoch-dependent objectives (GLMC's re-balancing schedule)
        b.task.set_epoch(epoch, s.num_epochs)
    mix_on = not (args.mixup_off_epoch and epoch >= args.mixup_off_epoch)
    for m in mixers:
        m.mixup_enabled = mix_on


def _log_end(args, s: RunState, stop_at: int) -> None:
    if s.best_metric is not None:
        _logger.info(f'*** Best {args.eval_metric}: {s.best_metric:.4f} (epoch {s.best_epoch}); '
                     f'run folder {s.output_dir}')
    if stop_at < s.num_epochs:
        rest = without_flag(getattr(args, 'argv', []), '--max-epochs-this-run')
        _logger.info(f'Unfinished: stopped after epoch {stop_at - 1} of 0..{s.num_epochs - 1} '
                     f'(--max-epochs-this-run {args.max_epochs_this_run}); continue with: '
                     f'{resume_command(rest, s.output_dir, args.world_size)}')


def run_epochs(args, b: Built, device, s: RunState) -> Dict[str, Any]:
    """Epochs ``s.start_epoch`` .. end (or ``--max-epochs-this-run``): train, evaluate, write the epoch's files."""
    task, primary = b.task, args.rank == 0
    mixers = [m for m in (b.collate_mixer, b.mixer, b.task_mixer) if m is not None]
    kw = dict(amp_autocast=s.amp_autocast, prefetched=b.prefetched, zero_mean_input=b.zero_mean_input)
    stop_at = s.num_epochs if args.max_epochs_this_run is None else \
        min(s.num_epochs, s.start_epoch + args.max_epochs_this_run)
    train_state = _state_writer(args, b, s)
    save_images = _image_saver(args, b, s)
    history = CheckpointHistory(s.output_dir, args.checkpoint_hist, s.decreasing) if primary else None
    recovery = RecoveryWriter(s.output_dir if primary else None, args.recovery_interval, train_state)
    eval_metrics: Dict[str, float] = {}
    for epoch in range(s.start_epoch, stop_at):
        _start_epoch(args, b, s, epoch, mixers)
        t0 = time.perf_counter()
        train_metrics, s.num_updates = train_one_epoch(
            epoch, task, b.loader_train, s.optimizer, args, device, mixer=b.mixer, lr_scheduler=s.lr_scheduler,
            loss_scaler=s.loss_scaler, num_updates=s.num_updates, num_epochs=stop_at, on_update=recovery,
            on_first_batch=save_images, **kw)
        if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(task.get_trainable_module(), args.world_size, args.dist_bn == 'reduce')
            if task.has_ema():
                distribute_bn(task.get_trainable_module(ema=True), args.world_size, args.dist_bn == 'reduce')
        eval_metrics, ema_metrics, metric, improved = _evaluate_epoch(args, b, device, s, epoch, kw)
        epoch_time = time.perf_counter() - t0
        if primary:
            _log_epoch(epoch, train_metrics, eval_metrics, ema_metrics, epoch_time)
            _write_summary(s, _summary_row(epoch, train_metrics, eval_metrics, ema_metrics, epoch_time),
                           epoch == s.start_epoch)
            _write_weights(args, task, s, history, epoch, metric, improved, ema_metrics is not None)
            _write_state(s, train_state, epoch)
            recovery.clear()
    if primary:
        _log_end(args, s, stop_at)
    return dict(output_dir=s.output_dir, best_metric=s.best_metric, best_epoch=s.best_epoch, eval_metrics=eval_metrics)
