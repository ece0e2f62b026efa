"""Losses of the methods: BC's soft-target KL divergence, DML's mutual KL, the mix-ratio NT-Xent."""
from .kl import SoftTargetKLDiv
from .contrastive import mixed_nt_xent, negative_cosine, nt_xent
from .mutual import dml_losses
