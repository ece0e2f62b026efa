"""Weights files given to train.py (``--initial-checkpoint``, ``--pretrained-path``, ``--kd-pretrained-path``):
loaded completely, or refused in one line that says what the file holds and a fix that works.

* ``--initial-checkpoint`` and ``--kd-pretrained-path`` load strictly: every layer of the model from the file.
* ``--pretrained-path`` goes through timm's loader, which adapts the classifier to ``--num-classes`` (a new head:
  what the user asked for) but otherwise loads what matches and leaves the rest at random initialisation with a
  log line only. Every other parameter must come from the file.
* Keys under a prefix (``model.``, ``module.model.``: saved from a wrapper) and a DML run's weights (its peers
  under ``0.``, ``1.``, ...) are named, with the command that writes the file the model loads.
"""
import os
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from timm_mixplug.errors import UsageError
from timm_mixplug.train.timm_checkpoint import load_any_weights
from timm_mixplug.utils.checkpoint import CheckpointError

__all__ = ['load_strict', 'check_pretrained_loaded']

_PEER = re.compile(r'^\d+\.')


def _fits(own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor], skip: Sequence[str] = ()) -> bool:
    """Every tensor of ``own`` (BatchNorm's step counters and the layers ``skip`` aside) is in ``sd`` with its
    shape."""
    return all(k in sd and sd[k].shape == v.shape for k, v in own.items()
               if not k.endswith('num_batches_tracked') and not any(k.startswith(c + '.') for c in skip))


def _prefix_fix(own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor], skip: Sequence[str]) -> Optional[str]:
    """The key prefix of ``sd`` (``model.``, ``0.``...) whose keys, stripped of it, hold the whole model."""
    first = next(iter(sd), '')
    for i in (m.end() for m in re.finditer(r'\.', first)):
        prefix = first[:i]
        if _fits(own, {k[i:]: v for k, v in sd.items() if k.startswith(prefix)}, skip):
            return prefix
    return None


def _extract_command(path: str, prefix: str, out: str) -> str:
    return (f'python -c "from timm_mixplug.utils.checkpoint import load_weights, save_weights; '
            f"sd = load_weights('{path}'); save_weights('{out}', "
            f"{{k[{len(prefix)}:]: v for k, v in sd.items() if k.startswith('{prefix}')}})\"")


def prefix_hint(own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor], path: str, flag: str,
                skip: Sequence[str] = ()) -> Optional[str]:
    """What the file holds and the command that writes the file ``flag`` loads, where a key prefix is all that
    keeps it from loading (the layers ``skip`` aside); None otherwise."""
    prefix = _prefix_fix(own, sd, skip)
    if prefix is None:
        return None
    stem = os.path.splitext(path)[0]
    if _PEER.match(prefix) and all(_PEER.match(k) for k in sd):
        peers = sorted({int(k.split('.', 1)[0]) for k in sd})
        out = f'{stem}-peer{prefix[:-1]}.safetensors'
        return (f'it is a DML run\'s weights: its {len(peers)} peers under {", ".join(f"{p}.*" for p in peers)} (the '
                f'ensemble), not one network; write peer {prefix[:-1]} to its own file with '
                f'{_extract_command(path, prefix, out)} and give {flag} {out}')
    out = f'{stem}-{prefix.strip(".").replace(".", "-")}-stripped.safetensors'
    share = 'every key of the file starts with' if all(k.startswith(prefix) for k in sd) else 'the model is under'
    return (f'{share} {prefix!r} (saved from a wrapper); write it without that prefix with '
            f'{_extract_command(path, prefix, out)} and give {flag} {out}')


