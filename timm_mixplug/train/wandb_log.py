"""``--log-wandb``: each epoch's summary.csv row to Weights & Biases, as timm's train.py does (optional
dependency: ``pip install "timm_mixplug[wandb]"``; ``config.resolve_args`` refuses the flag without it)."""
from typing import Any, Dict, Optional

__all__ = ['start_wandb']


class _WandbRun:
    def __init__(self, wandb):
        self.wandb = wandb

    def log(self, row: Dict[str, Any]) -> None:
        self.wandb.log(dict(row))


def start_wandb(args, name: str, config: Dict[str, Any]) -> Optional[_WandbRun]:
    """``wandb.init`` with --wandb-project / --wandb-tags / --wandb-resume-id (None without --log-wandb)."""
    if not args.log_wandb:
        return None
    import wandb
    wandb.init(project=args.wandb_project, name=name, config=config, tags=args.wandb_tags or None,
               resume='must' if args.wandb_resume_id else None, id=args.wandb_resume_id or None)
    return _WandbRun(wandb)
