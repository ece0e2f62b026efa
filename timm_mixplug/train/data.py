"""The datasets of a train.py run from its flags: timm's ``create_dataset`` (ImageFolder, torch/*, hfds/*, ...),
``--dataset npz``, ``--dataset mixplug/<name>``, and the long-tailed subset of ``--imb-factor``.

Splits never fall back: a named split that does not exist is an error naming the ones that do.
"""
import argparse
import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from timm.data import create_dataset
from torch.utils.data import Dataset

from timm_mixplug.data.datasets import EVAL_SPLITS, TRAIN_SPLITS, DatasetError, DigitsDataset, NpzDataset, class_names
from timm_mixplug.data.folder import EightBitPngReader, check_image_folder, check_no_loose_images
from timm_mixplug.data.longtail import LongTailSubset, get_targets, make_longtail_indices
from timm_mixplug.errors import UsageError
from timm_mixplug.train.options import dataset_kwargs
from timm_mixplug.train.resume import check_classes
from timm_mixplug.train.specs.base import DataInfo

__all__ = ['create_datasets', 'dataset_info', 'add_longtail_args', 'apply_longtail', 'is_longtail', 'BUILTIN_DATASETS']


def is_longtail(args: argparse.Namespace) -> bool:
    """``--imb-factor RHO`` with RHO > 1 (1 is the balanced set)."""
    return (args.imb_factor or 0) > 1


def add_longtail_args(parser: argparse.ArgumentParser) -> None:
    """``--imb-factor RHO`` (long-tailed training subset, 1 / None = off) and ``--imb-seed`` (subset seed).
"""
    g = parser.add_argument_group('Long-tailed data (CIFAR-LT profile)')
    g.add_argument('--imb-factor', type=float, default=None, metavar='RHO',
                   help='keep n_c = int(n_max * RHO^(-c/(C-1))) training images of class c (e.g. 100, 50); '
                        'evaluation then also reports many/medium/few-shot top-1')
    g.add_argument('--imb-seed', type=int, default=0, metavar='S',
                   help='seed of the long-tailed subset (fixed by default so every --seed trains on the same data)')


def apply_longtail(dataset, args: argparse.Namespace, num_classes: Optional[int] = None):
    """The long-tailed subset of a training dataset for ``args.imb_factor`` (unchanged if unset or <= 1)."""
    if not is_longtail(args) or isinstance(dataset, LongTailSubset):
        return dataset
    targets = get_targets(dataset)
    idx = make_longtail_indices(targets, args.imb_factor, seed=args.imb_seed, num_classes=num_classes or args.num_classes)
    return LongTailSubset(dataset, idx, targets=targets, imb_factor=args.imb_factor)


def _create_digits(name: str, split: str) -> Dataset:
    size = 32
    if '@' in name:
        try:
            size = int(name.split('@', 1)[1])
        except ValueError:
            raise UsageError(f'bad image size in --dataset {name!r} (use mixplug/digits@16)') from None
    return DigitsDataset(split=split, img_size=size)


BUILTIN_DATASETS: Dict[str, Callable[[str, str], Dataset]] = {'digits': _create_digits}


def _labels(ds) -> Optional[List[int]]:
    """The labels of a map-style dataset without loading images, or None where they cannot be read so."""
    try:
        return get_targets(ds).tolist()
    except ValueError:
        return None


def dataset_info(ds, num_classes: Optional[int] = None, name: str = '') -> DataInfo:
    """Classes and per-class counts of a training dataset (``num_classes`` overrides the inferred count)."""
    targets = _labels(ds)
    names = class_names(ds)
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


_TORCH_SPLITS = TRAIN_SPLITS + EVAL_SPLITS


def _split_folder(root: str, split: str, flag: str) -> str:
    """``root/<split>`` (or a timm synonym of it: train/training, val/valid/validation/eval/evaluation); never
    ``root`` itself, which holds both splits."""
    if os.path.isfile(root):
        raise UsageError(f'--data-dir {root} is a file; both splits would read it: put them in folders '
                         f'<data-dir>/train, <data-dir>/validation')
    name = split.split('[')[0]
    group = TRAIN_SPLITS if name in TRAIN_SPLITS else (EVAL_SPLITS[:-1] if name in EVAL_SPLITS else ())
    for cand in (name,) + tuple(g for g in group if g != name):
        if os.path.isdir(os.path.join(root, cand)):
            return os.path.join(root, cand)
    have = sorted(e.name for e in os.scandir(root) if e.is_dir())
    raise UsageError(f'{flag} {split!r}: no folder {os.path.join(root, name)}; the folders in --data-dir are: '
                     f'{", ".join(have) or "none"} (set {flag} to one of them)')


