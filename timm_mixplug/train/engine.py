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
from typing import Any, Dict, Optional

import torch
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import init_distributed_device, unwrap_model
from torch.nn.parallel import DistributedDataParallel

from timm_mixplug.errors import UsageError
from timm_mixplug.train import options as timm_options
from timm_mixplug.train.build import Built, amp_setup, build, resolve_lr, user_errors
from timm_mixplug.train.epochs import RunState, ema_usable, run_epochs
from timm_mixplug.train.eval_weights import load_eval_weights, run_weights_file, settings_source
from timm_mixplug.train.faults import write_fault_message
from timm_mixplug.train.loop import validate
from timm_mixplug.train.ranges import check_ranges
from timm_mixplug.train.resume import check_data_config, restore_optimizer, restore_plateau, saved_args
from timm_mixplug.train.run_ema import keep_run_ema
from timm_mixplug.train.run_folder import (
    NonFiniteLoss, RunProgress, Terminated, interrupted_message, prepare_run_folder)
from timm_mixplug.train.run_settings import parse_train_args
from timm_mixplug.train.run_start import add_log_file, open_run_folder
from timm_mixplug.train.sense_checks import check_eval_metric_group
from timm_mixplug.train.timm_checkpoint import load_resume_state, resolve_resume_path
from timm_mixplug.utils.checkpoint import CheckpointError, restore_rng

_logger = logging.getLogger('train')

