"""Datasets beside timm's ``create_dataset``: images held in arrays, the offline digits, npz files.

Built in (``--dataset mixplug/<name>`` in train.py, no download, no ``--data-dir``):

* ``mixplug/digits``: scikit-learn's handwritten digits (1797 8x8 images, 10 classes, shipped inside the
  scikit-learn package), upsampled bilinearly to 32x32 RGB (``--dataset mixplug/digits@16`` for 16x16).
  A fixed stratified split keeps 20% (36 per class) as ``validation``/``val``/``test``.

``--dataset npz --data-dir DIR``: ``DIR/<split>.npz`` arrays (``x`` uint8 images, ``y`` labels).

``make_image_folder`` writes a tiny generated ImageFolder (``root/train/<class>/*.png``,
``root/validation/...``) for tests and benchmarks.
"""
import os
import zipfile
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import Dataset
from torchvision import transforms as T

from timm_mixplug.data.pad_crop import PadCrop

__all__ = ['ArrayImageDataset', 'NpzDataset', 'DigitsDataset', 'DatasetError', 'make_image_folder', 'apply_pad_crop',
           'class_names',
           'TRAIN_SPLITS', 'EVAL_SPLITS']

TRAIN_SPLITS = ('train', 'training')
EVAL_SPLITS = ('val', 'valid', 'validation', 'eval', 'evaluation', 'test')


class DatasetError(ValueError):
    """A dataset that cannot be read as asked. ``keyword`` and ``value`` name the argument at fault (e.g.
    ``split``, 'nope'; ``str()`` starts with them), ``reason`` the rest: an application maps the keyword to its
    own option name."""

    def __init__(self, reason: str, keyword: Optional[str] = None, value: Any = None):
        self.reason, self.keyword, self.value = reason, keyword, value
        super().__init__(f'{keyword} {value!r}: {reason}' if keyword else reason)