def image_mode(args) -> str:
    """The PIL mode images are read in: ``--input-img-mode``, else 'L' for a one-channel model (``--in-chans 1``
    or ``--input-size 1 H W``) and 'RGB' otherwise, as timm's train.py."""
    if args.input_img_mode:
        return args.input_img_mode
    chans = args.in_chans if args.in_chans is not None else (args.input_size[0] if args.input_size else 3)
    return 'L' if chans == 1 else 'RGB'


def _create_one(args, split: str, is_training: bool, class_map=None):
    flag = '--train-split' if is_training else '--val-split'
    try:
        ds = _create_split(args, split, is_training, class_map)
    except DatasetError as e:  # the library names its keyword (split, root): train.py names the flag
        where = {'split': f'{flag} {e.value!r}', 'root': f'{flag} {split!r} ({e.value})'}.get(e.keyword)
        raise UsageError(f'{where}: {e.reason}' if where else str(e)) from None
    if hasattr(ds, 'img_mode'):  # our array datasets; timm's readers got input_img_mode
        ds.img_mode = image_mode(args)
    return ds


def _create_split(args, split: str, is_training: bool, class_map=None):
    flag = '--train-split' if is_training else '--val-split'
    name = args.dataset or ''
    prefix, sep, rest = name.partition('/')
    if sep and prefix.lower() == 'mixplug':
        key = rest.split('@')[0].lower()
        if key not in BUILTIN_DATASETS:
            raise UsageError(f'unknown --dataset {name!r}; built-in: '
                             + ', '.join('mixplug/' + k for k in BUILTIN_DATASETS))
        return BUILTIN_DATASETS[key](rest, split)
    root = args.data_dir
    if name.lower() == 'npz':
        if not root or not os.path.isdir(root):
            raise UsageError(f'--dataset npz needs --data-dir, the folder with the <split>.npz files (got {root!r})')
        return NpzDataset(root, split)
    torch_name = rest.lower() if sep and prefix.lower() == 'torch' else ''
    folder = not sep or prefix.lower() in ('folder', 'imagefolder', 'tar', 'imagetar') or torch_name in (
        'folder', 'image_folder')
    if not root:
        what = ('a folder with one folder per split (train/, validation/), each holding one folder of images per '
                'class' if folder else 'the folder it is read from (with --dataset-download: where to download it)')
        raise UsageError(f'--data-dir is required for dataset {name or "ImageFolder"!r}: {what}; or use the offline '
                         f'--dataset mixplug/digits')
    if not os.path.exists(root) and (folder or not args.dataset_download):
        raise UsageError(f'data dir not found: {root}')
    if folder:
        root = _split_folder(root, split, flag)
    elif torch_name and torch_name not in ('inaturalist', 'inat', 'places365', 'imagenet') \
            and split.split('[')[0] not in _TORCH_SPLITS:
        raise UsageError(f'{flag} {split!r}: --dataset {name} has the splits train and test (synonyms: '
                         f'{", ".join(_TORCH_SPLITS)})')
    try:
        ds = create_dataset(
            name, root=root, split=split, search_split=False, is_training=is_training,
            class_map=class_map or args.class_map, download=args.dataset_download, batch_size=args.batch_size,
            seed=args.seed, input_img_mode=image_mode(args), **dataset_kwargs(args, is_training))
    except UsageError:
        raise
    except Exception as e:  # torchvision 'Dataset not found', empty folders, bad names...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if 'download=True' in msg:  # torchvision names its keyword; train.py's flag is --dataset-download
            msg = msg.split('You can use download=True')[0].strip().rstrip('.') + \
                '; add --dataset-download to download it there (internet needed once)'
        raise UsageError(f'cannot load dataset {name or "ImageFolder"!r} split {split!r} from {root}: {msg}'
                         ) from None
    samples = getattr(getattr(ds, 'reader', None), 'samples', None)
    if folder and samples and isinstance(samples[0][0], str):  # timm's folder reader, without its surprises
        check_image_folder(samples, root)
        ds.reader = EightBitPngReader(ds.reader)
    elif torch_name in ('folder', 'image_folder') and hasattr(ds, 'extensions'):  # torchvision's ImageFolder
        check_no_loose_images(root, ds.extensions)
    return ds


