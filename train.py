#!/usr/bin/env python3
"""timm-style training script for timm_mixplug (BC/BC+, superclass mixup, DML, GLMC, ...).

    torchrun --nproc_per_node=N train.py -c hparams/<recipe>.yaml --mix bcplus
    python train.py -c hparams/quickstart.yaml                       # offline quickstart (digits)
    python train.py validate -c output/train/<run>/args.yaml --resume output/train/<run>

Flags keep timm train.py's names and meanings; see docs/train.md for what we add and ignore.
"""
import sys


def main(argv=None) -> int:
    from timm_mixplug.config import UsageError, parse_args
    try:
        args = parse_args(argv)
        from timm_mixplug.engine import run
        run(args)
    except UsageError as e:
        print(f'train.py: error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
