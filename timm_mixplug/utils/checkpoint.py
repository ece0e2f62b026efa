"""Checkpoints without pickle: safetensors for tensors, JSON for everything else, atomic writes.

Files written by train.py into the run folder (``<name>`` is ``last`` or ``best``):

* ``<name>.safetensors``: model weights (the task's eval model), plain timm keys, loadable with
  ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=path))`` or ``--initial-checkpoint``.
* ``<name>-ema.safetensors``: EMA weights (with ``--model-ema``).
* ``last-state.safetensors``: everything ``--resume`` needs in ONE file, so it is replaced atomically:
  tensors (trainable module, EMA, optimizer state, task state, torch/CUDA RNG states as uint8) under
  ``<section>/...`` keys, and the rest (epoch, update count, scheduler and scaler state, optimizer param
  groups, numpy/python RNG states, best metric, a few args) as a JSON document in the safetensors header
  metadata (``__metadata__['state']``).

Every file is written to a temporary file in the same folder, fsync'ed and moved into place with
``os.replace``. Our files load with ``safetensors`` and ``json`` only; ``.pth`` weights with
``torch.load(weights_only=True)``.
"""
import json
import os
import random
import re
import tempfile
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import safetensors.torch
from safetensors import SafetensorError, safe_open
from timm.models import clean_state_dict

from timm_mixplug.errors import UsageError

__all__ = ['CheckpointError', 'atomic_write_bytes', 'save_safetensors', 'save_weights', 'load_weights',
           'save_train_state', 'load_train_state', 'load_train_meta', 'NotATrainStateError', 'capture_rng',
           'restore_rng', 'encode_state', 'decode_state', 'load_stateful', 'scheduler_state', 'remove_stale_temp',
           'STATE_FORMAT', 'state_dict_from_checkpoint', 'tensor_dict']

STATE_FORMAT = 'timm_mixplug.train_state'
STATE_VERSION = 1
STATE_SUFFIX = '-state.safetensors'


class CheckpointError(UsageError, ValueError):
    """Missing, corrupt or mismatching checkpoint (a ``ValueError`` for a library user; train.py: one error line,
    exit code 2)."""


class NotATrainStateError(CheckpointError):
    """A file read as a training state (``load_train_state``) that holds something else, e.g. weights only."""


