"""timm_mixplug: BC/BC+, superclass mixup + DML, auxiliary heads, importance-sampled augmentation and GLMC for timm."""
from timm_mixplug.loss.kl import SoftTargetKLDiv
from timm_mixplug.data.mixing.base import PairMixCollate, PairMixer, create_mixup, list_mixups, register_mixup
from timm_mixplug.data.mixing.bc import BetweenClassMixer, BetweenClassPlusMixer, sample_other_class_partner, zero_mean
from timm_mixplug.data.mixing.superclass import SuperclassMixer
from timm_mixplug.data.hierarchy import BUILTIN_HIERARCHIES, Hierarchy, load_hierarchy
from . import models  # registers the CIFAR architectures with timm
from timm_mixplug.train.specs.base import DataInfo, TaskSpec, create_task, get_task_spec, list_tasks, register_task
from timm_mixplug.utils.checkpoint import CheckpointError, load_train_state, load_weights, save_train_state, save_weights
from timm_mixplug.task.aux import AuxHeadModel, AuxTask
from timm_mixplug.task.dml import DMLTask
from timm_mixplug.task.glmc import GLMCModel, GLMCTask
from timm_mixplug.task.nonharmonic import NonHarmonicTask
from timm_mixplug.data.longtail import LongTailSubset, ShotAccuracyEvaluator
from timm_mixplug.data.transforms import Cutout, RICAPMixer
from .timm_compat import add_zero_mean_input, setup_timm_mixing
from timm_mixplug.data.datasets import ArrayImageDataset, DigitsDataset, NpzDataset, make_image_folder

from ._moved import install as _install_moved

_install_moved()
__version__ = '0.1.0'
