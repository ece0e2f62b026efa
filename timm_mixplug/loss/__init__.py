"""Losses of the methods: BC's soft-target KL divergence, DML's mutual KL, the mix-ratio NT-Xent."""
from .kl import SoftTargetKLDiv