def _fsync_replace(tmp: str, path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; final files get the usual permissions
    with open(tmp, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename durable
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def temp_path(path: str) -> str:
    """A new, unique temporary file beside ``path`` (``.<name>.<random>.tmp``) for an atomic replace."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + os.path.basename(path) + '.', suffix=_TMP_SUFFIX, dir=d)
    os.close(fd)
    return tmp


# temporary names: ``temp_path``'s (.<file>.<random>.tmp), unique per write; the fixed names of older versions
_TMP_PREFIX, _TMP_SUFFIX = '.', '.tmp'
_TMP_NAME = re.compile(r'^\..+\.(safetensors|yaml|csv|png)\.[A-Za-z0-9_]+\.tmp$')
_FIXED_TMP = ('summary.csv.tmp', 'summary.png.tmp.png')


def remove_stale_temp(folder: str) -> list:
    """Delete the temporary files a killed write left in ``folder`` (call before writing there); returns
    their names."""
    if not os.path.isdir(folder):
        return []
    stale = sorted(e.name for e in os.scandir(folder) if e.is_file() and (
        e.name in _FIXED_TMP or _TMP_NAME.match(e.name)))
    for name in stale:
        os.remove(os.path.join(folder, name))
    return stale


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        _fsync_replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cpu_tensors(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached contiguous CPU copies that share no storage (safetensors refuses shared tensors)."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach()
        t = t.cpu() if t.device.type != 'cpu' else t
        t = t.contiguous()
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


_OS_ERROR = re.compile(r'\(os error (\d+)\)')  # how safetensors' Rust writer reports an I/O error


def save_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None):
    """Atomically write ``tensors`` (+ string metadata) to ``path``."""
    tmp = temp_path(path)
    try:
        safetensors.torch.save_file(_cpu_tensors(tensors), tmp, metadata=metadata)
        _fsync_replace(tmp, path)
    except OSError as e:  # name the file being written, not its temporary (which is removed)
        raise OSError(e.errno, e.strerror, path) from None
    except SafetensorError as e:  # its writer's I/O errors (a full disk, ulimit -f) are no OSError
        code = _OS_ERROR.search(str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_weights(path: str, state_dict: Dict[str, torch.Tensor], **meta) -> None:
    """Model weights with plain keys (timm-loadable); ``meta`` is stored as strings in the header."""
    md = {'format': 'pt'}
    md.update({k: str(v) for k, v in meta.items()})
    save_safetensors(path, dict(state_dict), md)


def _read_safetensors(path: str, tensors: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, metadata) of a safetensors file; ``tensors=False`` reads the header alone (no tensor)."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()} if tensors else {}, meta
    except Exception as e:
        raise CheckpointError(f'corrupt or unreadable checkpoint {path}: '
                              f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    """Model weights from a ``.safetensors`` file (ours or timm's), our train state, or a ``.pth``/``.bin``
    state dict loaded with ``torch.load(weights_only=True)`` (timm train.py's ``.pth.tar``, which pickles its
    args, loads through ``timm_mixplug.train.timm_checkpoint``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        tensors, meta = _read_safetensors(path)
        if meta.get('format') == STATE_FORMAT:
            return {k[len('model/'):]: v for k, v in tensors.items() if k.startswith('model/')}
        return tensors
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if 'argparse.Namespace' in str(e):
            raise CheckpointError(f'{path} is a timm train.py checkpoint (it pickles train.py\'s args): load it with '
                                  f'timm.models.load_checkpoint') from None
        raise CheckpointError(f'cannot load {path} with torch.load(weights_only=True): {msg}') from None
    return state_dict_from_checkpoint(ckpt, path)


def state_dict_from_checkpoint(ckpt: Any, path: str) -> Dict[str, torch.Tensor]:
    """The model weights of a loaded torch checkpoint: a bare state dict, or its ``state_dict_ema`` /
    ``model_ema`` / ``state_dict`` / ``model`` entry (timm ``load_checkpoint``'s order), cleaned of wrappers."""
    if isinstance(ckpt, dict):
        for key in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    return tensor_dict(ckpt, path)


def tensor_dict(sd: Any, path: str) -> Dict[str, torch.Tensor]:
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f'{path} does not contain a state dict of tensors')
    return clean_state_dict(sd)


# ---- JSON + tensor encoding of nested state (optimizer, scheduler, scaler, RNG, task state) ----

def encode_state(obj: Any, tensors: Dict[str, torch.Tensor], prefix: str) -> Any:
    """JSON-able copy of ``obj``; tensors move to ``tensors`` under ``prefix...`` keys and leave a marker."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        n = 0
        while key in tensors:
            n += 1
            key = f'{prefix}#{n}'
        tensors[key] = obj
        return {'__tensor__': key}
    if isinstance(obj, np.ndarray):
        return {'__ndarray__': obj.tolist(), 'dtype': str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {'__dict__': {k: encode_state(v, tensors, f'{prefix}/{k}') for k, v in obj.items()}}
        return {'__items__': [[encode_state(k, tensors, f'{prefix}/k{i}'), encode_state(v, tensors, f'{prefix}/{k}')]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {'__tuple__': [encode_state(v, tensors, f'{prefix}/{i}') for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, f'{prefix}/{i}') for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.dtype):
        return {'__dtype__': str(obj).replace('torch.', '')}
    if hasattr(obj, 'state_dict') and callable(obj.state_dict):
        return {'__state_dict__': encode_state(obj.state_dict(), tensors, prefix)}
    return {'__skipped__': type(obj).__name__}


class StateDictValue:
    """Decoded ``state_dict()`` of a nested object: restore it with that object's ``load_state_dict``."""

    def __init__(self, value):
        self.value = value


_SKIP = object()


def decode_state(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if '__tensor__' in obj:
        return tensors[obj['__tensor__']]
    if '__ndarray__' in obj:
        return np.asarray(obj['__ndarray__'], dtype=obj['dtype'])
    if '__dict__' in obj:
        return {k: decode_state(v, tensors) for k, v in obj['__dict__'].items()}
    if '__items__' in obj:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj['__items__']}
    if '__tuple__' in obj:
        return tuple(decode_state(v, tensors) for v in obj['__tuple__'])
    if '__dtype__' in obj:
        return getattr(torch, obj['__dtype__'])
    if '__state_dict__' in obj:
        return StateDictValue(decode_state(obj['__state_dict__'], tensors))
    if '__skipped__' in obj:
        return _SKIP
    return {k: decode_state(v, tensors) for k, v in obj.items()}


def scheduler_state(scheduler) -> Dict[str, Any]:
    """A timm scheduler's ``state_dict()`` plus the wrapped torch scheduler of ``PlateauLRScheduler`` and its
    pre-noise LR (whose best metric, patience counters and ``restore_lr`` timm's own state_dict leaves out)."""
    state = dict(scheduler.state_dict())
    inner = getattr(scheduler, 'lr_scheduler', None)
    if inner is not None and hasattr(inner, 'state_dict'):
        state['lr_scheduler'] = inner
        state['restore_lr'] = getattr(scheduler, 'restore_lr', None)  # the plateau's LR before its noise
    return state


def load_stateful(target: Any, state: Dict[str, Any]) -> None:
    """Load a decoded ``__dict__``-style state (timm schedulers) into ``target``, recursing into nested
    objects that were saved through their own ``state_dict``."""
    for k, v in state.items():
        if v is _SKIP:
            continue
        if isinstance(v, StateDictValue):
            getattr(target, k).load_state_dict(v.value)
        else:
            setattr(target, k, v)


# ---- RNG ----

def capture_rng() -> Dict[str, Any]:
    state = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    if 'torch' in state:
        torch.set_rng_state(state['torch'])
    if 'numpy' in state:
        np.random.set_state(state['numpy'])
    if 'python' in state:
        py = state['python']
        random.setstate((py[0], tuple(py[1]), py[2]))
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ---- training state ----

def save_train_state(path: str, sections: Dict[str, Any], meta: Dict[str, Any]) -> None:
    """One atomic file: each section's tensors under ``<section>/...``, the rest as JSON metadata."""
    tensors: Dict[str, torch.Tensor] = {}
    doc = {'version': STATE_VERSION, 'meta': meta,
           'sections': {name: encode_state(obj, tensors, name) for name, obj in sections.items() if obj is not None}}
    save_safetensors(path, tensors, {'format': STATE_FORMAT, 'state': json.dumps(doc)})


def _state_document(path: str, md: Dict[str, str]) -> Dict[str, Any]:
    """The JSON document of a ``save_train_state`` file from its safetensors metadata, checked."""
    if md.get('format') != STATE_FORMAT or 'state' not in md:
        raise NotATrainStateError(f'{path} is not a timm_mixplug training state (model weights only? load those with '
                                  f'load_weights)')
    try:
        doc = json.loads(md['state'])
        if not isinstance(doc.get('sections'), dict) or not isinstance(doc.get('meta'), dict):
            raise ValueError('no sections or meta')
    except Exception as e:
        raise CheckpointError(f'corrupt training state in {path}: {e}') from None
    if doc.get('version', 0) > STATE_VERSION:
        raise CheckpointError(f'{path} was written by a newer timm_mixplug (state version {doc["version"]})')
    return doc


def load_train_state(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(sections, meta) from ``save_train_state``; raises CheckpointError if missing, corrupt or foreign."""
    tensors, md = _read_safetensors(path)
    doc = _state_document(path, md)
    try:
        sections = {k: decode_state(v, tensors) for k, v in doc['sections'].items()}
    except Exception as e:
        raise CheckpointError(f'corrupt training state in {path}: {e}') from None
    return sections, doc['meta']


def load_train_meta(path: str) -> Dict[str, Any]:
    """The meta of a ``save_train_state`` file, read from its header alone (no tensor is loaded)."""
    return _state_document(path, _read_safetensors(path, tensors=False)[1])['meta']