def _mismatch(own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor], num_classes: int, path: str,
              flag: str) -> str:
    """What keeps ``sd`` from loading strictly into a model with state dict ``own`` (first layer named, both
    shapes, and a fix that works); '' when it loads."""
    shapes = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    if shapes:
        k, theirs, mine = shapes[0]
        more = f' (and {len(shapes) - 1} more layer(s))' if len(shapes) > 1 else ''
        msg = f'{k} is {theirs} in the checkpoint, {mine} in the model{more}'
        if mine and theirs and mine[0] == num_classes and theirs[0] != num_classes and mine[1:] == theirs[1:]:
            if flag == '--kd-pretrained-path':
                msg += (f'; the file holds a teacher of {theirs[0]} classes, the data has {num_classes}: a teacher '
                        f'distils over the student\'s classes, so give the weights of a teacher trained on this data '
                        f'(e.g. the best.safetensors of a train.py run on it)')
            else:
                msg += f'; the checkpoint has {theirs[0]} classes: use --num-classes {theirs[0]}'
        return msg
    if missing or extra:
        hint = prefix_hint(own, sd, path, flag)
        if hint:
            return hint
        parts = []
        if missing:
            parts.append(f'{len(missing)} layer(s) missing from the checkpoint ({", ".join(missing[:3])}'
                         f'{" ..." if len(missing) > 3 else ""})')
        if extra:
            parts.append(f'{len(extra)} unexpected ({", ".join(extra[:3])}{" ..." if len(extra) > 3 else ""})')
        return '; '.join(parts) + ': is it a checkpoint of another model?'
    return ''


def load_strict(model: nn.Module, path: str, flag: str, what: str, num_classes: int) -> None:
    """Load the weights file ``path`` (ours or timm's, no pickle) strictly into ``model``; a mismatch is one
    CheckpointError naming ``flag``, the model, the first layer that differs and the fix."""
    sd = load_any_weights(path)
    problem = _mismatch(model.state_dict(), sd, num_classes, path, flag)
    if problem:
        raise CheckpointError(f'{flag} {path} does not match {what} with {num_classes} classes: {problem}')
    model.load_state_dict(sd, strict=True)


def _constant(t: torch.Tensor) -> bool:
    return t.numel() == 0 or bool((t == t.reshape(-1)[0]).all())


def _pretrained_hint(path: str, own: Dict[str, torch.Tensor], skip: Sequence[str]) -> str:
    sd = load_any_weights(path)
    return prefix_hint(own, sd, path, '--pretrained-path', skip) or (
        f'the file has {len(sd)} tensors ({", ".join(list(sd)[:3])}{" ..." if len(sd) > 3 else ""}): is it a '
        f'checkpoint of another model?')


def check_pretrained_loaded(create: Callable[..., nn.Module], path: str, what: str, classifier: List[str]) -> nn.Module:
    """``create(pretrained=...)`` with timm's ``--pretrained-path`` loader, checked: a parameter that is still
    its random initialisation (found by building the model once more without weights from the same random
    state; parameters initialised to one constant cannot tell and are skipped) is refused unless it belongs
    to a ``classifier`` that timm resets for another class count. Returns the model."""
    with torch.random.fork_rng(devices=[]):
        probe = create(pretrained=False)
    init = dict(probe.named_parameters())
    try:
        model = create(pretrained=True)
    except UsageError as e:  # timm's strict load (same class count) names the keys; add what the file holds
        raise UsageError(f'{e}; {_pretrained_hint(path, probe.state_dict(), classifier)}') from None
    checked = [k for k, p in model.named_parameters() if k in init and not _constant(init[k])
               and not any(k.startswith(c + '.') for c in classifier)]
    kept = [k for k, p in model.named_parameters() if k in checked and torch.equal(p.detach(), init[k].detach())]
    if kept:
        raise CheckpointError(
            f'--pretrained-path {path}: {len(kept)} of the {len(checked)} randomly initialised parameter tensors of '
            f'{what} are not in the file ({", ".join(kept[:3])}{" ..." if len(kept) > 3 else ""}) and would train '
            f'from that initialisation; {_pretrained_hint(path, model.state_dict(), classifier)}')
    return model
