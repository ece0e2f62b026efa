"""``python -m timm_mixplug [train.py flags]``: the same training / ``validate`` entry as ``train.py``;
``python -m timm_mixplug compare ...``: the method bake-off (``timm_mixplug/compare/``)."""
import sys

if __name__ == '__main__':
    if sys.argv[1:2] == ['compare']:
        from timm_mixplug.compare.cli import main as compare_main
        sys.exit(compare_main(sys.argv[2:]))
    from timm_mixplug.train.engine import main
    sys.exit(main())
