"""Batch mixers, drop-ins for timm's ``Mixup`` / ``FastCollateMixup``: the registry, BC / BC+ and superclass mixup."""
from .base import MixerSpec, PairMixCollate, PairMixer, create_mixup, get_mixer_spec, list_mixups, register_mixup
from .bc import BetweenClassMixer, BetweenClassPlusMixer, sample_other_class_partner, set_dataset_partners, zero_mean
from .partners import DatasetPartners, StreamPartners
from .superclass import SuperclassMixer
from .placement import mix_prefetched, mixing_path
