"""Start a training run's files once every input is validated: the run folder (new, or the resumed run's own),
its lock, ``args.yaml``, ``train.log`` and the W&B run. Nothing here runs before the build succeeded."""
import logging
import os
from datetime import datetime
from typing import Any, Dict, Optional

import yaml
from timm.models import safe_model_name
from timm.utils import get_outdir, trim_summary, unwrap_model

from timm_mixplug.errors import UsageError
from timm_mixplug.train.build import Built
from timm_mixplug.train.config import args_to_yaml
from timm_mixplug.train.resume import changed_settings
from timm_mixplug.train.run_folder import RunProgress, lock_run_folder, prepare_run_folder
from timm_mixplug.train.wandb_log import start_wandb
from timm_mixplug.utils.checkpoint import atomic_write_bytes, remove_stale_temp

_logger = logging.getLogger('train')

__all__ = ['open_run_folder', 'add_log_file']


def _folder_name(args, b: Built, meta: Optional[Dict[str, Any]]) -> str:
    """The resumed run's own folder, or ``--output/--experiment`` (default name: date-time, model, size)."""
    run_dir = os.path.dirname(os.path.abspath(meta['_path'])) if meta is not None else None
    if meta is not None and not args.experiment and meta.get('_format') != 'timm':  # continue our run folder
        return run_dir
    exp_name = args.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(b.data_config['input_size'][-1])])
    output_dir = os.path.join(args.output or './output/train', exp_name)
    try:
        return get_outdir(output_dir)
    except OSError as e:
        raise UsageError(f'cannot create the run folder {output_dir}: {e.strerror or e}; choose another '
                         f'--output') from None


def open_run_folder(args, b: Built, meta: Optional[Dict[str, Any]], saved: Optional[Dict[str, Any]],
                    start_epoch: int, progress: RunProgress):
    """Create (or continue) the run folder under its lock, write ``args.yaml`` and start W&B; ``progress``
    records the folder. Returns the W&B run (or None)."""
    output_dir = _folder_name(args, b, meta)
    run_dir = os.path.dirname(os.path.abspath(meta['_path'])) if meta is not None else None
    progress.lock = lock_run_folder(output_dir)  # before anything is written or removed there
    continued = meta is not None and os.path.abspath(output_dir) == run_dir
    if not continued:  # checked (again) under the lock, then cleared
        prepare_run_folder(output_dir, args, resuming=False)
    stale = remove_stale_temp(output_dir)
    if stale:
        _logger.warning(f'Removed temporary files of an interrupted write from {output_dir}: {", ".join(stale)}')
    if meta is not None:
        changed = changed_settings(args, saved)
        _logger.info(f'Resuming {meta["_path"]} after epoch {start_epoch - 1} ({start_epoch} epoch(s) trained); '
                     f'settings changed from the checkpoint\'s: {", ".join(changed) if changed else "none"}')
    progress.path, progress.epochs_done = output_dir, start_epoch
    resolved = args_to_yaml(args)
    # args.yaml describes the weights in the folder: a run continued in its own folder rewrites it only with the
    # first state its (possibly new) settings produce (epochs._write_state), a new folder gets it now
    progress.args_yaml_pending = resolved if continued else None
    if not continued:
        atomic_write_bytes(os.path.join(output_dir, 'args.yaml'), resolved.encode())
    trim_summary(os.path.join(output_dir, 'summary.csv'), start_epoch)
    return start_wandb(args, os.path.basename(output_dir), yaml.safe_load(resolved))


def add_log_file(args, b: Built, output_dir: str, start_epoch: int, num_epochs: int) -> logging.Handler:
    """``train.log`` in the run folder (the caller removes the returned handler) and the run's first line."""
    log_file = logging.FileHandler(os.path.join(output_dir, 'train.log'))
    log_file.setFormatter(logging.Formatter('%(message)s'))
    logging.getLogger().addHandler(log_file)
    n_params = sum(p.numel() for p in unwrap_model(b.task.get_trainable_module()).parameters())
    _logger.info(f'Model {args.model} ({n_params / 1e6:.2f}M params), task {args.task}, mix {args.mix}, '
                 f'{args.num_classes} classes, input {tuple(b.data_config["input_size"])}, '
                 f'{len(b.loader_train)} batches/epoch of {args.batch_size} x {args.world_size} process(es), '
                 f'lr {args.lr:.4g}; epochs {start_epoch}..{num_epochs - 1}; output {output_dir}')
    return log_file
