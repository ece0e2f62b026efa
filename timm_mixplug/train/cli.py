"""train.py's full command line: assembles ``config``'s parser with the flag groups of the registered tasks,
the long-tail options and the registered mixers.

Layering (imports run one way): ``errors`` / ``timm_flags`` <- ``config`` (timm's and our generic flags,
YAML loading, resolution) <- task and method modules (``tasks``, ``longtail``, ``dml``, ...) <- ``cli``
(this module: the assembled parser) <- ``engine`` <- ``train.py``. ``config`` never imports a task module,
so a task module may import ``config`` without a cycle.
"""
import argparse
from typing import Optional, Sequence

from timm_mixplug.train import config
__all__ = ['create_parser', 'parse_args', 'args_to_yaml']


def create_parser() -> argparse.ArgumentParser:
    """``config.create_parser`` + ``--imb-factor``/``--imb-seed`` + every registered task's flag group."""
    from timm_mixplug.data.longtail import add_longtail_args
    from timm_mixplug.data.mixing.base import list_mixups
    from timm_mixplug.train.specs.base import get_task_spec, list_tasks
    tasks = list(list_tasks())
    mixes = ['none'] + [n for n in list_mixups() if n != 'none']
    p = config.create_parser(tasks=tasks, mix_choices=mixes)
    add_longtail_args(p)
    for name in tasks:
        get_task_spec(name).add_args(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None):
    """train.py's arguments (``-c`` YAML + command line), resolved; raises ``UsageError``."""
    return config.parse_args(argv, parser=create_parser())


def args_to_yaml(args: argparse.Namespace) -> str:
    """The resolved config as YAML (every option of the full parser), loadable again with ``-c``."""
    return config.args_to_yaml(args, parser=create_parser())
