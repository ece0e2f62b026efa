"""Auxiliary tasks trained alongside classification on any timm backbone (Y. Yamada, M. Iwamura and K. Kise,
"画像分類精度を向上させる追加タスクの検討" [auxiliary tasks that improve image classification accuracy], IEICE
Technical Report).

Label tasks (sec. 3.1): ``superclass`` (the class hierarchy, e.g. CIFAR-100's 20 superclasses) and
``random_labels`` (one fixed random label per training image, seeded; the table is saved in the checkpoint's
task state). Augmentation-prediction tasks (sec. 3.2), with targets recorded by the batch-level transforms in
``data.transforms``: ``crop_pos`` (9-way, 3x3 grid over the 9x9 crop offsets), ``cutout`` (per-pixel
binary segmentation of the hole), ``ricap`` (per-pixel 4-way segmentation: which of the TL/TR/BL/BR images).

``AuxHeadModel(backbone, tasks)`` adds one head per task through timm's public feature API
(``forward_features``, ``forward_head(pre_logits=True)``) and returns ``(logits, {task: output})``; label heads
are linear on the pre-logits, segmentation heads a 1x1 conv on the spatial feature map (ViT-style token
outputs drop the prefix tokens and are reshaped to the patch grid) followed by a pixel shuffle when the map is
coarser than ``seg_grid`` and a bilinear upsample to the input size. ``export()`` is the plain timm backbone
(same keys as ``timm.create_model``, no auxiliary weights). ``AuxTask`` is the ``timm.task.TrainingTask``:
loss = CE(main) + sum_k weight_k * loss_k, per-task losses / accuracies returned as extra scalars.
"""
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from timm.models import group_parameters
from timm.utils.model import unwrap_model
from torch.utils.data import default_collate

from timm_mixplug.data.transforms import DeviceAugment, crop_position_class
from timm_mixplug.data.wrappers import ForwardingDatasetWrapper
from timm_mixplug.task.base import SingleModuleTask
from timm_mixplug.task.classification import resolve_eval_model

__all__ = [
    'AUX_TASKS', 'AuxTaskSpec', 'AuxHeadModel', 'AuxTask', 'IndexedDataset', 'aux_collate', 'parse_aux_tasks',
    'spatial_features', 'AUGMENT_TASKS',
]

# name -> (kind, fixed number of outputs or None)
AUX_TASKS: Dict[str, Tuple[str, Optional[int]]] = {
    'superclass': ('label', None),
    'random_labels': ('label', None),
    'crop_pos': ('label', 9),
    'cutout': ('seg', 1),
    'ricap': ('seg', 4),
}
AUGMENT_TASKS = ('crop_pos', 'cutout', 'ricap')


@dataclass
class AuxTaskSpec:
    """One auxiliary task: ``kind`` 'label' (linear head on pre-logits) or 'seg' (per-pixel head)."""
    name: str
    num_outputs: int
    kind: str = 'label'
    weight: float = 1.0


# ----------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------
def _token_grid(backbone: nn.Module, img_hw: Tuple[int, int], num_tokens: int) -> Tuple[int, int]:
    pe = getattr(backbone, 'patch_embed', None)
    if pe is not None:
        if hasattr(pe, 'dynamic_feat_size'):
            gh, gw = pe.dynamic_feat_size(tuple(img_hw))
        else:
            gh, gw = getattr(pe, 'grid_size', (0, 0))
        if gh * gw == num_tokens:
            return int(gh), int(gw)
    side = int(round(math.sqrt(num_tokens)))
    if side * side == num_tokens:
        return side, side
    raise ValueError(f'Cannot arrange {num_tokens} tokens of {type(backbone).__name__} on a grid; segmentation '
                     f'heads need a square token grid or a patch_embed with grid_size.')


