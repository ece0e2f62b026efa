"""timm_mixplug: BC/BC+, superclass mixup + DML, auxiliary heads, importance-sampled augmentation and GLMC for timm."""
from .losses import SoftTargetKLDiv
from .mixing import PairMixCollate, PairMixer, create_mixup, list_mixups, register_mixup
from .bc import BetweenClassMixer, BetweenClassPlusMixer, sample_other_class_partner, zero_mean
from .superclass import SuperclassMixer
from .hierarchy import BUILTIN_HIERARCHIES, Hierarchy, load_hierarchy
from . import models  # registers the CIFAR architectures with timm
from .tasks import DataInfo, TaskSpec, create_task, get_task_spec, list_tasks, register_task
from .checkpoint import CheckpointError, load_train_state, load_weights, save_train_state, save_weights
from .aux_tasks import AuxHeadModel, AuxTask
from .dml import DMLTask
from .glmc import GLMCModel, GLMCTask
from .nonharmonic import NonHarmonicTask
from .longtail import LongTailSubset, ShotAccuracyEvaluator
from .recorded_transforms import Cutout, RICAPMixer
from .timm_compat import add_zero_mean_input, setup_timm_mixing
from .datasets import ArrayImageDataset, DigitsDataset, NpzDataset, make_image_folder

__version__ = '0.1.0'
