"""timm train.py options implemented with timm's own pieces; the engine calls these at thin call sites.

- data: ``--input-key/--target-key/--train-num-samples/--val-num-samples/--dataset-trust-remote-code/
  --epoch-repeats`` (``create_dataset``), ``--worker-seeding`` (``create_loader``), ``--aug-splits``
  (``AugMixDataset``), ``--aug-repeats`` (``RepeatAugSampler``),
  ``--use-multi-epochs-loader`` and ``--model-dtype`` (``create_loader``);
- model: ``--head-init-scale/--head-init-bias``, ``--split-bn`` (``convert_splitbn_model``), ``--model-dtype``,
  ``--torchcompile/--torchcompile-mode`` (the task's ``compile()``);
- loss: ``--bce-loss/--bce-*`` (``BinaryCrossEntropy``), ``--jsd-loss`` (``JsdCrossEntropy``);
- process: ``--device-modules`` (imported before the device is set up), ``--fast-norm``;
- ``check_args``: the cross-flag rules of these options (called by ``config.resolve_args``).
"""
import argparse
import importlib
import importlib.util
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import AugMixDataset
from timm.data.distributed_sampler import RepeatAugSampler
from timm.layers import convert_splitbn_model, set_fast_norm
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from timm_mixplug.data.mixing import get_mixer_spec
from timm_mixplug.errors import UsageError

_logger = logging.getLogger('train')

__all__ = ['apply_process_options', 'check_args', 'dataset_kwargs', 'loader_kwargs', 'wrap_train_dataset',
           'apply_repeat_aug', 'set_loader_epoch', 'apply_model_options', 'model_dtype', 'create_train_loss',
           'compile_task', 'num_aug_splits']


def num_aug_splits(args) -> int:
    return args.aug_splits if args.aug_splits > 1 else 0


def check_args(args: argparse.Namespace) -> None:
    """Combinations of the options above (UsageError, before anything is built; their value ranges are in
    ``ranges.all_ranges``)."""
    if args.aug_splits:
        if args.mix != 'none':
            raise UsageError(f'--aug-splits keeps each image\'s augmented copies together; it cannot be combined '
                             f'with --mix {args.mix}')
        if args.task != 'classification':
            raise UsageError(f'--aug-splits works with --task classification only, not --task {args.task}')
        if args.no_prefetcher:
            raise UsageError("--aug-splits batches its splits with timm's prefetcher collate; drop --no-prefetcher")
        if args.aug_repeats:
            raise UsageError('--aug-splits and --aug-repeats are two kinds of repeated augmentation; choose one')
    if args.jsd_loss and not args.aug_splits:
        raise UsageError('--jsd-loss compares the augmentation splits: add --aug-splits N (N >= 2)')
    if args.jsd_loss and args.bce_loss:
        raise UsageError('--jsd-loss and --bce-loss are two different losses; choose one')
    if args.split_bn and not (args.aug_splits or args.resplit):
        raise UsageError('--split-bn keeps BatchNorm statistics per augmentation split: add --aug-splits N '
                         '(or --resplit)')
    if args.bce_loss and args.mix != 'none' and get_mixer_spec(args.mix).loss is not SoftTargetCrossEntropy:
        raise UsageError(f'--mix {args.mix} trains with its own loss ({get_mixer_spec(args.mix).loss.__name__}); '
                         f'drop --bce-loss')
    if not args.bce_loss:
        for flag in ('bce_sum', 'bce_target_thresh', 'bce_pos_weight'):
            if getattr(args, flag) not in (None, False):
                raise UsageError(f'--{flag.replace("_", "-")} is an option of --bce-loss; add --bce-loss or drop it')
    if args.model_dtype and args.model_dtype != 'float32' and args.amp:
        raise UsageError(f'--amp needs a float32 model; drop --model-dtype {args.model_dtype} or --amp')
    if args.torchcompile_mode and args.torchcompile is None:
        raise UsageError('--torchcompile-mode is used with --torchcompile; add --torchcompile')
    if args.log_wandb and importlib.util.find_spec('wandb') is None:
        raise UsageError('--log-wandb needs the wandb package: pip install "timm_mixplug[wandb]"')
    if args.wandb_resume_id and not args.resume:
        raise UsageError('--wandb-resume-id continues a W&B run: add --resume')


