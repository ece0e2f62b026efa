"""Base classes for datasets that wrap another dataset (long-tailed subsets, multi-view and index wrappers).

At the bottom of the import graph (no timm_mixplug imports), so ``datasets`` can use ``longtail`` and
``longtail`` can use these without a cycle.
"""
import logging
from typing import Callable, Optional

from PIL import Image
from torch.utils.data import Dataset

__all__ = ['ForwardingDatasetWrapper', 'TransformOwningWrapper', 'ExcludeUnreadable']


class ForwardingDatasetWrapper(Dataset):
    """Base for a dataset wrapping ``self.dataset`` whose ``.transform`` is the wrapped dataset's: reading and
    setting it (timm's ``create_loader`` sets ``dataset.transform``) go through to ``self.dataset``."""

    @property
    def transform(self):
        return getattr(self.dataset, 'transform', None)

    @transform.setter
    def transform(self, t):
        self.dataset.transform = t


class TransformOwningWrapper(Dataset):
    """Base for a dataset wrapping ``self.dataset`` that owns the transform, like timm's ``AugMixDataset``:
    setting ``.transform`` (as ``create_loader`` does) stores it here and leaves the wrapped dataset returning
    raw images. Subclasses set ``self.dataset``, then call ``_own_transform``."""

    def _own_transform(self, transform: Optional[Callable]) -> None:
        """Take ``transform``, or else the wrapped dataset's own (which is then cleared there)."""
        self._transform = None
        self.transform = transform if transform is not None else getattr(self.dataset, 'transform', None)

    @property
    def transform(self):
        return self._transform

    @transform.setter
    def transform(self, t):
        self._transform = t
        if hasattr(self.dataset, 'transform'):
            self.dataset.transform = None


class ExcludeUnreadable(ForwardingDatasetWrapper):
    """An evaluation view of a timm ``ImageDataset`` where an image file that cannot be read or decoded gets the
    label -1 (a black placeholder image), so that evaluation excludes and counts it. timm's dataset instead
    substitutes the next image, which would count a duplicate in the metrics; training keeps that behaviour."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # reader, classes... of the wrapped dataset
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index):
        ds = self.dataset
        img, target, *_ = ds.reader[index]
        mode = ds.input_img_mode or 'RGB'
        try:
            img = Image.open(img)
            img = img.convert(mode)  # decodes the pixels, so a truncated file fails here
        except (IOError, OSError) as e:
            name = ds.reader.filename(index) if hasattr(ds.reader, 'filename') else index
            logging.getLogger(__name__).warning(f'Unreadable image {name} ({e}): excluded from the metrics')
            img, target = Image.new(mode, (32, 32)), -1
        if ds.transform is not None:
            img = ds.transform(img)
        if target is None:
            target = -1
        elif target != -1 and ds.target_transform is not None:
            target = ds.target_transform(target)
        return img, target
