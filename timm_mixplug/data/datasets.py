"""Dataset creation for train.py: timm's ``create_dataset`` plus built-in offline datasets.

Built-in names (``--dataset mixplug/<name>``, no download, no ``--data-dir``):

* ``mixplug/digits``: scikit-learn's handwritten digits (1797 8x8 images, 10 classes, shipped inside the
  scikit-learn package), upsampled bilinearly to 32x32 RGB (``--dataset mixplug/digits@16`` for 16x16).
  A fixed stratified split keeps 20% (36 per class) as ``validation``/``val``/``test``.

``--dataset npz --data-dir DIR``: ``DIR/<split>.npz`` arrays (``x`` uint8 images, ``y`` labels).

``make_image_folder`` writes a tiny generated ImageFolder (``root/train/<class>/*.png``,
``root/validation/...``) for tests and benchmarks.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from timm_mixplug.errors import UsageError
from timm_mixplug.train.specs.base import DataInfo

__all__ = ['ArrayImageDataset', 'NpzDataset', 'DigitsDataset', 'create_datasets', 'dataset_info', 'make_image_folder', 'apply_pad_crop',
           'BUILTIN_DATASETS']

_TRAIN_SPLITS = ('train', 'training')
_EVAL_SPLITS = ('val', 'valid', 'validation', 'eval', 'evaluation', 'test')


class ArrayImageDataset(Dataset):
    """Images held in memory as a uint8 (N, H, W, 3) array with integer labels; timm sets ``transform``."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: Sequence[str], transform=None):
        self.images = images
        self.targets = [int(t) for t in targets]
        self.classes = [str(c) for c in classes]
        self.transform = transform
        self.target_transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.images[index], mode='RGB')
        if self.transform is not None:
            img = self.transform(img)
        target = self.targets[index]
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class NpzDataset(ArrayImageDataset):
    """``--dataset npz``: ``<data-dir>/<split>.npz`` with ``x`` (N, H, W, 3) or (N, H, W) uint8, ``y`` labels and
    optionally ``classes`` (e.g. the CIFAR-10 files in ``../shared/data``)."""

    def __init__(self, root: str, split: str, transform=None, flag: str = '--train-split'):
        path = os.path.join(root, split if split.endswith('.npz') else split + '.npz')
        if not os.path.isfile(path):
            have = sorted(f[:-4] for f in os.listdir(root) if f.endswith('.npz'))
            raise UsageError(f'{flag} {split!r}: no {path}; the splits in --data-dir are: '
                             f'{", ".join(have) or "none (no .npz files)"}')
        with np.load(path, allow_pickle=False) as f:
            if 'x' not in f or 'y' not in f:
                raise UsageError(f'{path} needs arrays "x" (images) and "y" (labels), has {sorted(f.keys())}')
            x, y = f['x'], f['y'].astype(np.int64)
            self.classes_given = 'classes' in f  # else the names are the label numbers
            classes = f['classes'].tolist() if self.classes_given else [str(c) for c in range(int(y.max()) + 1)]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise UsageError(f'{path}: "x" must be uint8 (N, H, W[, 3]), got {x.dtype} {x.shape}')
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(f'{path}: "y" must hold one label per image ({len(x)}), got shape {y.shape}')
        outside = np.unique(y[(y < 0) | (y >= len(classes))])
        if outside.size:
            raise UsageError(f'{path}: labels {outside[:5].tolist()} lie outside its {len(classes)} classes')
        if x.ndim == 3:
            x = np.repeat(x[..., None], 3, axis=-1)
        super().__init__(x, y, classes, transform)


