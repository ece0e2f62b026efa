"""Deprecated module paths of timm_mixplug 0.1 (a flat row of modules), kept importable.

``import timm_mixplug.dml`` (or ``from timm_mixplug.glmc import GLMCTask``) still works: the old name is a
module whose attributes are looked up in the modules its contents moved to, with one ``DeprecationWarning``
naming the new place (as timm kept ``timm.models.layers`` importable after moving it to ``timm.layers``).
"""
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module -> the modules its contents now live in (looked up in this order)
MOVED = {
    'losses': ('loss',),
    'mixing': ('data.mixing',),
    'bc': ('data.mixing.bc',),
    'superclass': ('data.mixing.superclass',),
    'datasets': ('data.datasets', 'train.data'),
    'dataset_wrappers': ('data.wrappers',),
    'longtail': ('data.longtail', 'task.evaluators', 'train.specs.longtail'),
    'hierarchy': ('data.hierarchy',),
    'recorded_transforms': ('data.transforms',),
    'tasks': ('train.specs', 'task.classification'),
    'dml': ('task.dml', 'loss.mutual', 'train.specs.dml'),
    'glmc': ('task.glmc', 'loss.contrastive', 'train.specs.glmc'),
    'nonharmonic': ('task.nonharmonic', 'train.specs.nonharmonic'),
    'aux_tasks': ('task.aux', 'train.specs.aux'),
    'checkpoint': ('utils.checkpoint',),
    'checkpoint_history': ('utils.checkpoint_history',),
    'timm_flags': ('train.flags',),
    'validation': ('train.ranges',),
    'config': ('train.config',),
    'cli': ('train.config',),
    'timm_options': ('train.options',),
    'resume': ('train.resume',),
    'run_folder': ('train.run_folder',),
    'wandb_log': ('train.wandb_log',),
    'engine': ('train.engine', 'train.build', 'train.loop'),
}
_PKG = __name__.rpartition('.')[0]


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, leaf = fullname.rpartition('.')
        if pkg == _PKG and leaf in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        leaf = module.__name__.rpartition('.')[2]
        targets = []
        for rel in MOVED[leaf]:
            try:
                targets.append(importlib.import_module(f'{_PKG}.{rel}'))
            except ModuleNotFoundError:
                continue
        where = ', '.join(t.__name__ for t in targets)
        warnings.warn(f'{module.__name__} is deprecated; import from {where}', DeprecationWarning, stacklevel=3)

        def __getattr__(name):
            for t in targets:
                if hasattr(t, name):
                    return getattr(t, name)
            raise AttributeError(f'module {module.__name__!r} (moved to {where}) has no attribute {name!r}')
        module.__getattr__ = __getattr__
        module.__doc__ = f'Deprecated: moved to {where}.'


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
