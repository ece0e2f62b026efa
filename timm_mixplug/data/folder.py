"""Image folders as timm's folder reader reads them, without its surprises.

timm's ``ReaderImageFolder`` walks the split folder recursively and names each image's class after the
innermost folder that holds it, and ``ImageDataset`` converts every image with ``Image.convert(mode)``. So

* an image lying loose in the split folder becomes a class named '' (sorted first: every label shifts by one);
* images in a sub-folder of a class folder become a class named after the sub-folder (merged with the
  same-named sub-folders of other classes);
* a 16-bit grayscale PNG (Pillow mode ``I;16``) is clipped to 255 by ``convert``: near-white.

torchvision's ``ImageFolder`` (timm's ``torch/image_folder``) instead skips an image lying loose in the split
folder without a word. ``check_image_folder`` refuses the first two and ``check_no_loose_images`` the skipped
images (where the images belong is not certain); ``EightBitPngReader``
reads a 16-bit grayscale PNG as the 8-bit image it stands for (value / 257, rounded), whose meaning is certain,
and says so once per process.
"""
import io
import logging
import os

import numpy as np
from PIL import Image

from timm_mixplug.data.datasets import DatasetError

__all__ = ['check_image_folder', 'check_no_loose_images', 'EightBitPngReader']

_logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def check_image_folder(samples, root: str) -> None:
    """Raise ``DatasetError`` (keyword ``root``) where timm would label ``samples`` ((path, label) pairs of a
    folder reader rooted at ``root``) by a folder that is not a class folder directly under ``root``."""
    prefix = os.path.join(root, '')
    loose, nested = [], []
    for path, _ in samples:
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
        depth = rel.count(os.sep)
        if depth == 0:
            loose.append(rel)
        elif depth > 1:
            nested.append(rel)
    if loose:
        raise DatasetError(f'{len(loose)} image file(s) lie directly in the folder, outside any class folder (e.g. '
                           f'{loose[0]}): timm would read them as a class named \'\' and shift every label by one; '
                           f'move them into their class folder or delete them', 'root', root)
    if nested:
        parts = nested[0].split(os.sep)
        raise DatasetError(f'{len(nested)} image file(s) lie in sub-folders of class folders (e.g. {nested[0]}): '
                           f'timm would put them in a class named {parts[-2]!r}, not {parts[0]!r} (merging same-named '
                           f'sub-folders of all classes); move them up into their class folder', 'root', root)


def check_no_loose_images(root: str, extensions) -> None:
    """Raise ``DatasetError`` (keyword ``root``) where files with one of ``extensions`` (lower case, with the
    dot) lie directly in ``root``: torchvision's ``ImageFolder`` reads only the class folders and skips them."""
    loose = sorted(e.name for e in os.scandir(root) if e.is_file() and e.name.lower().endswith(tuple(extensions)))
    if loose:
        raise DatasetError(f'{len(loose)} image file(s) lie directly in the folder, outside any class folder (e.g. '
                           f'{loose[0]}): torchvision\'s ImageFolder would skip them without a word; move them into '
                           f'their class folder or delete them', 'root', root)


def _is_16bit_gray_png(f) -> bool:
    head = f.read(26)
    f.seek(0)
    return head[:8] == _PNG_SIGNATURE and head[12:16] == b'IHDR' and head[24] == 16 and head[25] == 0


class EightBitPngReader:
    """Wraps a timm folder reader (``reader[i] -> (open file, label, ...)``): a 16-bit grayscale PNG comes back as
    an in-memory 8-bit PNG of value / 257 (rounded) instead of the file Pillow would clip to white; every other
    file as it is. Everything else (``samples``, ``class_to_idx``, ``filename``) is the wrapped reader's."""

    _said = False  # the one line per process

    def __init__(self, reader):
        self.reader = reader

    def __getattr__(self, name):
        if name == 'reader':  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.reader, name)

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index):
        img, *rest = self.reader[index]
        if hasattr(img, 'seek') and _is_16bit_gray_png(img):
            with img, Image.open(img) as im:
                a = np.asarray(im).astype(np.uint32)
            img = io.BytesIO()
            Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8)).save(img, format='PNG', compress_level=0)
            img.seek(0)
            if not EightBitPngReader._said:
                EightBitPngReader._said = True
                _logger.warning(f'{self.reader.filename(index)} is a 16-bit grayscale PNG: read as 8 bits (value / '
                                f'257), not clipped to white as timm would (said once)')
        return (img, *rest)