class DigitsDataset(ArrayImageDataset):
    """scikit-learn's digits as an RGB image dataset that timm's ``create_loader`` can transform."""

    def __init__(self, split: str = 'train', img_size: int = 32, val_per_class: int = 36, transform=None,
                 flag: str = '--train-split'):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UsageError('--dataset mixplug/digits needs scikit-learn: pip install "timm_mixplug[quickstart]"'
                             ) from None
        split = split.split('[')[0].lower()
        if split not in _TRAIN_SPLITS + _EVAL_SPLITS:
            raise UsageError(f"{flag} {split!r}: mixplug/digits has the splits 'train' and 'validation'")
        digits = load_digits()
        x = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
        x = F.interpolate(x, size=(img_size, img_size), mode='bilinear', align_corners=False)
        gray = x.squeeze(1).mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
        y = digits.target.astype(np.int64)
        # fixed stratified split: the first val_per_class images of each class (in a seeded order) are held out
        order = np.random.RandomState(0).permutation(len(y))
        rank = np.empty(len(y), dtype=np.int64)
        for c in range(10):  # 10 classes, not a per-sample loop
            idx = order[y[order] == c]
            rank[idx] = np.arange(len(idx))
        keep = rank < val_per_class if split in _EVAL_SPLITS else rank >= val_per_class
        super().__init__(np.repeat(gray[keep][..., None], 3, axis=-1), y[keep], [str(c) for c in range(10)],
                         transform)


def _create_digits(name: str, split: str, flag: str) -> Dataset:
    size = 32
    if '@' in name:
        try:
            size = int(name.split('@', 1)[1])
        except ValueError:
            raise UsageError(f'bad image size in --dataset {name!r} (use mixplug/digits@16)') from None
    return DigitsDataset(split=split, img_size=size, flag=flag)


BUILTIN_DATASETS: Dict[str, Callable[[str, str, str], Dataset]] = {'digits': _create_digits}


def _targets(ds) -> Optional[List[int]]:
    """Training labels of a map-style dataset, without loading images."""
    for obj in (ds, getattr(ds, 'dataset', None)):
        if obj is None:
            continue
        if hasattr(obj, 'targets'):
            return [int(t) for t in obj.targets]
        reader = getattr(obj, 'reader', None)
        if reader is not None and hasattr(reader, 'samples'):
            return [int(s[1]) for s in reader.samples]
    return None


def _class_names(ds) -> Optional[List[str]]:
    for obj in (ds, getattr(ds, 'dataset', None)):
        if obj is None:
            continue
        if hasattr(obj, 'classes'):
            return [str(c) for c in obj.classes]
        reader = getattr(obj, 'reader', None)
        c2i = getattr(reader, 'class_to_idx', None) if reader is not None else None
        if c2i:
            names = [''] * len(c2i)
            for name, i in c2i.items():
                if 0 <= i < len(names):
                    names[i] = str(name)
            return names
    return None


def dataset_info(ds, num_classes: Optional[int] = None, name: str = '') -> DataInfo:
    """Classes and per-class counts of a training dataset (``num_classes`` overrides the inferred count)."""
    targets = _targets(ds)
    names = _class_names(ds)
    inferred = len(names) if names else (max(targets) + 1 if targets else None)
    n = num_classes or inferred
    if not n:
        raise UsageError('cannot infer the number of classes of this dataset; pass --num-classes')
    counts = None
    if targets is not None:
        if targets and (min(targets) < 0 or max(targets) >= n):
            raise UsageError(f'dataset labels span {min(targets)}..{max(targets)} but --num-classes is {n}')
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=n).tolist()
    if names is not None and len(names) != n:
        names = None
    return DataInfo(num_classes=int(n), class_names=names, class_counts=counts, dataset_name=name)


_TORCH_SPLITS = _TRAIN_SPLITS + _EVAL_SPLITS


