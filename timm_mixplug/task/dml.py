"""Deep Mutual Learning (Zhang et al., CVPR 2018) as a ``timm.task.TrainingTask``; the superclass-mixup paper trains it on
superclass-mixed batches (``--task dml --mix superclass``).

K >= 2 peer networks (same or different timm architectures) see the same, possibly mixed, batch. Peer i
minimises

    L_i = L_task(z_i, y) + w * T^2 * (1 / (K - 1)) * sum_{j != i} KL(p_j || p_i)            (DML eq. (1)-(3))

    KL(p_j || p_i) = (1/B) sum_b sum_c p_j[b, c] * (log p_j[b, c] - log p_i[b, c]),   p_k = softmax(z_k / T)

where ``L_task`` is the run's criterion (cross-entropy, or the soft-target loss when the batch is mixed:
y is then the mixed target) and p_j is a constant for peer i (detached). ``kl_reduction='sum'`` uses the sum
over the other peers, as the reference code does (identical for K = 2). The T^2 factor (Hinton et al.)
keeps gradient magnitudes comparable across temperatures; it is 1 at the reference's T = 1.

Update order (deliberate difference): the reference updates the peers one after another within a step
(peer 2 sees peer 1's *updated* prediction). Here one backward of sum_i L_i with the other peers' predictions
detached gives every peer exactly the gradient of its own L_i at the step's start, and one optimizer step
updates all peers: peer 1's update is identical to the reference; the later peers use predictions that are
one (sequential) update older. This keeps a single optimizer / scheduler / EMA / DDP set-up and costs one
forward per peer instead of the reference's extra forward passes.

The trainable module is an ``nn.ModuleList`` of the peers (optimizer, EMA and checkpoints see every peer,
state-dict keys prefixed ``0.``, ``1.``, ...); under DDP each peer is wrapped separately (the wrappers are
kept outside the module tree, so checkpoint keys never change). ``get_eval_model()`` is ``DMLEnsemble``: the
log of the mean of the peers' softmax (argmax / top-k / NLL work on it). Validation reports the ensemble's
loss / top-1 / top-5 as ``loss`` / ``top1`` / ``top5`` and each peer's as ``peer{k}_loss`` / ``peer{k}_top1`` /
``peer{k}_top5``; ``peer_eval_models()`` gives the peers for separate evaluation, ``peer_state_dicts`` /
``save_peer_weights`` split a checkpoint into one timm-loadable file per peer.
"""
import math
from contextlib import ExitStack
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.task import ClassificationEvaluator, TrainingTask
from timm.task.classification import resolve_classification_loss
from timm.utils import unwrap_model
from torch.nn.parallel import DistributedDataParallel as DDP

from timm_mixplug.loss.mutual import KL_REDUCTIONS, dml_losses
from timm_mixplug.task.classification import resolve_eval_model
from timm_mixplug.task.evaluators import ShotAccuracyEvaluator
from timm_mixplug.utils.checkpoint import save_weights

__all__ = [
    'DMLEnsemble', 'DMLTask', 'DMLEvaluator', 'peer_state_dicts',
    'save_peer_weights',
]

