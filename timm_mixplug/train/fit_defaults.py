"""Defaults that do not fit a short run: adjusted, and said so in one line, where the user did not set them.

timm's 5 warm-up epochs (``--warmup-epochs``) cannot come before a run of 5 epochs or fewer: every step would
train at the warm-up LR. When the user left the warm-up at its default, it is shortened to half the run (0 for
a 1-epoch run) and the run says so; a warm-up the user set (command line or ``-c``) that does not fit is refused.
"""
import argparse
from typing import Collection, Optional

from timm_mixplug.errors import UsageError

__all__ = ['fit_warmup']


def fit_warmup(args: argparse.Namespace, given: Optional[Collection[str]]) -> Optional[str]:
    """Shorten a default ``args.warmup_epochs`` that is not shorter than ``args.epochs`` (returns the note to log),
    or raise ``UsageError`` when the user set it (``'warmup_epochs' in given``; ``given`` None: unknown, so
    treated as set). Evaluation has no schedule: nothing to fit."""
    if not args.warmup_epochs or args.warmup_epochs < args.epochs or args.evaluate:
        return None
    if given is None or 'warmup_epochs' in given:
        lr = f'--lr {args.lr}' if args.lr is not None else 'the scaled --lr-base'
        raise UsageError(f'--warmup-epochs {args.warmup_epochs} is not shorter than --epochs {args.epochs}: every '
                         f'step would train at the warm-up LR (from --warmup-lr {args.warmup_lr}), never at {lr}; '
                         f'use --warmup-epochs {max(0, args.epochs - 1)} or fewer')
    default, args.warmup_epochs = args.warmup_epochs, args.epochs // 2
    now = (f'shortened to {args.warmup_epochs} epoch{"" if args.warmup_epochs == 1 else "s"}' if args.warmup_epochs
           else 'off')
    return (f'--epochs {args.epochs} is not longer than the default {default} warm-up epochs: warm-up {now} '
            f'(set --warmup-epochs to choose)')