def _split_folder(root: str, split: str, flag: str) -> str:
    """``root/<split>`` (or a timm synonym of it: train/training, val/valid/validation/eval/evaluation); never
    ``root`` itself, which holds both splits."""
    if os.path.isfile(root):
        raise UsageError(f'--data-dir {root} is a file; both splits would read it: put them in folders '
                         f'<data-dir>/train, <data-dir>/validation')
    name = split.split('[')[0]
    group = _TRAIN_SPLITS if name in _TRAIN_SPLITS else (_EVAL_SPLITS[:-1] if name in _EVAL_SPLITS else ())
    for cand in (name,) + tuple(g for g in group if g != name):
        if os.path.isdir(os.path.join(root, cand)):
            return os.path.join(root, cand)
    have = sorted(e.name for e in os.scandir(root) if e.is_dir())
    raise UsageError(f'{flag} {split!r}: no folder {os.path.join(root, name)}; the folders in --data-dir are: '
                     f'{", ".join(have) or "none"} (set {flag} to one of them)')


def _create_one(args, split: str, is_training: bool, class_map=None):
    from timm.data import create_dataset
    from timm_mixplug.train.options import dataset_kwargs
    flag = '--train-split' if is_training else '--val-split'
    name = args.dataset or ''
    prefix, sep, rest = name.partition('/')
    if sep and prefix.lower() == 'mixplug':
        key = rest.split('@')[0].lower()
        if key not in BUILTIN_DATASETS:
            raise UsageError(f'unknown --dataset {name!r}; built-in: '
                             + ', '.join('mixplug/' + k for k in BUILTIN_DATASETS))
        return BUILTIN_DATASETS[key](rest, split, flag)
    root = args.data_dir
    if name.lower() == 'npz':
        if not root or not os.path.isdir(root):
            raise UsageError(f'--dataset npz needs --data-dir, the folder with the <split>.npz files (got {root!r})')
        return NpzDataset(root, split, flag=flag)
    torch_name = rest.lower() if sep and prefix.lower() == 'torch' else ''
    folder = not sep or prefix.lower() in ('folder', 'imagefolder', 'tar', 'imagetar') or torch_name in (
        'folder', 'image_folder')
    if not root:
        raise UsageError(f'--data-dir is required for dataset {name or "ImageFolder"!r} (with --dataset-download: '
                         f'where to download it), or use the offline --dataset mixplug/digits')
    if not os.path.exists(root) and (folder or not args.dataset_download):
        raise UsageError(f'data dir not found: {root}')
    if folder:
        root = _split_folder(root, split, flag)
    elif torch_name and torch_name not in ('inaturalist', 'inat', 'places365', 'imagenet') \
            and split.split('[')[0] not in _TORCH_SPLITS:
        raise UsageError(f'{flag} {split!r}: --dataset {name} has the splits train and test (synonyms: '
                         f'{", ".join(_TORCH_SPLITS)})')
    try:
        return create_dataset(
            name, root=root, split=split, search_split=False, is_training=is_training,
            class_map=class_map or args.class_map, download=args.dataset_download, batch_size=args.batch_size,
            seed=args.seed, input_img_mode=args.input_img_mode or 'RGB', **dataset_kwargs(args, is_training))
    except UsageError:
        raise
    except Exception as e:  # torchvision 'Dataset not found', empty folders, bad names...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f'cannot load dataset {name or "ImageFolder"!r} split {split!r} from {root}: {msg}'
                         ) from None


def _check_eval_classes(args, ds_train, ds_eval, num_classes: int):
    """The evaluation split must use the training split's classes with the same indices: a class only in the
    evaluation split, or a label outside the training classes, is an error; a folder split that lacks some
    training classes is re-read with the training split's class indices. Returns the evaluation dataset."""
    tr, ev = _class_names(ds_train), _class_names(ds_eval)
    split = f'--val-split {args.val_split!r}'
    named = getattr(ds_train, 'classes_given', True) and getattr(ds_eval, 'classes_given', True)
    if named and tr is not None and ev is not None and ev != tr[:len(ev)]:
        only = [c for c in ev if c not in tr]
        if only:
            raise UsageError(f'{split} has classes that --train-split {args.train_split!r} lacks: '
                             f'{", ".join(only[:5])}{" ..." if len(only) > 5 else ""}')
        if getattr(getattr(ds_eval, 'reader', None), 'class_to_idx', None) is None:
            raise UsageError(f'{split} lists its classes in another order than --train-split '
                             f'{args.train_split!r}; give both the same class list')
        ds_eval = _create_one(args, args.val_split, False, class_map={c: i for i, c in enumerate(tr)})
    targets = _targets(ds_eval)
    if targets:
        lo, hi = min(targets), max(targets)
        if lo < 0 or hi >= num_classes:
            raise UsageError(f'{split} has labels {lo}..{hi}, outside the {num_classes} training classes')
    return ds_eval


