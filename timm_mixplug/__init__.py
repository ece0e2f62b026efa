"""timm_mixplug: BC/BC+, superclass mixup + DML, auxiliary heads, importance-sampled augmentation and GLMC for timm.

Library pieces (built from keyword arguments, usable in any training loop): ``data`` (datasets, long-tailed
subsets, hierarchies, batch transforms that record their targets), ``data.mixing`` (the mixers), ``loss``, ``task`` (the training
objectives as ``timm.task.TrainingTask``), ``utils`` (checkpoints, summaries), ``models`` (CIFAR
architectures registered with timm). The training application behind ``train.py`` is ``train``.
"""
from . import models  # noqa: F401  (registers the CIFAR architectures with timm)
from .data.datasets import ArrayImageDataset, DigitsDataset, NpzDataset, make_image_folder
from .data.hierarchy import BUILTIN_HIERARCHIES, Hierarchy, load_hierarchy
from .data.longtail import LongTailSubset
from .data.seeded import SeededItems
from .data.mixing import (
    BetweenClassMixer, BetweenClassPlusMixer, DatasetPartners, MixerSpec, PairMixCollate, PairMixer, SuperclassMixer,
    StreamPartners, create_mixup, get_mixer_spec, list_mixups, mix_prefetched, mixing_path, register_mixup,
    sample_other_class_partner, zero_mean)
from .data.transforms import Cutout, RICAPMixer
from .loss import SoftTargetKLDiv
from .task.aux import AuxHeadModel, AuxTask
from .task.dml import DMLTask
from .task.evaluators import ShotAccuracyEvaluator
from .task.glmc import GLMCModel, GLMCTask
from .task.nonharmonic import NonHarmonicTask
from .timm_compat import add_zero_mean_input, setup_timm_mixing
from .utils.checkpoint import CheckpointError, load_train_state, load_weights, save_train_state, save_weights

__all__ = [
    'ArrayImageDataset', 'DigitsDataset', 'NpzDataset', 'make_image_folder', 'BUILTIN_HIERARCHIES', 'Hierarchy',
    'load_hierarchy', 'LongTailSubset', 'SeededItems', 'BetweenClassMixer', 'BetweenClassPlusMixer', 'DatasetPartners', 'StreamPartners', 'MixerSpec',
    'PairMixCollate',
    'PairMixer', 'SuperclassMixer', 'create_mixup', 'get_mixer_spec', 'list_mixups', 'mix_prefetched', 'mixing_path',
    'register_mixup', 'sample_other_class_partner', 'zero_mean', 'Cutout', 'RICAPMixer', 'SoftTargetKLDiv',
    'AuxHeadModel', 'AuxTask',
    'DMLTask', 'ShotAccuracyEvaluator', 'GLMCModel', 'GLMCTask', 'NonHarmonicTask', 'add_zero_mean_input',
    'setup_timm_mixing', 'CheckpointError', 'load_train_state', 'load_weights', 'save_train_state', 'save_weights',
]
__version__ = '0.1.0'
