"""One training epoch and one evaluation pass over a ``timm.task.TrainingTask``, as timm's train.py runs them."""
import logging
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import timedelta
from typing import Dict

import numpy as np
import torch
import torch.nn as nn
from timm.task import evaluation_sample_limit
from timm.utils import dispatch_clip_grad

from timm_mixplug.data.mixing.bc import zero_mean
from timm_mixplug.train.run_folder import NonFiniteLoss

_logger = logging.getLogger('train')

__all__ = ['train_one_epoch', 'validate', 'PROGRESS_SECONDS']

PROGRESS_SECONDS = 10.0  # an evaluation longer than this reports its progress


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
            input = zero_mean(input)
        if args.channels_last and input.ndim == 4:
            input = input.contiguous(memory_format=torch.channels_last)
    return input


def synchronize(device: torch.device) -> None:
    """``--synchronize-step``: wait for the accelerator's queued work (as timm's train.py; nothing on CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elif device.type != 'cpu' and hasattr(torch, device.type) and hasattr(getattr(torch, device.type), 'synchronize'):
        getattr(torch, device.type).synchronize()


def _fmt_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


class _EpochMeter:
    """Sums over one epoch's samples (loss, the task's extra scalars, the first step with a non-finite loss),
    reduced over all ranks at the end; the progress line of timm's train.py."""

    def __init__(self, device, n_batches: int):
        self.device, self.n_batches = device, n_batches
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.extra_sums: Dict[str, torch.Tensor] = OrderedDict()
        self.n_local = 0
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
        self.start = time.perf_counter()

    def add(self, batch_idx: int, out: Dict, input, target) -> None:
        loss = out['loss']
        self.bad_step = torch.where((self.bad_step < 0) & ~torch.isfinite(loss.detach()), batch_idx, self.bad_step)
        bs = int(out['output'].shape[0]) if isinstance(out.get('output'), torch.Tensor) else _batch_size(input, target)
        self.n_local += bs
        self.loss_sum += loss.detach().to(torch.float64) * bs
        for k, v in out.items():
            if k not in ('loss', 'output') and isinstance(v, torch.Tensor) and v.numel() == 1:
                if k not in self.extra_sums:
                    self.extra_sums[k] = torch.zeros((), dtype=torch.float64, device=self.device)
                self.extra_sums[k] += v.detach().to(torch.float64).reshape(()) * bs

    def log(self, epoch: int, batch_idx: int, loss, optimizer, args, num_epochs: int) -> None:
        """The progress line; stops a single-process run at its first non-finite loss (ranks stop together at the
        end of the epoch)."""
        if not args.distributed and self.bad_step.item() >= 0:
            raise NonFiniteLoss(epoch, int(self.bad_step.item()))
        last_idx = self.n_batches - 1
        elapsed = time.perf_counter() - self.start
        step_time = elapsed / (batch_idx + 1)
        rate = self.n_local * args.world_size / max(elapsed, 1e-9)
        eta_epoch = step_time * (last_idx - batch_idx)
        eta_run = eta_epoch + step_time * self.n_batches * (num_epochs - epoch - 1)
        _logger.info(
            f'Train: {epoch} [{batch_idx:>4d}/{self.n_batches} ({100. * (batch_idx + 1) / self.n_batches:>3.0f}%)]  '
            f'Loss: {loss.item():#.4g} ({(self.loss_sum / max(self.n_local, 1)).item():#.4g}'
            f'{" rank 0" if args.distributed else ""})  LR: {_mean_lr(optimizer):.3e}  '
            f'{rate:>7.1f} samples/s  ETA: {_fmt_eta(eta_epoch)} (run {_fmt_eta(eta_run)})')

    def finish(self, epoch: int, optimizer, distributed: bool) -> Dict[str, float]:
        """The epoch's metrics over all ranks; raises ``NonFiniteLoss`` if any rank saw a non-finite loss."""
        elapsed = time.perf_counter() - self.start
        totals = torch.stack([self.loss_sum, torch.tensor(float(self.n_local), dtype=torch.float64, device=self.device),
                              (self.bad_step >= 0).to(torch.float64), *self.extra_sums.values()])
        if distributed:
            torch.distributed.all_reduce(totals)
        if totals[2].item() > 0 or not np.isfinite(totals[0].item()):
            step = int(self.bad_step.item())
            raise NonFiniteLoss(epoch, step if step >= 0 else None)
        n_total = max(totals[1].item(), 1.0)
        metrics = OrderedDict(loss=totals[0].item() / n_total)
        for i, k in enumerate(self.extra_sums):
            metrics[k] = totals[3 + i].item() / n_total
        metrics['samples_per_sec'] = totals[1].item() / max(elapsed, 1e-9)
        metrics['lr'] = _mean_lr(optimizer)
        return metrics


def _backward(loss, optimizer, args, loss_scaler, clip_params, need_update: bool) -> None:
    """Backward of one (accumulated) step and, on an update step, the optimizer step with timm's gradient
    clipping (through timm's loss scaler when one is used)."""
    scaled = loss / args.grad_accum_steps if args.grad_accum_steps > 1 else loss
    if loss_scaler is not None:
        loss_scaler(scaled, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                    parameters=clip_params, need_update=need_update)
        return
    scaled.backward()
    if need_update:
        if args.clip_grad is not None:
            dispatch_clip_grad(clip_params, value=args.clip_grad, mode=args.clip_mode)
        optimizer.step()