class DMLEnsemble(nn.ModuleList):
    """The peers as one eval model: log of the mean of the peers' softmax, (B, C).

    A ``ModuleList``, so its state dict has the trainable module's keys (``0.*``, ``1.*``, ...).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(torch.stack([m(x) for m in self]))

    @staticmethod
    def combine(logits: torch.Tensor) -> torch.Tensor:
        """(K, B, C) peer logits -> (B, C) log mean softmax."""
        return torch.logsumexp(F.log_softmax(logits.float(), dim=-1), dim=0) - math.log(logits.shape[0])


def _as_ensemble(module: nn.Module) -> DMLEnsemble:
    if isinstance(module, DMLEnsemble):
        return module
    ens = DMLEnsemble.__new__(DMLEnsemble)  # share the peers without copying or re-registering parameters
    nn.Module.__init__(ens)
    ens._modules = module._modules
    ens.training = module.training
    return ens


class DMLEvaluator:
    """Ensemble and per-peer loss / top-1 / top-5 (%), from ``DMLTask.eval_forward`` output (K+1, B, C):
    the K peers' logits then the ensemble's log-probabilities. A plain (B, C) output counts as the ensemble.
    With ``train_counts`` the ensemble also gets many / medium / few-shot top-1 (long-tailed data).
    Use ``DMLEvaluator.for_peers(K, long_tail)`` to get the class whose ``metric_names`` list every metric.
    """

    default_metric = 'top1'
    metric_names = ('loss', 'top1', 'top5')
    num_peers = 2

    def __init__(self, device=None, *, max_samples: Optional[int] = None, train_counts=None, num_peers=None):
        if num_peers is not None:
            self.num_peers = num_peers
        if train_counts is not None:
            self.ensemble = ShotAccuracyEvaluator(train_counts, device, max_samples=max_samples)
        else:
            self.ensemble = ClassificationEvaluator(device, max_samples=max_samples)
        self.peers = [ClassificationEvaluator(device, max_samples=max_samples) for _ in range(self.num_peers)]
        self.has_peers = False  # True once (K+1, B, C) outputs were seen

    @staticmethod
    @lru_cache(maxsize=None)
    def for_peers(num_peers: int, long_tail: bool = False) -> type:
        names = ('loss', 'top1', 'top5') + (('many', 'medium', 'few') if long_tail else ())
        for k in range(num_peers):
            names += (f'peer{k}_loss', f'peer{k}_top1', f'peer{k}_top5')
        return type(f'DMLEvaluator{num_peers}', (DMLEvaluator,), dict(metric_names=names, num_peers=num_peers))

    def reset(self):
        self.ensemble.reset()
        for e in self.peers:
            e.reset()
        self.has_peers = False

    @torch.no_grad()
    def update(self, output, target):
        if output.ndim == 2:
            self.ensemble.update(output, target)
            return
        if output.ndim != 3 or output.shape[0] != self.num_peers + 1:
            raise ValueError(f'DMLEvaluator expects ({self.num_peers + 1}, batch, classes) outputs from '
                             f'DMLTask.eval_forward, got {tuple(output.shape)}.')
        self.has_peers = True
        for e, o in zip(self.peers, output[:-1]):
            e.update(o, target)
        self.ensemble.update(output[-1], target)

    def _merge(self, ens, peers):
        out = dict(ens)
        for k, m in enumerate(peers):
            for name in ('loss', 'top1', 'top5'):
                out[f'peer{k}_{name}'] = m[name]
        return out

    def summary(self):
        return self._merge(self.ensemble.summary(), [e.summary() for e in self.peers] if self.has_peers else [])

    def compute(self, distributed=False):
        peers = [e.compute(distributed) for e in self.peers] if self.has_peers else []
        return self._merge(self.ensemble.compute(distributed), peers)


class DMLTask(TrainingTask):
    """Deep Mutual Learning of K >= 2 peers (see the module docstring for the loss and update order).

    Args:
        peers: the peer models (timm models; same or different architectures, same ``num_classes``).
        criterion: task loss ``criterion(logits, target)`` (CE, or soft-target CE / KL for mixed batches);
            created with ``create_classification_loss(**criterion_kwargs)`` when None.
        kl_weight: weight w of the mimicry term (1 in the paper).
        temperature: softmax temperature T of the mimicry term (1 in the paper); the KL is scaled by T^2.
        kl_reduction: 'mean' over the other peers (paper) or 'sum' (reference code); equal for K = 2.
        train_counts: per-class training counts; the evaluator then adds many / medium / few-shot accuracy.

    ``forward(input, target)`` returns ``loss`` (sum over peers of L_i), ``output`` (peer 0's logits),
    ``task_loss`` / ``kl_loss`` (means over peers) and ``peer{k}_task`` / ``peer{k}_kl`` per peer.
    """

    def __init__(
            self,
            peers: Sequence[nn.Module],
            criterion: Optional[Union[nn.Module, Callable]] = None,
            criterion_kwargs: Optional[Dict[str, Any]] = None,
            kl_weight: float = 1.0,
            temperature: float = 1.0,
            kl_reduction: str = 'mean',
            train_counts: Optional[Sequence[int]] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        peers = list(peers)
        if len(peers) < 2:
            raise ValueError(f'DMLTask needs at least 2 peer models, got {len(peers)}.')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}.')
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f'kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}.')
        ncls = {getattr(unwrap_model(p), 'num_classes', None) for p in peers} - {None}
        if len(ncls) > 1:
            raise ValueError(f'all DML peers must predict the same classes, got num_classes {sorted(ncls)}.')
        self.trainable_module = nn.ModuleList(peers)
        self.criterion = resolve_classification_loss(criterion, self.device, criterion_kwargs=criterion_kwargs)
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)
        self.kl_reduction = kl_reduction
        self.train_counts = list(train_counts) if train_counts is not None else None
        self.__dict__['_ddp_peers'] = None  # DDP wrappers live outside the module tree (stable state-dict keys)

    @property
    def num_peers(self) -> int:
        return len(unwrap_model(self.trainable_module))

    # ---- distributed / compile ----
    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> 'DMLTask':
        """Wrap every peer in its own ``DistributedDataParallel``; the trainable module keeps the bare peers."""
        self.__dict__['_ddp_peers'] = [DDP(p, device_ids=device_ids, **ddp_kwargs) for p in self.trainable_module]
        return self

    def _train_peers(self) -> List[nn.Module]:
        return self._ddp_peers if self._ddp_peers is not None else list(self.trainable_module)

    def no_sync(self):
        stack = ExitStack()
        for p in self._ddp_peers or ():
            stack.enter_context(p.no_sync())
        return stack

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """Compile each peer's forward in place (parameters and state-dict keys unchanged)."""
        for p in self.trainable_module:
            p.compile(backend=backend, mode=mode, **compile_kwargs)
        return self.get_eval_model()

    def get_clip_parameters(self, exclude_head: bool = False):
        """All peers' parameters; ``exclude_head`` (AGC) drops every peer's classifier (its last 2 tensors)."""
        params = []
        for p in unwrap_model(self.trainable_module):
            ps = list(p.parameters())
            params.extend(ps[:-2] if exclude_head else ps)
        return params

    # ---- evaluation ----
    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        return resolve_eval_model(self, module, ema, _as_ensemble)

    def peer_eval_models(self, ema: bool = False) -> List[nn.Module]:
        """The peers (bare modules, or the EMA copies) for separate evaluation."""
        module = self.get_trainable_module(ema=ema)
        return [] if module is None else list(unwrap_model(module))

    @torch.no_grad()
    def eval_forward(self, input: torch.Tensor, ema: bool = False) -> torch.Tensor:
        """(K + 1, B, C): each peer's logits, then the ensemble's log-probabilities (for ``DMLEvaluator``)."""
        logits = torch.stack([m(input).float() for m in self.peer_eval_models(ema=ema)])
        return torch.cat([logits, DMLEnsemble.combine(logits)[None]])

    def create_evaluator(self, **kwargs):
        cls = DMLEvaluator.for_peers(self.num_peers, self.train_counts is not None)
        return cls(device=self.device, train_counts=self.train_counts, **kwargs)

    # ---- training ----
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every peer on the same (mixed) batch; loss = sum_i [L_task(z_i, y) + mimicry_i]."""
        logits = [p(input) for p in self._train_peers()]
        task = torch.stack([self.criterion(z, target).float() for z in logits])
        kl = dml_losses(torch.stack(logits), self.kl_weight, self.temperature, self.kl_reduction)
        out = {
            'loss': (task + kl).sum(),
            'output': logits[0],
            'task_loss': task.detach().mean(),
            'kl_loss': kl.detach().mean(),
        }
        for k in range(len(logits)):
            out[f'peer{k}_task'] = task[k].detach()
            out[f'peer{k}_kl'] = kl[k].detach()
        return out


# ---- checkpoints ----

def peer_state_dicts(state_dict: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
    """Split a DML state dict (keys ``<k>.<name>``) into one plain timm state dict per peer."""
    peers: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, v in state_dict.items():
        head, _, rest = key.partition('.')
        if not head.isdigit() or not rest:
            raise ValueError(f'not a DML peer key: {key!r} (expected "<peer index>.<parameter>")')
        peers.setdefault(int(head), {})[rest] = v
    if sorted(peers) != list(range(len(peers))):
        raise ValueError(f'DML state dict has peers {sorted(peers)}, expected 0..{len(peers) - 1}.')
    return [peers[k] for k in range(len(peers))]


def save_peer_weights(task_or_state: Union[DMLTask, Dict[str, torch.Tensor]], path_pattern: str,
                      ema: bool = False, **meta) -> List[str]:
    """Write each peer to ``path_pattern.format(k)`` (e.g. ``'best-peer{}.safetensors'``), timm-loadable."""
    if isinstance(task_or_state, DMLTask):
        sd = unwrap_model(task_or_state.get_eval_model(ema=ema)).state_dict()
    else:
        sd = task_or_state
    paths = []
    for k, psd in enumerate(peer_state_dicts(sd)):
        path = path_pattern.format(k)
        save_weights(path, psd, peer=k, **meta)
        paths.append(path)
    return paths
