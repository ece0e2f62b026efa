"""timm_mixplug: BC/BC+, superclass mixup + DML, auxiliary heads, importance-sampled augmentation and GLMC for timm."""
from .losses import SoftTargetKLDiv
from .mixing import PairMixCollate, PairMixer, create_mixup, list_mixups, register_mixup
from .bc import BetweenClassMixer, BetweenClassPlusMixer, sample_other_class_partner, zero_mean
from .superclass import SuperclassMixer
from .hierarchy import BUILTIN_HIERARCHIES, Hierarchy, load_hierarchy
from . import models  # registers the CIFAR architectures with timm

__version__ = '0.1.0'