def _after_update(task, optimizer, args, device, lr_scheduler, num_updates: int) -> int:
    optimizer.zero_grad(set_to_none=True)
    num_updates += 1
    task.update_ema(step=num_updates)
    if lr_scheduler is not None:
        lr_scheduler.step_update(num_updates=num_updates)
    if args.synchronize_step:
        synchronize(device)
    return num_updates


def train_one_epoch(epoch: int, task, loader, optimizer, args, device, *, mixer=None, lr_scheduler=None,
                    loss_scaler=None, amp_autocast=nullcontext, num_updates: int = 0, num_epochs: int = 1,
                    prefetched: bool = True, zero_mean_input: bool = False, on_update=None, on_first_batch=None):
    """One epoch; returns (metrics, num_updates). metrics: loss (+ task extras) averaged over all samples of
    all ranks, samples_per_sec (all ranks), lr. ``on_update(epoch, num_updates, batch_idx)`` after each update;
    ``on_first_batch(epoch, input, target)`` with the epoch's first batch as the task gets it (``--save-images``)."""
    task.train()
    last_idx = len(loader) - 1
    meter = _EpochMeter(device, len(loader))
    optimizer.zero_grad(set_to_none=True)
    clip_params = None
    for batch_idx, (input, target) in enumerate(loader):
        if not prefetched:
            input, target = _to_device(input, device), _to_device(target, device)
        input = _prep_input(input, args, zero_mean_input)
        if mixer is not None:
            input, target = mixer(input, target)
        if batch_idx == 0 and on_first_batch is not None:
            on_first_batch(epoch, input, target)
        need_update = (batch_idx + 1) % args.grad_accum_steps == 0 or batch_idx == last_idx
        with task.no_sync() if (args.distributed and not need_update) else nullcontext():
            with amp_autocast():
                out = task(input, target)
            if args.clip_grad is not None and clip_params is None:
                clip_params = list(task.get_clip_parameters(exclude_head='agc' in args.clip_mode))
            _backward(out['loss'], optimizer, args, loss_scaler, clip_params, need_update)
        if need_update:
            num_updates = _after_update(task, optimizer, args, device, lr_scheduler, num_updates)
            if on_update is not None:
                on_update(epoch, num_updates, batch_idx)
        meter.add(batch_idx, out, input, target)
        if args.rank == 0 and (batch_idx % args.log_interval == 0 or batch_idx == last_idx):
            meter.log(epoch, batch_idx, out['loss'], optimizer, args, num_epochs)
    return meter.finish(epoch, optimizer, args.distributed), num_updates


def _mean_lr(optimizer) -> float:
    lrs = [g['lr'] for g in optimizer.param_groups]
    return sum(lrs) / len(lrs)


@torch.no_grad()
def validate(task, loader, args, device, *, ema: bool = False, amp_autocast=nullcontext, prefetched: bool = True,
             zero_mean_input: bool = False) -> Dict[str, float]:
    """Evaluate ``task``'s eval model (or EMA) with the task's evaluator; metrics over all ranks. An evaluation
    that takes longer than ``PROGRESS_SECONDS`` logs a progress line every ``PROGRESS_SECONDS`` (rank 0)."""
    task.eval()
    model = task.get_eval_model(ema=ema)
    if isinstance(model, nn.Module):
        model.eval()
    evaluator = task.create_evaluator(max_samples=evaluation_sample_limit(loader))
    eval_forward = getattr(task, 'eval_forward', None)
    n_batches, excluded = len(loader), 0
    start = last = time.perf_counter()
    for batch_idx, (input, target) in enumerate(loader):
        now = time.perf_counter()
        if batch_idx and args.rank == 0 and now - last >= PROGRESS_SECONDS:
            last = now
            eta = (now - start) / batch_idx * (n_batches - batch_idx)
            _logger.info(f'Eval{" (EMA)" if ema else ""}: [{batch_idx:>4d}/{n_batches}] '
                         f'{100. * batch_idx / n_batches:>3.0f}%  {now - start:.0f}s, ETA {_fmt_eta(eta)}')
        if not prefetched:
            input, target = _to_device(input, device), _to_device(target, device)
        if isinstance(target, torch.Tensor) and not target.is_floating_point() and target.dim() == 1:
            keep = target >= 0  # -1: an image file that could not be read (ExcludeUnreadable)
            excluded += int((~keep).sum())
            if not keep.all():
                input, target = input[keep], target[keep]
                if not len(target):
                    continue
        input = _prep_input(input, args, zero_mean_input)
        with amp_autocast():
            output = eval_forward(input, ema=ema) if eval_forward is not None else model(input)
        evaluator.update(output, target)
    metrics = OrderedDict(evaluator.compute(distributed=args.distributed))
    if args.distributed:
        total = torch.tensor([float(excluded)], device=device)
        torch.distributed.all_reduce(total)
        excluded = int(total.item())
    if excluded and args.rank == 0:
        _logger.warning(f'Eval: {excluded} unreadable image file(s) excluded from the metrics (named above)')
    return metrics