def busy_cores(interval: float = 0.25) -> Tuple[float, str]:
    """(cores kept busy by other processes now, how it was measured): the machine's busy CPU time over
    ``interval`` seconds (``/proc/stat``) minus this process's own, so a job that just ended does not count as
    the 1-minute load average would; the load average where ``/proc/stat`` is missing."""

    def busy_ticks():
        with open('/proc/stat') as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
    try:
        hz = os.sysconf('SC_CLK_TCK')
        b0, own0, t0 = busy_ticks(), time.process_time(), time.monotonic()
        time.sleep(interval)
        b1, own1, t1 = busy_ticks(), time.process_time(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0], 'load'
    return max(0.0, ((b1 - b0) / hz - (own1 - own0)) / max(t1 - t0, 1e-3)), 'busy'


def omp_threads(env: str) -> Tuple[int, str]:
    """(threads, why) from ``OMP_NUM_THREADS`` as OpenMP reads it: a number, or a comma list of numbers, one per
    nesting level (e.g. ``4,2``), of which torch's threads are the first level; anything else is refused."""
    levels = [v.strip() for v in env.split(',')]
    if not all(v.isdigit() for v in levels):
        raise UsageError(f'OMP_NUM_THREADS={env!r} is neither a number nor OpenMP\'s comma list of numbers (e.g. 4 '
                         f'or 4,2); set it so, or unset it and give --threads N')
    n = max(1, int(levels[0]))
    return n, f'OMP_NUM_THREADS={env}' + (', its first nesting level' if len(levels) > 1 else '')


def choose_threads(requested: int, workers: int, local_procs: int, env: Optional[str], cores: int,
                   load: float, measure: str = 'busy') -> Tuple[int, str]:
    """(torch threads, why): ``--threads N`` > 0 or ``OMP_NUM_THREADS`` as given; otherwise the cores left free
    by other work (``cores`` minus ``load``, the cores other processes keep busy: ``busy_cores``), shared by this machine's ``local_procs``
    training processes and their loader ``workers`` (each worker process keeps a core busy), at least 1.
    Every small op's parallel region waits for all its threads, so one more thread than there are free cores
    makes the whole step wait for a descheduled thread (about 10x slower with one busy core out of two)."""
    if requested > 0:
        return requested, f'--threads {requested}'
    if env:
        return omp_threads(env)
    free = max(1.0, cores - load)
    n = max(1, int(round(free / local_procs)) - workers)
    return n, (f'{cores} cores, {load:.1f} {"busy with other work" if measure == "busy" else "load average"}, '
               f'{local_procs} local process(es), {workers} loader worker(s); --threads N to choose')


def apply_process_options(args) -> List[str]:
    """Before anything is built: ``--workers`` lowered to the cores each local process has (said in one line),
    the torch thread count (``choose_threads``, logged in one line), import
    ``--device-modules`` (device backends), enable ``--fast-norm``. Returns the lines to log once the run is
    built (an error must come first and alone)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    local = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    env = os.environ.get('OMP_NUM_THREADS') if 'OMP_NUM_THREADS' in os.environ else None
    notes = []
    most = max(1, cores // local)
    if args.workers > most:  # more loader processes than cores only queue behind each other
        notes.append(f'Lowering --workers {args.workers} to {most}: this machine gives each of its {local} '
                     f'training process(es) {most} core(s)')
        args.workers = most
    load, measure = busy_cores() if args.threads <= 0 and env is None else (0.0, 'busy')
    if measure == 'busy':  # this job's other local processes (torchrun) are starting up too: not other work
        load = max(0.0, load - (local - 1))
    n, why = choose_threads(args.threads, args.workers, local, env, cores, load, measure)
    torch.set_num_threads(n)
    notes.append(f'Using {n} torch thread(s) per process ({why})')
    for name in args.device_modules or ():
        try:
            importlib.import_module(name)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UsageError(f'--device-modules: cannot import {name!r}: {msg}') from None
    if args.fast_norm:
        set_fast_norm()
    return notes


# ---- data ----

def dataset_kwargs(args, is_training: bool) -> Dict[str, Any]:
    """What timm's train.py passes to ``create_dataset`` besides name / root / split."""
    kw = dict(input_key=args.input_key, target_key=args.target_key,
              num_samples=args.train_num_samples if is_training else args.val_num_samples,
              trust_remote_code=args.dataset_trust_remote_code)
    if is_training:
        kw['repeats'] = args.epoch_repeats
    return kw


def model_dtype(args) -> Optional[torch.dtype]:
    return getattr(torch, args.model_dtype) if args.model_dtype else None


def loader_kwargs(args, is_training: bool) -> Dict[str, Any]:
    """Extra ``create_loader`` arguments: input dtype; for training AugMix splits, multi-epoch workers and,
    when distributed, timm's RepeatAugSampler (single process: ``apply_repeat_aug``)."""
    kw: Dict[str, Any] = dict(img_dtype=model_dtype(args) or torch.float32)
    if is_training:
        kw.update(num_aug_splits=num_aug_splits(args), use_multi_epochs_loader=args.use_multi_epochs_loader,
                  worker_seeding=args.worker_seeding)
        if args.distributed and args.aug_repeats:
            kw['num_aug_repeats'] = _repeats(args.aug_repeats)
    return kw


