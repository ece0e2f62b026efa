"""Base classes for datasets that wrap another dataset (long-tailed subsets, multi-view and index wrappers).

At the bottom of the import graph (no timm_mixplug imports), so ``datasets`` can use ``longtail`` and
``longtail`` can use these without a cycle.
"""
from typing import Callable, Optional

from torch.utils.data import Dataset

__all__ = ['ForwardingDatasetWrapper', 'TransformOwningWrapper']


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
