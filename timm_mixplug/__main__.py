"""``python -m timm_mixplug [train.py flags]``: the same training / ``validate`` entry as ``train.py``;
``python -m timm_mixplug compare ...``: the method comparison (``timm_mixplug/compare.py``)."""
import sys

if __name__ == '__main__':
    if sys.argv[1:2] == ['compare']:
        from .compare import main as compare_main
        sys.exit(compare_main(sys.argv[2:]))
    from .engine import main
    sys.exit(main())
