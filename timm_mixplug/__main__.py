"""``python -m timm_mixplug [train.py flags]``: the same training / ``validate`` entry as ``train.py``."""
import sys

from timm_mixplug.train.engine import main

if __name__ == '__main__':
    sys.exit(main())