def _repeats(r: float):
    return int(r) if float(r).is_integer() else float(r)


def wrap_train_dataset(dataset, args):
    """``--aug-splits N``: timm's ``AugMixDataset`` (the clean image + N-1 augmented copies per sample)."""
    if not num_aug_splits(args):
        return dataset
    return AugMixDataset(dataset, num_splits=num_aug_splits(args))


def apply_repeat_aug(loader, args) -> None:
    """``--aug-repeats`` in a single process: timm's ``RepeatAugSampler`` (1 replica) behind the loader's
    batch sampler, as create_loader does per rank when distributed."""
    if not args.aug_repeats or args.distributed:
        return
    inner = getattr(loader, 'loader', loader)  # timm's PrefetchLoader wraps the DataLoader
    bs = inner.batch_sampler
    if bs is None or not hasattr(bs, 'sampler'):
        raise UsageError('--aug-repeats needs a map-style dataset (not an iterable one)')
    bs.sampler = RepeatAugSampler(inner.dataset, num_replicas=1, rank=0, num_repeats=_repeats(args.aug_repeats))


def set_loader_epoch(loader, epoch: int) -> None:
    """Tell the loader's dataset / sampler(s) the epoch (as timm's train.py does)."""
    inner = getattr(loader, 'loader', loader)
    if hasattr(inner.dataset, 'set_epoch'):
        inner.dataset.set_epoch(epoch)
    samplers = {id(s): s for s in (getattr(inner, 'sampler', None),
                                   getattr(getattr(inner, 'batch_sampler', None), 'sampler', None))}
    for s in samplers.values():
        if hasattr(s, 'set_epoch'):
            s.set_epoch(epoch)


# ---- model ----

def apply_model_options(model: nn.Module, args) -> nn.Module:
    """``--head-init-scale`` / ``--head-init-bias`` on the classifier, then ``--split-bn`` (timm's order)."""
    if args.head_init_scale is not None or args.head_init_bias is not None:
        head = model.get_classifier() if hasattr(model, 'get_classifier') else None
        if not isinstance(getattr(head, 'weight', None), torch.Tensor):
            raise UsageError(f'--head-init-scale / --head-init-bias: --model {args.model} has no classifier '
                             f'with weights (get_classifier())')
        with torch.no_grad():
            if args.head_init_scale is not None:
                head.weight.mul_(args.head_init_scale)
                if head.bias is not None:
                    head.bias.mul_(args.head_init_scale)
            if args.head_init_bias is not None:
                if head.bias is None:
                    raise UsageError(f'--head-init-bias: the classifier of --model {args.model} has no bias')
                nn.init.constant_(head.bias, args.head_init_bias)
    if args.split_bn:
        model = convert_splitbn_model(model, max(num_aug_splits(args), 2))
    return model


def compile_task(task, args) -> None:
    """``--torchcompile BACKEND [--torchcompile-mode MODE]``: the task compiles its own modules (and the EMA),
    before DDP wrapping, as timm's train.py does."""
    if args.torchcompile is None:
        return
    if args.rank == 0:
        _logger.info(f'Compiling --task {args.task} with backend={args.torchcompile}, mode={args.torchcompile_mode}')
    task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
    if task.has_ema():
        task.compile_ema(backend=args.torchcompile, mode=args.torchcompile_mode)


# ---- loss ----

def create_train_loss(args) -> nn.Module:
    """The training loss, by timm train.py's rules plus the BC methods' KL divergence:
    --jsd-loss: JsdCrossEntropy; mixing: the mixer's registered loss (``MixerSpec.loss``: SoftTargetKLDiv
    for BC / BC+), replaced by BinaryCrossEntropy with --bce-loss where that is timm's SoftTargetCrossEntropy;
    no mixing: BinaryCrossEntropy(smoothing) (--bce-loss), LabelSmoothingCrossEntropy (--smoothing > 0) or
    CrossEntropyLoss."""
    bce = dict(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    if args.jsd_loss:
        return JsdCrossEntropy(num_splits=num_aug_splits(args), smoothing=args.smoothing)
    if args.mix != 'none':  # the mixer's targets already carry the label smoothing
        return BinaryCrossEntropy(**bce) if args.bce_loss else get_mixer_spec(args.mix).loss()
    if args.bce_loss:
        return BinaryCrossEntropy(smoothing=args.smoothing, **bce)
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()
