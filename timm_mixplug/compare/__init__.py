"""``python -m timm_mixplug compare``: a method bake-off on your own data.

Every (method, seed) pair is one ``python -m timm_mixplug`` training process with the same training setup
(train.py flags after ``--``, ``--base-args`` and / or a ``--config`` YAML) plus the method's flags. The
final value of a ``summary.csv`` column (``--metric``, default ``eval_top1``) is compared across methods:
mean ± std over seeds and, against ``--baseline``, the paired per-seed difference with a 95 % Student-t
interval. Everything lands in ``--output``::

    runs/<method>-s<seed>/       train.py's run folder        runs/<method>-s<seed>.log   its stdout / stderr
    results/<method>-s<seed>.json  one finished run            compare.md / .json / .png    the report

A run with a result file is reused; an unfinished run folder (an interrupted compare) is continued with
train.py's ``--resume``, one without a saved state is started again. Before any run starts, each method's
train.py arguments go through train.py's own parser (``preflight``); training happens in the child processes.

Modules: ``options`` (command line), ``methods`` (built-in presets, ``--methods-file``), ``runs`` (one run's
files and result), ``guard`` (the ``--output`` lock, train.py processes left running), ``preflight`` (the
setup check with train.py's parser), ``runner`` (child processes, devices, signals), ``stats`` (mean ± std,
paired t-interval), ``report`` (compare.json / .md / .png), ``cli`` (``main``).
"""