def create_datasets(args, train: bool = True) -> Tuple[Optional[Dataset], Dataset, DataInfo]:
    """(train dataset or None, eval dataset, DataInfo of the training set or, when ``train=False``, eval set).
    A named split that does not exist is an error (never a fallback to the whole folder)."""
    ds_train = _create_one(args, args.train_split, True) if train else None
    full_train = ds_train
    if ds_train is not None and (getattr(args, 'imb_factor', None) or 0) > 1:
        from timm_mixplug.data.longtail import apply_longtail
        names = _class_names(ds_train)
        try:
            ds_train = apply_longtail(ds_train, args, num_classes=args.num_classes or (len(names) if names else None))
        except (ValueError, TypeError) as e:
            raise UsageError(f'--imb-factor {args.imb_factor}: {e}') from None
    ds_eval = _create_one(args, args.val_split, False)
    info = dataset_info(ds_train if train else ds_eval, args.num_classes, args.dataset)
    if train and len(ds_train) == 0:
        raise UsageError(f'the training split {args.train_split!r} is empty')
    if train:
        ds_eval = _check_eval_classes(args, full_train, ds_eval, info.num_classes)
    return ds_train, ds_eval, info


def make_image_folder(root: str, num_classes: int = 4, per_class: int = 8, val_per_class: int = 4,
                      size: int = 16, seed: int = 0, splits: Sequence[str] = ('train', 'validation')) -> str:
    """Write a tiny learnable ImageFolder of PNGs: each class is a noisy colour/stripe pattern."""
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 256, size=(num_classes, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for split in splits:
        n = per_class if split in _TRAIN_SPLITS else val_per_class
        for c in range(num_classes):
            d = os.path.join(root, split, f'class_{c}')
            os.makedirs(d, exist_ok=True)
            stripes = ((xx * (c + 1) + yy * c) // 3 % 2).astype(np.float32)[..., None] * 60.0
            imgs = base[c] * 0.7 + stripes + rng.normal(0, 25, size=(n, size, size, 3))
            imgs = np.clip(imgs, 0, 255).astype(np.uint8)
            for i in range(n):  # writing files: once per image by necessity
                Image.fromarray(imgs[i]).save(os.path.join(d, f'{i:04d}.png'))
    return root


def apply_pad_crop(dataset, padding: int, size, mean: Sequence[float] = (0.0, 0.0, 0.0)) -> bool:
    """Replace the random-resized crop at the head of timm's training transform (set by ``create_loader`` on
    ``dataset`` or a dataset it wraps) with ``padding`` pixels of the ``mean`` colour (the data config's mean in
    [0, 1], filled as uint8, i.e. ~0 after normalisation, as in normalise-then-zero-pad CIFAR code) + a random
    crop of ``size``. Returns False if no timm training transform was found."""
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T
    fill = tuple(int(round(255 * float(m))) for m in mean)
    obj = dataset
    while obj is not None:
        tf = getattr(obj, 'transform', None)
        if isinstance(tf, T.Compose) and tf.transforms and isinstance(tf.transforms[0],
                                                                       RandomResizedCropAndInterpolation):
            tf.transforms[0] = T.Compose([T.Pad(padding, fill=fill), T.RandomCrop(size, pad_if_needed=True,
                                                                                  fill=fill)])
            return True
        obj = getattr(obj, 'dataset', None)
    return False
