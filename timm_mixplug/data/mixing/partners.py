"""Where a BC / BC+ batch of one class takes partners of other classes from: the training set itself, the
definition of Tokozume et al., "Between-class Learning for Image Classification", CVPR 2018, Sec. 3 (two
training examples of different classes).

* :class:`DatasetPartners`: a map-style training set, items of the other classes drawn uniformly.
* :class:`StreamPartners`: a stream (an ``IterableDataset``, no index to draw from): the next items of other
  classes in the stream's own order, from a reading of the stream kept between calls.

Both return the items in the format of the batch they join (uint8 as timm's prefetcher transforms give them,
or normalised floats as timm's ``PrefetchLoader`` makes them).
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from timm_mixplug.data.longtail import get_targets


def _image_label(item) -> Tuple[torch.Tensor, int]:
    """(image, label) of a dataset item: (image, label, ...) or (tuple of views, label, ...), first view."""
    image, label = item[:2]
    if isinstance(image, (tuple, list)):
        image = image[0]
    return torch.as_tensor(image), int(label)


def _collect(next_item: Callable[[], Tuple[torch.Tensor, int]], exclude: int, count: int, tries: int,
             where: str, fix: str) -> Tuple[List[torch.Tensor], List[int]]:
    """Items from ``next_item`` until ``count`` have a class other than ``exclude``, reading at most ``tries``;
    else an error naming ``where`` they came from and the ``fix``."""
    images, labels = [], []
    for _ in range(tries):
        image, label = next_item()
        if label != exclude:
            images.append(image)
            labels.append(label)
            if len(images) == count:
                return images, labels
    raise ValueError(f'BC learning mixes images of different classes, but {tries} items {where} all have class '
                     f'{exclude}; {fix}')


class Partners:
    """A source of partners (:class:`DatasetPartners`, :class:`StreamPartners`): ``draw`` returns items in the
    batch's format."""
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None

    def _draw_items(self, exclude: int, count: int) -> Tuple[List[torch.Tensor], List[int]]:
        raise NotImplementedError

    def draw(self, exclude: int, count: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``count`` (images, labels) of classes other than ``exclude``, in the format of the batch ``like``."""
        images, labels = self._draw_items(exclude, count)
        x = torch.stack(images).to(like.device)
        if like.is_floating_point() and not x.is_floating_point():
            if self.mean is None or self.std is None:
                raise ValueError('the training set yields uint8 images but the batch is float: give mean= and std= '
                                 '(timm\'s normalisation) to normalise them as the prefetcher does.')
            mean = torch.tensor([m * 255 for m in self.mean], device=like.device).view(1, -1, 1, 1)
            std = torch.tensor([s * 255 for s in self.std], device=like.device).view(1, -1, 1, 1)
            x = x.float().sub_(mean).div_(std)
        elif x.is_floating_point() and not like.is_floating_point():
            raise ValueError('the training set yields float images but the batch is uint8; draw partners from the '
                             'dataset the loader reads.')
        return x.to(like.dtype), torch.as_tensor(labels, dtype=torch.long, device=like.device)


class DatasetPartners(Partners):
    """Partners drawn uniformly from the items of the other classes of a map-style training set, read through
    its transforms.

    Args:
        dataset: the map-style training dataset as the loader reads it, (image, label) items, or (tuple of views,
            label) items, of which the first view is taken.
        labels: the label of every item; by default read without loading images (``get_targets``), or, where
            that is not possible, items are drawn until one has another label (the paper's rule), at most
            ``max_tries`` times.
        mean, std: timm's normalisation (data config values in [0, 1]); used only where uint8 items (timm's
            prefetcher transforms) meet a float batch (mixing on the device), normalised as timm's
            ``PrefetchLoader`` does.
    """

    def __init__(self, dataset, labels: Optional[Sequence[int]] = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, max_tries: int = 1000):
        self.dataset = dataset
        if labels is None:
            try:
                labels = get_targets(dataset)
            except ValueError:
                labels = None
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if self.labels is not None and len(self.labels) != len(dataset):
            raise ValueError(f'labels has {len(self.labels)} entries for a dataset of {len(dataset)} items')
        self.mean, self.std, self.max_tries = mean, std, max_tries

    def _draw_items(self, exclude: int, count: int):
        if self.labels is None:
            return _collect(lambda: _image_label(self.dataset[int(torch.randint(len(self.dataset), ()))]),
                            exclude, count, self.max_tries, 'drawn from the training set',
                            'pass labels= (every item\'s label).')
        other = (self.labels != exclude).nonzero().flatten()
        if not len(other):
            raise ValueError(f'BC learning mixes images of different classes, but every item of the training '
                             f'set has class {exclude}; it needs at least two classes.')
        picked = other[torch.randint(len(other), (count,))]
        return [_image_label(self.dataset[int(i)])[0] for i in picked], self.labels[picked].tolist()


class StreamPartners(Partners):
    """Partners read from a stream training set (an ``IterableDataset``, such as timm's ``wds/`` or ``hfids/``
    readers): the next items of other classes in the stream's own (shuffled) order. The reading is the
    dataset's own ``iter()`` (in a loader worker, that worker's share of the stream), kept between calls and
    restarted at its end; at most ``max_tries`` items are read per call.

    Args:
        dataset: the stream as the loader reads it, (image, label) or (tuple of views, label) items.
        mean, std: as for :class:`DatasetPartners`.
    """

    def __init__(self, dataset, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 max_tries: int = 10000):
        self.dataset, self.mean, self.std, self.max_tries = dataset, mean, std, max_tries
        self._reading = None

    def __getstate__(self):  # a loader worker starts its own reading
        return dict(self.__dict__, _reading=None)

    def _next_item(self) -> Tuple[torch.Tensor, int]:
        for _ in range(2):  # the kept reading, else a new one
            if self._reading is None:
                self._reading = iter(self.dataset)
            try:
                return _image_label(next(self._reading))
            except StopIteration:
                self._reading = None
        raise ValueError('the training stream yields no items; BC learning draws partners from it.')

    def _draw_items(self, exclude: int, count: int):
        return _collect(self._next_item, exclude, count, self.max_tries, 'read from the training stream',
                        'the stream needs two or more classes, shuffled together.')