def spatial_features(backbone: nn.Module, feats: torch.Tensor, img_hw: Tuple[int, int]) -> torch.Tensor:
    """``forward_features`` output -> (B, C, h, w): NCHW maps pass, NHWC maps (``output_fmt='NHWC'``, e.g.
    Swin) are permuted, token sequences (B, N, C) drop ``num_prefix_tokens`` (class / register tokens) and are
    reshaped to the patch grid."""
    if feats.ndim == 4:
        if getattr(backbone, 'output_fmt', 'NCHW') == 'NHWC':
            feats = feats.permute(0, 3, 1, 2)
        return feats
    if feats.ndim == 3:
        tokens = feats[:, int(getattr(backbone, 'num_prefix_tokens', 0) or 0):]
        gh, gw = _token_grid(backbone, img_hw, tokens.shape[1])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
    raise ValueError(f'Unsupported forward_features output shape {tuple(feats.shape)}')


class SegHead(nn.Module):
    """1x1 conv (C -> K * r^2), pixel shuffle by r (r = 1 for maps at least ``seg_grid`` wide), bilinear
    upsample to the input size. r > 1 lets a coarse map (a 1x1 map from an ImageNet ResNet at 32 px) still
    predict position-dependent masks."""

    def __init__(self, in_chs: int, num_outputs: int, upscale: int = 1):
        super().__init__()
        self.upscale = upscale
        self.conv = nn.Conv2d(in_chs, num_outputs * upscale * upscale, kernel_size=1)

    def forward(self, fmap: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
        y = self.conv(fmap)
        if self.upscale > 1:
            y = F.pixel_shuffle(y, self.upscale)
        if tuple(y.shape[-2:]) != tuple(out_hw):
            y = F.interpolate(y, size=tuple(out_hw), mode='bilinear', align_corners=False)
        return y


def _resolve_input_size(backbone: nn.Module, input_size) -> Tuple[int, int, int]:
    if input_size is not None:
        size = tuple(input_size)
        return (3, *size) if len(size) == 2 else size
    pe = getattr(backbone, 'patch_embed', None)
    chans = getattr(backbone, 'in_chans', 3) or 3
    if pe is not None and getattr(pe, 'img_size', None) is not None and not getattr(pe, 'dynamic_img_size', False):
        return (chans, *pe.img_size)
    cfg = getattr(backbone, 'pretrained_cfg', None) or {}
    return tuple(cfg.get('input_size', (chans, 224, 224)))


class AuxHeadModel(nn.Module):
    """A timm backbone plus one head per auxiliary task. ``forward(x) -> (logits, {name: aux output})``;
    label heads give (B, K), segmentation heads (B, K, H, W) at the input size.

    Args:
        backbone: any ``timm.create_model`` model (uses ``forward_features`` / ``forward_head``).
        tasks: ``AuxTaskSpec`` list.
        input_size: (C, H, W) or (H, W) used for one dry run that sizes the heads (default: the backbone's
            fixed patch-embed size or pretrained_cfg input_size).
        seg_grid: minimum resolution segmentation heads predict at before the bilinear upsample.
    """

    def __init__(self, backbone: nn.Module, tasks: Sequence[AuxTaskSpec], input_size=None, seg_grid: int = 8):
        super().__init__()
        self.backbone = backbone
        self.specs = {t.name: t for t in tasks}
        if len(self.specs) != len(tasks):
            raise ValueError('Auxiliary task names must be unique.')
        c, h, w = _resolve_input_size(backbone, input_size)
        ref = next(backbone.parameters(), None)
        dummy = torch.zeros(1, c, h, w, device=ref.device if ref is not None else None,
                            dtype=ref.dtype if ref is not None and ref.is_floating_point() else None)
        was_training = backbone.training
        backbone.train(False)
        with torch.no_grad():
            feats = backbone.forward_features(dummy)
            pre_dim = backbone.forward_head(feats, pre_logits=True).shape[-1]
            fmap = spatial_features(backbone, feats, (h, w)) if any(t.kind == 'seg' for t in tasks) else None
        backbone.train(was_training)
        self.aux_heads = nn.ModuleDict()
        for t in tasks:
            if t.kind == 'label':
                head = nn.Linear(pre_dim, t.num_outputs)
            elif t.kind == 'seg':
                r = max(1, math.ceil(seg_grid / max(1, min(fmap.shape[-2:]))))
                head = SegHead(fmap.shape[1], t.num_outputs, r)
            else:
                raise ValueError(f'Unknown auxiliary head kind {t.kind!r}')
            self.aux_heads[t.name] = head.to(device=dummy.device, dtype=dummy.dtype)
        self._has_seg = any(t.kind == 'seg' for t in tasks)
        self._has_label = any(t.kind == 'label' for t in tasks)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        feats = self.backbone.forward_features(x)
        logits = self.backbone.forward_head(feats)
        aux: Dict[str, torch.Tensor] = {}
        pre = self.backbone.forward_head(feats, pre_logits=True) if self._has_label else None
        fmap = spatial_features(self.backbone, feats, x.shape[-2:]) if self._has_seg else None
        for name, head in self.aux_heads.items():
            aux[name] = head(pre) if self.specs[name].kind == 'label' else head(fmap, x.shape[-2:])
        return logits, aux

    def export(self) -> nn.Module:
        """The plain timm model (no auxiliary weights) for evaluation and checkpoints of record."""
        return self.backbone

    def plain_state_dict(self) -> Dict[str, torch.Tensor]:
        """State dict that loads into ``timm.create_model(<same name>)`` with strict=True."""
        return self.backbone.state_dict()

    # timm optimizer / data helpers see through the wrapper
    def no_weight_decay(self):
        nwd = getattr(self.backbone, 'no_weight_decay', None)
        return {'backbone.' + n for n in nwd()} if nwd is not None else set()

    def group_matcher(self, coarse: bool = False):
        if not hasattr(self.backbone, 'group_matcher'):
            raise AttributeError(f'{type(self.backbone).__name__} has no group_matcher')
        layer_map = group_parameters(self.backbone, self.backbone.group_matcher(coarse=coarse), reverse=True)
        last = max(layer_map.values(), default=0)

        def _matcher(name):
            if name.startswith('backbone.'):
                return layer_map.get(name[len('backbone.'):], last)
            return last  # auxiliary heads sit with the classifier
        return _matcher

    @property
    def pretrained_cfg(self):
        return getattr(self.backbone, 'pretrained_cfg', {})

    @property
    def default_cfg(self):
        return self.pretrained_cfg


# ----------------------------------------------------------------------------------------------------------
# data: label + sample index (for random labels)
# ----------------------------------------------------------------------------------------------------------
class IndexedDataset(ForwardingDatasetWrapper):
    """``(image, label)`` -> ``(image, LongTensor([label, index]))``. The packed (B, 2) target survives timm's
    ``fast_collate`` / prefetcher unchanged; ``aux_collate`` makes it a dict instead. ``transform`` passes
    through to the wrapped dataset (timm's ``create_loader`` sets it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img, label = self.dataset[i]
        return img, torch.tensor([int(label), i], dtype=torch.long)


def aux_collate(batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """list[(image tensor, [label, index])] -> (images (B, ...), {'label': (B,), 'index': (B,)})."""
    images, packed = default_collate(batch)
    packed = torch.as_tensor(packed)
    if packed.ndim == 1:
        return images, {'label': packed.long()}
    return images, {'label': packed[:, 0].long(), 'index': packed[:, 1].long()}


# ----------------------------------------------------------------------------------------------------------
# task
# ----------------------------------------------------------------------------------------------------------
def parse_aux_tasks(tasks: Union[str, Sequence[str]], weights: Union[None, str, Sequence[float],
                    Mapping[str, float]] = None) -> Dict[str, float]:
    """'superclass,crop_pos' + weights ('0.5,1', 'crop_pos=0.5', [0.5, 1.0] or a dict) -> {name: weight}."""
    names = [t.strip() for t in (tasks.split(',') if isinstance(tasks, str) else tasks) if t and t.strip()]
    unknown = [n for n in names if n not in AUX_TASKS]
    if unknown:
        raise ValueError(f'Unknown auxiliary task(s) {unknown}; known: {", ".join(AUX_TASKS)}')
    if len(set(names)) != len(names):
        raise ValueError(f'Auxiliary tasks listed twice: {names}')
    out = {n: 1.0 for n in names}
    if weights is None or weights == '':
        return out
    if isinstance(weights, str):
        parts = [p.strip() for p in weights.split(',') if p.strip()]
        if all('=' in p for p in parts):
            weights = {k.strip(): float(v) for k, v in (p.split('=', 1) for p in parts)}
        else:
            weights = [float(p) for p in parts]
    if isinstance(weights, Mapping):
        extra = set(weights) - set(out)
        if extra:
            raise ValueError(f'Weights given for tasks not in the list: {sorted(extra)}')
        out.update({k: float(v) for k, v in weights.items()})
    else:
        weights = list(weights)
        if len(weights) == 1:
            weights = weights * len(names)
        if len(weights) != len(names):
            raise ValueError(f'{len(weights)} weights for {len(names)} auxiliary tasks')
        out = dict(zip(names, map(float, weights)))
    return out


def _accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == target).float().mean()


class AuxTask(SingleModuleTask):
    """Classification plus auxiliary tasks (Yamada, Iwamura and Kise, "画像分類精度を向上させる追加タスクの検討", IEICE Technical Report) as a timm ``TrainingTask``.

    ``forward(input, target)``: ``input`` (B, C, H, W) normalized images (without crop/flip when ``augment``
    does them); ``target`` int labels (B,), packed ``[label, index]`` (B, 2) from ``IndexedDataset``, or a dict
    with ``label`` (+ ``index``, and optionally pre-recorded ``crop_dx``/``crop_dy``/``flip``,
    ``cutout_mask``, ``ricap_region``, ``soft_target``). ``augment`` (a ``DeviceAugment``) crops / flips /
    cuts out / RICAPs the batch on the device and records the targets. Returns ``loss``, ``output`` (main
    logits), ``loss_main`` and ``aux_<task>_loss`` / ``aux_<task>_acc`` for every task.

    Args:
        model: timm backbone (wrapped in an ``AuxHeadModel`` here) or an ``AuxHeadModel``.
        aux_tasks: {name: weight} (see ``parse_aux_tasks``) or names.
        num_classes: main classes (RICAP targets, default random-label count).
        hierarchy: object with ``class_to_super`` and ``num_superclasses`` (``load_hierarchy``) for 'superclass'.
        num_samples: training-set size for 'random_labels'; random_classes / random_seed: its label count / seed.
        augment: ``DeviceAugment`` recording crop / cutout / RICAP parameters (required by those tasks).
        mixer: optional timm-Mixup-like mixer for the main task (only with the 'superclass' task, whose target is
            then the mixed class target summed per superclass).
        criterion: main loss for soft (mixed) targets, e.g. the ``--mix`` method's loss (default soft-target CE).
        label_smoothing: for the main CE with hard labels.
        input_size, seg_grid: see ``AuxHeadModel``. crop_grid / crop_flip_aware: crop-position target options
            (``crop_position_class``; flip-aware by default, the paper used the pre-flip offset).
    """

    def __init__(
            self,
            model: nn.Module,
            aux_tasks: Union[Mapping[str, float], Sequence[str], str],
            num_classes: int,
            hierarchy: Any = None,
            num_samples: Optional[int] = None,
            random_classes: Optional[int] = None,
            random_seed: int = 0,
            augment: Optional[DeviceAugment] = None,
            mixer: Optional[Callable] = None,
            criterion: Optional[Callable] = None,
            label_smoothing: float = 0.0,
            input_size=None,
            seg_grid: int = 8,
            crop_grid: int = 3,
            crop_flip_aware: bool = True,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        weights = aux_tasks if isinstance(aux_tasks, Mapping) else parse_aux_tasks(aux_tasks)
        weights = parse_aux_tasks(list(weights), dict(weights))
        self.num_classes = num_classes
        self.augment = augment
        self.mixer = mixer
        self.crop_grid = crop_grid
        self.crop_flip_aware = crop_flip_aware
        self._check_config(weights, augment, mixer, hierarchy, num_samples)

        specs = []
        for name, w in weights.items():
            kind, k = AUX_TASKS[name]
            if name == 'superclass':
                k = int(hierarchy.num_superclasses)
                self.register_buffer('class_to_super', torch.as_tensor(
                    hierarchy.class_to_super).long().to(self.device), persistent=False)
            elif name == 'random_labels':
                k = int(random_classes or num_classes)
                g = torch.Generator().manual_seed(int(random_seed))
                self.register_buffer('random_labels', torch.randint(
                    0, k, (int(num_samples),), generator=g).to(self.device), persistent=False)
                self.random_seed = int(random_seed)
            elif name == 'crop_pos':
                k = crop_grid * crop_grid
            specs.append(AuxTaskSpec(name, k, kind, w))
        self.specs = specs
        if isinstance(unwrap_model(model), AuxHeadModel):
            aux_model = model
        else:
            aux_model = AuxHeadModel(model, specs, input_size=input_size, seg_grid=seg_grid)
        self.trainable_module = aux_model
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.soft_criterion = SoftTargetCrossEntropy()
        self.main_soft_criterion = criterion if criterion is not None else self.soft_criterion

    @staticmethod
    def _check_config(weights, augment, mixer, hierarchy, num_samples):
        names = set(weights)
        if 'superclass' in names and hierarchy is None:
            raise ValueError("The 'superclass' task needs a hierarchy (timm_mixplug.load_hierarchy(...)).")
        if 'superclass' in names and torch.as_tensor(hierarchy.class_to_super).unique().numel() < 2:
            raise ValueError("The 'superclass' task needs a hierarchy with classes in 2 or more superclasses; with "
                             "one, its target is constant (loss 0, accuracy 1).")
        if 'random_labels' in names and not num_samples:
            raise ValueError("The 'random_labels' task needs num_samples (training-set size) and sample indices "
                             "in the target (wrap the dataset in IndexedDataset).")
        if 'crop_pos' in names and (augment is None or not augment.padding):
            raise ValueError("The 'crop_pos' task needs augment=DeviceAugment(padding>0) (crop on the device; "
                             "the loader must not crop).")
        if 'cutout' in names and (augment is None or not augment.cutout_length):
            raise ValueError("The 'cutout' task needs augment=DeviceAugment(cutout_length>0).")
        if 'ricap' in names and (augment is None or not augment.ricap_beta):
            raise ValueError("The 'ricap' task needs augment=DeviceAugment(ricap_beta>0).")
        if augment is not None and augment.ricap_beta and names & {'random_labels', 'crop_pos'}:
            raise ValueError('random_labels / crop_pos targets are undefined on RICAP-combined images.')
        if mixer is not None and (names - {'superclass'} or (augment is not None and augment.ricap_beta)):
            raise ValueError('With a mixer only the superclass task is defined (its target is the mixed target '
                             'summed per superclass); augmentation / random-label targets need unmixed images.')

    # -- timm task plumbing -----------------------------------------------------------------------------------
    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        backbone = unwrap_model(self.trainable_module).backbone
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = torch.compile(backbone, backend=backend, mode=mode, **compile_kwargs)
        return self.eval_model

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The plain timm backbone (validation and checkpoints of record carry no auxiliary weights)."""
        return resolve_eval_model(self, module, ema, lambda m: m.backbone if isinstance(m, AuxHeadModel) else m)

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """Auxiliary heads (so resuming restores them) and the random-label table."""
        module = module if module is not None else self.get_trainable_module(ema=ema)
        if module is None:
            return {}
        inner = unwrap_model(module)
        state: Dict[str, Any] = {'aux_tasks': [asdict(s) for s in self.specs]}
        if isinstance(inner, AuxHeadModel):
            state['aux_heads'] = {k: v.detach().cpu() for k, v in inner.aux_heads.state_dict().items()}
        if hasattr(self, 'random_labels'):
            state['random_labels'] = self.random_labels.cpu().clone()
            state['random_seed'] = self.random_seed
        return state

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True,
                        module: Optional[nn.Module] = None, ema: bool = False) -> None:
        if not state:
            return
        module = module if module is not None else self.get_trainable_module(ema=ema)
        inner = unwrap_model(module) if module is not None else None
        if 'aux_heads' in state and isinstance(inner, AuxHeadModel):
            inner.aux_heads.load_state_dict(state['aux_heads'], strict=strict)
        if 'random_labels' in state and hasattr(self, 'random_labels'):
            table = torch.as_tensor(state['random_labels'])
            if strict and table.shape != self.random_labels.shape:
                raise ValueError(f'Random-label table of {tuple(table.shape)} does not match this dataset '
                                 f'({tuple(self.random_labels.shape)}).')
            self.random_labels = table.to(self.random_labels.device)

    # -- step -------------------------------------------------------------------------------------------------
    @staticmethod
    def unpack_target(target) -> Dict[str, torch.Tensor]:
        if isinstance(target, Mapping):
            return dict(target)
        if target.ndim == 2 and not target.is_floating_point():
            return {'label': target[:, 0], 'index': target[:, 1]}
        if target.ndim == 1 and not target.is_floating_point():
            return {'label': target}
        raise ValueError('AuxTask expects int labels (B,), packed [label, index] (B, 2) or a dict target; mix '
                         'inside the task (mixer=...) rather than in the loader.')

    def forward(self, input: torch.Tensor, target) -> Dict[str, torch.Tensor]:
        record = self.unpack_target(target)
        label = record['label']
        x = input
        if self.augment is not None:
            x, rec = self.augment(x, label)
            record.update(rec)
        main_target = record.get('soft_target', label)
        if self.mixer is not None:
            x, main_target = self.mixer(x, label)
        logits, aux = self.trainable_module(x)
        if main_target.is_floating_point():
            loss_main = self.main_soft_criterion(logits, main_target)
        else:
            loss_main = self.criterion(logits, main_target)
        total = loss_main
        out = {'output': logits, 'loss_main': loss_main.detach()}
        for spec in self.specs:
            loss, acc = self._aux_loss(spec, aux[spec.name], record, main_target)
            total = total + spec.weight * loss
            out[f'aux_{spec.name}_loss'] = loss.detach()
            out[f'aux_{spec.name}_acc'] = acc
        out['loss'] = total
        return out

    def _aux_loss(self, spec: AuxTaskSpec, pred: torch.Tensor, record: Dict[str, torch.Tensor],
                  main_target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        name = spec.name
        with torch.no_grad():
            if name == 'superclass':
                if main_target.is_floating_point():  # soft class target -> soft superclass target
                    t = torch.zeros(main_target.shape[0], spec.num_outputs, device=pred.device,
                                    dtype=main_target.dtype).index_add_(1, self.class_to_super, main_target)
                else:
                    t = self.class_to_super[record['label']]
            elif name == 'random_labels':
                if 'index' not in record:
                    raise ValueError("random_labels needs sample indices: wrap the training set in IndexedDataset.")
                t = self.random_labels[record['index']]
            elif name == 'crop_pos':
                t = record.get('crop_pos')
                if t is None:
                    t = crop_position_class(record['crop_dx'], record['crop_dy'], self.augment.padding,
                                            self.crop_grid, record['flip'] if self.crop_flip_aware else None)
            elif name == 'cutout':
                t = record['cutout_mask']
            elif name == 'ricap':
                t = record['ricap_region']
            else:
                raise ValueError(name)
        if name == 'cutout':
            logit = pred[:, 0].float()
            mask = t.to(logit.dtype)
            loss = F.binary_cross_entropy_with_logits(logit, mask)
            acc = ((logit.detach() > 0) == t.bool()).float().mean()
        elif t.is_floating_point():
            loss = self.soft_criterion(pred, t)
            acc = _accuracy(pred.detach(), t.argmax(dim=1))
        else:
            loss = F.cross_entropy(pred.float(), t)
            acc = _accuracy(pred.detach(), t)
        return loss, acc