def _check_class_count(args, ds_train, labels: Optional[List[int]]) -> None:
    """``--num-classes`` above the training data's classes trains a head whose extra outputs never see a label
    (and inflates top-5): refused unless ``--allow-extra-classes``."""
    names = class_names(ds_train)
    have = len(names) if names else (max(labels) + 1 if labels else None)
    if args.num_classes and have and args.num_classes > have and not args.allow_extra_classes:
        raise UsageError(f'--num-classes {args.num_classes} is more than the {have} classes of the training data: '
                         f'use --num-classes {have}, or add --allow-extra-classes to train the larger head')


def _check_two_classes(args, info: DataInfo) -> None:
    """A classifier learns nothing from one class (a 1-output head, or one label, is 100 % right from the start)."""
    counts = info.class_counts
    held = [c for c, n in enumerate(counts) if n] if counts is not None else list(range(info.num_classes))
    if len(held) < 2:
        name = (info.class_names or [str(c) for c in range(info.num_classes)])[held[0]] if held else None
        raise UsageError(f'--train-split {args.train_split!r} holds a single class ({name!r}); a classifier needs '
                         f'images of two or more classes (an ImageFolder split holds one folder per class)')


def _check_eval_classes(args, tr: Optional[List[str]], ds_eval, num_classes: int, source: str, named: bool = True):
    """The evaluation split must use the classes ``tr`` (the training split's, or those the resumed weights were
    trained on; ``source`` names them) with the same indices: a class missing from ``tr``, or a label outside
    them, is an error; a folder split that lacks some of them is re-read with their class indices. Returns the
    evaluation dataset."""
    ev = class_names(ds_eval)
    split = f'--val-split {args.val_split!r}'
    named = named and getattr(ds_eval, 'classes_given', True)
    if named and tr is not None and ev is not None and ev != tr[:len(ev)]:
        only = [c for c in ev if c not in tr]
        if only:
            raise UsageError(f'{split} has classes that {source} lacks: '
                             f'{", ".join(only[:5])}{" ..." if len(only) > 5 else ""}')
        if getattr(getattr(ds_eval, 'reader', None), 'class_to_idx', None) is None:
            raise UsageError(f'{split} lists its classes in another order than {source}; give both the same '
                             f'class list')
        ds_eval = _create_one(args, args.val_split, False, class_map={c: i for i, c in enumerate(tr)})
    targets = _labels(ds_eval)
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
    if ds_train is not None and is_longtail(args):
        names = class_names(ds_train)
        try:
            ds_train = apply_longtail(ds_train, args, num_classes=args.num_classes or (len(names) if names else None))
        except (ValueError, TypeError) as e:
            raise UsageError(f'--imb-factor {args.imb_factor}: {e}') from None
    ds_eval = _create_one(args, args.val_split, False)
    info = dataset_info(ds_train if train else ds_eval, args.num_classes, args.dataset)
    if train and len(ds_train) == 0:
        raise UsageError(f'the training split {args.train_split!r} is empty')
    full_labels = _labels(full_train) if train else None
    if train:
        _check_class_count(args, full_train, full_labels)
        _check_two_classes(args, info)
    if train and is_longtail(args) and info.class_counts is not None:
        full = np.bincount(np.asarray(full_labels, dtype=np.int64), minlength=info.num_classes)
        emptied = [c for c, (n, m) in enumerate(zip(info.class_counts, full)) if n == 0 and m > 0]
        if emptied:
            names = info.class_names or [str(c) for c in range(info.num_classes)]
            raise UsageError(
                f'--imb-factor {args.imb_factor:g} leaves {len(emptied)} class(es) without training images '
                f'({", ".join(names[c] for c in emptied[:5])}{" ..." if len(emptied) > 5 else ""}; the largest '
                f'class has {int(full.max())}, the smallest keeps {min(n for n in info.class_counts if n)}): '
                f'use --imb-factor {int(full.max())} or less, or more images per class')
    trained = getattr(args, 'trained_data', None)  # what resumed weights were trained on (their state's record)
    if train:
        train_names = class_names(full_train)
        check_classes(trained, train_names, f'--train-split {args.train_split!r}')
        ds_eval = _check_eval_classes(args, train_names, ds_eval, info.num_classes,
                                      f'--train-split {args.train_split!r}',
                                      named=getattr(full_train, 'classes_given', True))
    elif trained and trained.get('classes'):
        ds_eval = _check_eval_classes(args, trained['classes'], ds_eval, info.num_classes, 'the trained weights')
        info.class_names = list(trained['classes'])
    return ds_train, ds_eval, info
