"""Shared base of the training objectives whose trainable module is one ``nn.Module``."""
from typing import Optional

from timm.task import TrainingTask
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = ['SingleModuleTask']


class SingleModuleTask(TrainingTask):
    """A ``timm.task.TrainingTask`` whose ``trainable_module`` is one module, wrapped whole in DDP."""

    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> 'SingleModuleTask':
        self.trainable_module = DDP(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self