__all__ = ['main', 'run', 'train', 'evaluate']


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
    if b.task.has_ema() and ema_usable(args, device):
        for k, v in validate(b.task, b.loader_eval, args, device, ema=True, **kw).items():
            metrics['ema_' + k] = v
    if args.rank == 0:
        _logger.info('Eval: ' + '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
    return metrics


def _create_optimizer(args, task):
    resolve_lr(args)
    opt_kw = optimizer_kwargs(cfg=args)
    opt_kw.update(args.opt_kwargs or {})
    return user_errors(create_optimizer_v2, task.get_trainable_module(), **opt_kw,
                       what=f'--opt {args.opt}' + (' with --opt-kwargs' if args.opt_kwargs else ''))


def _eval_metric_direction(args, task) -> bool:
    """Refuse an ``--eval-metric`` the task does not report; True when it improves downwards (a loss)."""
    names = getattr(type(task.create_evaluator()), 'metric_names', None)
    if names and args.eval_metric not in names:
        raise UsageError(f'--eval-metric {args.eval_metric!r} is not reported by --task {args.task} '
                         f'(reports: {", ".join(names)})')
    return 'loss' in args.eval_metric


def _create_schedule(args, b: Built, optimizer, meta, saved, start_epoch: int, decreasing: bool):
    """(lr scheduler, number of epochs, updates done): timm's scheduler from the command line, stepped to the
    resumed epoch (a ``plateau`` scheduler's history restored)."""
    updates_per_epoch = (len(b.loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = user_errors(
        create_scheduler_v2, optimizer, **scheduler_kwargs(args, decreasing_metric=decreasing),
        updates_per_epoch=updates_per_epoch, what=f'--sched {args.sched}')
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
    return lr_scheduler, num_epochs, start_epoch * updates_per_epoch


def _resume_point(args, b: Built, optimizer, loss_scaler, opened):
    """(state meta or None, its settings or None, start epoch, best metric, best epoch)."""
    meta = saved = None
    start_epoch, best_metric, best_epoch = 0, None, None
    if opened:
        meta = _load_resume(b, args, optimizer, loss_scaler, opened)
        start_epoch = int(meta['epoch'])
        best_metric, best_epoch = meta.get('best_metric'), meta.get('best_epoch')
        saved = saved_args(meta['_path'], meta)
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
    return meta, saved, start_epoch, best_metric, best_epoch


def train(args, progress: RunProgress) -> Dict[str, Any]:
    """Train with the resolved ``args``; ``progress`` records the run folder and the epochs done (for the exit
    lines). Returns the final summary (best metric, output dir...)."""
    device = _init_distributed(args)
    primary = args.rank == 0
    _setup_logging(primary)
    if primary and args.distributed:
        _logger.info(f'Distributed training: {args.world_size} processes, backend '
                     f'{torch.distributed.get_backend()}, device {device}.')
    if args.experiment and not args.resume:  # refuse a used folder before the (slow) build; cleared later
        prepare_run_folder(os.path.join(args.output or './output/train', args.experiment), args, False, clear=False)
    opened = _open_resume(args) if args.resume else None
    keep_run_ema(args, opened)
    b = build(args, device, training=True)
    check_eval_metric_group(args.eval_metric, b.info.class_counts, b.loader_eval.dataset)
    _log_process_notes(args)
    optimizer = _create_optimizer(args, b.task)
    amp_autocast, loss_scaler = amp_setup(args, device)
    meta, saved, start_epoch, best_metric, best_epoch = _resume_point(args, b, optimizer, loss_scaler, opened)
    decreasing = _eval_metric_direction(args, b.task)
    lr_scheduler, num_epochs, num_updates = _create_schedule(args, b, optimizer, meta, saved, start_epoch, decreasing)
    if args.distributed:
        b.task.prepare_distributed(device_ids=[device.index] if device.type == 'cuda' else None,
                                   **_ddp_buffer_kwargs(not args.no_ddp_bb))
    # ---- everything validated: now create the run folder ----
    progress.world_size = args.world_size
    state = RunState(optimizer=optimizer, lr_scheduler=lr_scheduler, loss_scaler=loss_scaler,
                     amp_autocast=amp_autocast, num_epochs=num_epochs, start_epoch=start_epoch,
                     num_updates=num_updates, decreasing=decreasing, progress=progress, best_metric=best_metric,
                     best_epoch=best_epoch)
    if not primary:
        return run_epochs(args, b, device, state)
    state.wandb = open_run_folder(args, b, meta, saved, start_epoch, progress)
    log_file = add_log_file(args, b, progress.path, start_epoch, num_epochs)
    try:
        return run_epochs(args, b, device, state)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


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


def _launch_rank() -> int:
    """This process's rank as torchrun sets it (RANK; 0 for a single process), known before any parsing."""
    return int(os.environ.get('RANK', '0'))


def run(args, progress: Optional[RunProgress] = None) -> Dict[str, Any]:
    """``--evaluate`` or training with parsed ``args`` (``progress``: where the run writes, for the caller's
    exit lines). Raises UsageError for bad input."""
    try:
        check_ranges(args, io=True)
        _setup_logging(_launch_rank() == 0)
        args.process_notes = list(getattr(args, 'notes', ())) + timm_options.apply_process_options(args)
        if args.evaluate:
            return evaluate(args)
        return train(args, progress or RunProgress())
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


RANK_WAIT_S = 60.0  # how long a rank other than 0 waits for torchrun to stop it once rank 0 has reported


def _report(line: str) -> None:
    """Print a failure line once under torchrun. Rank 0 prints it. Another rank, which fails the same way (bad
    flags, a non-finite loss), waits for torchrun to stop it when rank 0 exits: exiting first, it would make
    torchrun stop rank 0 (still importing, say) before rank 0 printed anything. A rank still running after
    ``RANK_WAIT_S`` failed on its own and prints the line itself, naming its rank."""
    rank = _launch_rank()
    if rank == 0:
        print(line, file=sys.stderr)
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun's stop ends this rank without a word
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    time.sleep(RANK_WAIT_S)
    print(f'{line} (rank {rank})', file=sys.stderr)


def main(argv=None) -> int:
    """Command line entry (train.py, ``python -m timm_mixplug.train.engine``): 0 on success, 2 on bad input, 1 when
    the loss became NaN / inf, 130 on Ctrl-C, 143 on SIGTERM; each failure prints one ``train.py: ...`` line."""
    progress = RunProgress()

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
        run(args, progress)
    except UsageError as e:
        _report(f'train.py: error: {e}')
        return 2
    except NonFiniteLoss as e:
        state = os.path.join(progress.path or '', 'last-state.safetensors')
        kept = f'; the last good state is {state}' if os.path.isfile(state) else ''
        _report(f'train.py: error: {e}{kept}')
        return 1
    except OSError as e:  # a full disk, a deleted run folder...: the previous files are intact
        message = write_fault_message(e, progress.path)
        if message is None:
            raise
        _report(f'train.py: error: {message}')
        return 1
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        if _launch_rank() == 0:  # under torchrun: one line, from rank 0
            print(interrupted_message(progress, argv, 'terminated (SIGTERM)' if term else 'interrupted'),
                  file=sys.stderr)
        return 143 if term else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
