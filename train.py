#!/usr/bin/env python3
"""timm-style training script for timm_mixplug (BC/BC+, superclass mixup, DML, GLMC, ...).

    torchrun --nproc_per_node=N train.py -c hparams/<recipe>.yaml --mix bcplus
    python train.py -c hparams/quickstart.yaml                       # offline quickstart (digits)
    python train.py validate --resume output/train/<run>              # uses the run's args.yaml

Flags keep timm train.py's names and meanings; docs/train.md lists what we add and what we ignore.
Bad input prints one ``train.py: error: ...`` line and exits with code 2.
"""
import sys


def main(argv=None) -> int:
    from timm_mixplug.train.engine import main as engine_main
    return engine_main(argv)


if __name__ == '__main__':
    sys.exit(main())