class ArrayImageDataset(Dataset):
    """Images held in memory as a uint8 (N, H, W, 3) array with integer labels; timm sets ``transform``."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: Sequence[str], transform=None,
                 img_mode: str = 'RGB'):
        self.images = images
        self.img_mode = img_mode  # PIL mode handed to the transform ('L' for one-channel models, as timm)
        self.targets = [int(t) for t in targets]
        self.classes = [str(c) for c in classes]
        self.transform = transform
        self.target_transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.images[index], mode='RGB')
        if self.img_mode != 'RGB':
            img = img.convert(self.img_mode)
        if self.transform is not None:
            img = self.transform(img)
        target = self.targets[index]
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class NpzDataset(ArrayImageDataset):
    """``--dataset npz``: ``<data-dir>/<split>.npz`` with ``x`` (N, H, W, 3) or (N, H, W) uint8, ``y`` labels and
    optionally ``classes`` (e.g. the CIFAR-10 files in ``../shared/data``)."""

    def __init__(self, root: str, split: str, transform=None):
        path = os.path.join(root, split if split.endswith('.npz') else split + '.npz')
        if not os.path.isfile(path):
            have = sorted(f[:-4] for f in os.listdir(root) if f.endswith('.npz'))
            raise DatasetError(f'no {path}; the splits in {root} are: {", ".join(have) or "none (no .npz files)"}',
                               'split', split)
        expected = ('an npz (zip) file of uint8 "x" (N, H, W, 3) or (N, H, W) images, integer "y" labels and '
                    'optionally "classes" names, written by np.savez')
        if not zipfile.is_zipfile(path):
            raise DatasetError(f'{path} is not an npz (zip) file; expected {expected}')
        try:
            with np.load(path, allow_pickle=False) as f:
                if 'x' not in f or 'y' not in f:
                    raise DatasetError(f'{path} needs arrays "x" (images) and "y" (labels), has {sorted(f.keys())}')
                x, y_raw = f['x'], f['y']
                self.classes_given = 'classes' in f  # else the names are the label numbers
                names = f['classes'] if self.classes_given else None
        except DatasetError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # an object array, a damaged member
            raise DatasetError(f'{path} cannot be read ({str(e).splitlines()[0]}); expected {expected}') from None
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
            hint = ''
            if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
                hint = ' (channels first? use x.transpose(0, 2, 3, 1))'
            elif x.ndim == 4 and x.shape[-1] == 4:
                hint = ' (RGBA? drop the alpha channel: x[..., :3])'
            elif x.ndim == 4 and x.shape[-1] == 1:
                hint = ' (one channel: use x[..., 0])'
            raise DatasetError(f'{path}: "x" must be uint8 (N, H, W, 3) or (N, H, W), got {x.dtype} {x.shape}{hint}')
        if y_raw.ndim != 1 or len(y_raw) != len(x):
            raise DatasetError(f'{path}: "y" must hold one label per image ({len(x)}), got shape {y_raw.shape}')
        if y_raw.dtype.kind not in 'iub' and not (y_raw.dtype.kind == 'f' and np.all(np.mod(y_raw, 1) == 0)):
            bad = np.unique(y_raw[np.mod(y_raw, 1) != 0])[:3].tolist() if y_raw.dtype.kind == 'f' else y_raw.dtype
            raise DatasetError(f'{path}: "y" must hold integer class labels 0..C-1, got {bad}')
        y = y_raw.astype(np.int64)
        classes = names.tolist() if names is not None else [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]
        outside = np.unique(y[(y < 0) | (y >= len(classes))])
        if outside.size:
            raise DatasetError(f'{path}: labels {outside[:5].tolist()} lie outside its {len(classes)} classes')
        if x.ndim == 3:
            x = np.repeat(x[..., None], 3, axis=-1)
        super().__init__(x, y, classes, transform)


class DigitsDataset(ArrayImageDataset):
    """scikit-learn's digits as an RGB image dataset that timm's ``create_loader`` can transform."""

    def __init__(self, split: str = 'train', img_size: int = 32, val_per_class: int = 36, transform=None):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DatasetError('the digits dataset needs scikit-learn: pip install "timm_mixplug[quickstart]"'
                               ) from None
        split = split.split('[')[0].lower()
        if split not in TRAIN_SPLITS + EVAL_SPLITS:
            raise DatasetError("the digits dataset has the splits 'train' and 'validation'", 'split', split)
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
        keep = rank < val_per_class if split in EVAL_SPLITS else rank >= val_per_class
        super().__init__(np.repeat(gray[keep][..., None], 3, axis=-1), y[keep], [str(c) for c in range(10)],
                         transform)


def class_names(ds) -> Optional[List[str]]:
    """Class names in label order of a dataset (``.classes`` or a timm reader's ``class_to_idx``), or None."""
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


def make_image_folder(root: str, num_classes: int = 4, per_class: int = 8, val_per_class: int = 4,
                      size: int = 16, seed: int = 0, splits: Sequence[str] = ('train', 'validation')) -> str:
    """Write a tiny learnable ImageFolder of PNGs: each class is a noisy colour/stripe pattern."""
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 256, size=(num_classes, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for split in splits:
        n = per_class if split in TRAIN_SPLITS else val_per_class
        for c in range(num_classes):
            d = os.path.join(root, split, f'class_{c}')
            os.makedirs(d, exist_ok=True)
            stripes = ((xx * (c + 1) + yy * c) // 3 % 2).astype(np.float32)[..., None] * 60.0
            imgs = base[c] * 0.7 + stripes + rng.normal(0, 25, size=(n, size, size, 3))
            imgs = np.clip(imgs, 0, 255).astype(np.uint8)
            for i in range(n):  # writing files: once per image by necessity
                Image.fromarray(imgs[i]).save(os.path.join(d, f'{i:04d}.png'))
    return root


def apply_pad_crop(dataset, padding: int, size, mean: Sequence[float] = (0.0, 0.0, 0.0),
                   fit: Optional[Callable] = None) -> Optional[PadCrop]:
    """Replace the random-resized crop at the head of timm's training transform (set by ``create_loader`` on
    ``dataset`` or a dataset it wraps) with a ``PadCrop``: ``padding`` pixels of the ``mean`` colour (the data
    config's mean in [0, 1], filled as uint8, i.e. ~0 after normalisation, as in normalise-then-zero-pad CIFAR
    code) + a random crop of ``size``; ``fit`` first brings an image larger than ``size`` to it (``PadCrop``).
    Returns the ``PadCrop`` installed, or None if no timm training transform was found."""
    fill = tuple(int(round(255 * float(m))) for m in mean)
    obj = dataset
    while obj is not None:
        tf = getattr(obj, 'transform', None)
        if isinstance(tf, T.Compose) and tf.transforms and isinstance(tf.transforms[0],
                                                                       RandomResizedCropAndInterpolation):
            tf.transforms[0] = PadCrop(padding, size, fill, fit=fit)
            return tf.transforms[0]
        obj = getattr(obj, 'dataset', None)
    return None
