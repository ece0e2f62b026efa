"""The CIFAR-style training crop: zero-pad and take a random crop of the input size (He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016, sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is
randomly sampled from the padded image or its horizontal flip").

The crop is defined for images of the input size. An image larger than that would be cropped at its own scale
while evaluation resizes the whole image; ``fit`` (e.g. evaluation's resize and centre crop) brings such an
image to the input size first, so training crops at the scale evaluation sees.
"""
from typing import Callable, Optional, Sequence, Tuple

from torchvision import transforms as T
from torchvision.transforms import functional as TF

__all__ = ['PadCrop']


class PadCrop:
    """``padding`` pixels of ``fill`` on every side, then a random crop of ``size`` (h, w). ``fit``: applied first
    to an image larger than ``size`` in either side; ``first_fitted`` records the (w, h) of the first such image
    this copy of the transform saw (None if none)."""

    def __init__(self, padding: int, size: Sequence[int], fill: Tuple[int, ...] = (0, 0, 0),
                 fit: Optional[Callable] = None):
        self.size = (int(size[0]), int(size[1]))
        self.fit = fit
        self.first_fitted: Optional[Tuple[int, int]] = None
        self.pad = T.Pad(padding, fill=fill)
        self.crop = T.RandomCrop(self.size, pad_if_needed=True, fill=fill)

    def __call__(self, img):
        w, h = TF.get_image_size(img)
        if self.fit is not None and (h > self.size[0] or w > self.size[1]):
            if self.first_fitted is None:
                self.first_fitted = (w, h)
            img = self.fit(img)
        return self.crop(self.pad(img))

    def __repr__(self):
        return f'{type(self).__name__}(pad={self.pad.padding}, size={self.size}, fit={self.fit})'
