"""The package's layout: library pieces never read argparse or name flags, imports run one way with no cycle, small
modules and functions, and a new method is a library module plus one spec module and nothing else."""
import ast
import os
import re
import sys
import textwrap

import pytest
import torch

from conftest import tiny_train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, 'timm_mixplug')

# layer -> the package layers it may import (besides itself); train (the train.py application) may import every
# library layer, compare (the bake-off application) may import train's method registry; nothing imports compare
ALLOWED = {
    'errors': set(),
    'loss': set(),
    'models': set(),
    'utils': {'errors'},
    'data': {'errors', 'loss', 'utils'},
    'task': {'errors', 'loss', 'data', 'utils'},
    'timm_compat': {'errors', 'loss', 'data'},
    'train': {'errors', 'loss', 'models', 'utils', 'data', 'task', 'timm_compat'},
    'compare': {'errors', 'utils', 'train'},
}
LIBRARY = ('loss', 'models', 'utils', 'data', 'task', 'timm_compat')
# function-level imports allowed: optional packages (extras) and a POSIX-only module
LAZY_IMPORTS = {'sklearn', 'wandb', 'matplotlib', 'fcntl'}
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 500


def _modules():
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, PKG)
                yield rel.split(os.sep)[0].removesuffix('.py'), rel, ast.parse(open(path).read())


def _module_name(rel: str) -> str:
    return '.'.join(['timm_mixplug'] + rel.removesuffix('.py').split(os.sep)).removesuffix('.__init__')


def _imported_modules(rel: str, tree: ast.AST):
    """The timm_mixplug modules a module imports (module level and inside functions), with ``from X import y``
    counted as X and X.y (y may be a submodule)."""
    parts = _module_name(rel).split('.') + (['__init__'] if rel.endswith('__init__.py') else [])
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = '.'.join(parts[:len(parts) - node.level] + ([node.module] if node.module else [])) \
                if node.level else (node.module or '')
            names = [base] + [f'{base}.{a.name}' for a in node.names]
        yield from (n for n in names if n.startswith('timm_mixplug'))


def _package_imports(rel: str, tree: ast.AST):
    """The timm_mixplug layers a module imports."""
    for name in _imported_modules(rel, tree):
        if '.' in name:
            yield name.split('.')[1]


def test_imports_run_one_way():
    bad = []
    for layer, rel, tree in _modules():
        if layer not in ALLOWED:
            continue
        for imp in _package_imports(rel, tree):
            if imp != layer and imp not in ALLOWED[layer]:
                bad.append(f'{rel} imports timm_mixplug.{imp}')
    assert not bad, bad


def test_library_pieces_never_read_argparse():
    """No library module imports argparse, builds a parser or reads an ``args`` namespace."""
    bad = []
    for layer, rel, tree in _modules():
        if layer not in LIBRARY:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
                if 'argparse' in mods:
                    bad.append(f'{rel}:{node.lineno} imports argparse')
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'args':
                bad.append(f'{rel}:{node.lineno} reads args.{node.attr}')
            elif isinstance(node, ast.arg) and node.arg == 'args':
                bad.append(f'{rel}:{node.lineno} takes a parameter named args')
    assert not bad, bad


def test_no_method_name_literal_outside_its_registration():
    """What a mixer needs is a MixerSpec property: 'bc' / 'bcplus' appear only where they are registered."""
    bad = []
    for layer, rel, tree in _modules():
        if rel == os.path.join('data', 'mixing', 'bc.py'):  # registers them
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ('bc', 'bcplus'):
                bad.append(f'{rel}:{node.lineno} {node.value!r}')
    assert not bad, bad


def _import_graph():
    mods = {_module_name(rel): rel for _, rel, _ in _modules()}
    graph = {}
    for _, rel, tree in _modules():
        deps = set()
        for name in _imported_modules(rel, tree):
            while name and name not in mods:
                name = name.rpartition('.')[0]
            if name and name != _module_name(rel):
                deps.add(name)
        graph[_module_name(rel)] = deps
    return graph


def test_no_import_cycle_anywhere():
    """The whole package, applications included, with imports inside functions counted too."""
    graph, state, cycles = _import_graph(), {}, []

    def visit(node, path):
        state[node] = 'open'
        for dep in sorted(graph[node]):
            if state.get(dep) == 'open':
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 'done'
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, [' -> '.join(c) for c in cycles]


def test_imports_at_module_top():
    """Function-level imports only for optional packages (extras) and POSIX-only modules."""
    bad = []
    for _, rel, tree in _modules():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        mod = node.names[0].name if isinstance(node, ast.Import) else (node.module or '.')
                        if mod.split('.')[0] not in LAZY_IMPORTS:
                            bad.append(f'{rel}:{node.lineno} {ast.unparse(node)}')
    assert not bad, bad


def test_small_functions_and_modules():
    long_functions, big_modules = [], []
    for layer, rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f'{rel}:{node.lineno} {node.name} ({n} lines)')
        n = len(open(os.path.join(PKG, rel)).read().splitlines())
        if layer != 'models' and n > MAX_MODULE_LINES:
            big_modules.append(f'{rel} ({n} lines)')
    assert not long_functions, long_functions
    assert not big_modules, big_modules


def test_each_application_in_its_own_folder():
    assert os.path.isdir(os.path.join(PKG, 'train')) and os.path.isdir(os.path.join(PKG, 'compare'))
    assert not os.path.exists(os.path.join(PKG, 'train', 'compare.py'))
    assert not os.path.exists(os.path.join(PKG, '_moved.py'))


def test_library_errors_name_keywords_not_flags():
    """A library user passes keyword arguments: an error or a logged line never tells them to set a flag."""
    flag = re.compile(r'(?<![\w-])--[a-z][a-z0-9-]+')
    bad = []
    for layer, rel, tree in _modules():
        if layer not in LIBRARY:
            continue
        for node in ast.walk(tree):
            said = isinstance(node, ast.Raise) or (
                isinstance(node, ast.Call) and getattr(node.func, 'attr', '') in ('warning', 'warn', 'info', 'error'))
            if said:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and flag.search(sub.value):
                        bad.append(f'{rel}:{sub.lineno} {flag.search(sub.value).group(0)}')
    assert not bad, bad


# ---- adding a method: its own module (here: this test) and one registration ----

@pytest.fixture
def toy_methods():
    """A toy mixer with a flag and a toy task with a flag, registered the way a new method would be."""
    from timm.task import ClassificationTask
    from timm_mixplug.data.mixing import base as mixing
    from timm_mixplug.train.specs import MixSpec, TaskSpec, base as specs, register_mix, register_task

    class FlipMixer:
        """Mixes each image with the batch flipped: lam * x + (1 - lam) * x[::-1], the same for the targets."""
        mixup_enabled = True

        def __init__(self, num_classes, label_smoothing, lam):
            self.num_classes, self.lam = num_classes, lam

        def __call__(self, x, target):
            t = torch.nn.functional.one_hot(target, self.num_classes).float()
            return self.lam * x + (1 - self.lam) * x.flip(0), self.lam * t + (1 - self.lam) * t.flip(0)

    mixing.register_mixup('toyflip', lambda num_classes, label_smoothing, collate, lam=0.5:
                          FlipMixer(num_classes, label_smoothing, lam), collate=False)

    @register_mix('toyflip')
    class ToyFlipSpec(MixSpec):
        def add_args(self, parser):
            parser.add_argument('--toyflip-lam', type=float, default=0.5)

        def mixer_kwargs(self, args, info):
            return dict(lam=args.toyflip_lam)

    @register_task('toyscale')
    class ToyScaleSpec(TaskSpec):
        def add_args(self, parser):
            parser.add_argument('--toyscale-factor', type=float, default=1.0)

        def create_task(self, args, model, criterion, mixer, info, device):
            task = ClassificationTask(model, criterion=criterion, device=device, verbose=False)
            task.toy_factor = args.toyscale_factor
            return task

    yield
    mixing._MIXERS.pop('toyflip')
    specs._MIXES.pop('toyflip')
    specs._TASKS.pop('toyscale')


def test_toy_method_gets_flags_and_the_consumption_check(toy_methods, tmp_path):
    from timm_mixplug.data.datasets import make_image_folder
    from timm_mixplug.errors import UsageError
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train import engine
    args = parse_args(['--mix', 'toyflip', '--toyflip-lam', '0.25', '--task', 'toyscale', '--toyscale-factor', '2'])
    assert args.mix == 'toyflip' and args.toyflip_lam == 0.25 and args.toyscale_factor == 2.0
    assert args.smoothing == 0.0  # MixerSpec's default smoothing
    with pytest.raises(UsageError, match='--toyflip-lam is read only with --mix toyflip'):
        parse_args(['--toyflip-lam', '0.25'])
    with pytest.raises(UsageError, match='--toyscale-factor is read only with --task toyscale'):
        parse_args(['--toyscale-factor', '2'])
    data = make_image_folder(str(tmp_path / 'data'), num_classes=4, per_class=8, val_per_class=1, size=16)
    assert engine.main(tiny_train_args(data, tmp_path, 'toy', '--mix', 'toyflip', '--toyflip-lam', '0.25',
                                       '--task', 'toyscale')) == 0
    assert os.path.isfile(tmp_path / 'toy' / 'best.safetensors')


# ---- the declared timm minimum has every timm name we import ----

def _v(s: str):
    return tuple(int(p) for p in s.split('.')[:3] if p.isdigit())


def test_declared_timm_minimum_has_every_imported_name():
    """tests/fixtures/timm_names.json (``scripts/check_timm_minimum.py``) records the first checked timm
    release with each imported name; pyproject's minimum must be at least the newest of them."""
    import json
    import re
    import sys
    import timm
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    from check_timm_minimum import imported_timm_names
    table = json.load(open(os.path.join(ROOT, 'tests', 'fixtures', 'timm_names.json')))['first_release']
    assert sorted(table) == imported_timm_names(), 'timm imports changed: rerun scripts/check_timm_minimum.py'
    declared = re.search(r'"timm>=([\d.]+)"', open(os.path.join(ROOT, 'pyproject.toml')).read()).group(1)
    newest = max(table.values(), key=_v)
    assert _v(declared) >= _v(newest), f'pyproject says timm>={declared}, but the imports need {newest}'
    assert _v(timm.__version__) >= _v(declared)


# ---- a new method is two files: its library module and its spec module, and no edit anywhere else ----

TOY_LIBRARY = '''
"""A toy objective for the layout test: the loss of logits divided by a temperature."""
import torch.nn as nn


class TemperatureLoss(nn.Module):
    def __init__(self, criterion, temperature):
        super().__init__()
        self.criterion, self.temperature = criterion, temperature

    def forward(self, logits, target):
        return self.criterion(logits / self.temperature, target)
'''

TOY_SPEC = '''
"""--task toytemp: the toy objective from train.py's flags."""
from types import MappingProxyType

from timm.task import ClassificationTask

from timm_mixplug.train.rules import number
from timm_mixplug.train.specs import TaskSpec, register_task
from toy_temperature import TemperatureLoss


@register_task('toytemp')
class ToyTemperatureSpec(TaskSpec):
    ranges = MappingProxyType({'toytemp_t': number(lo=0, lo_open=True)})
    weight_settings = ('toytemp_t',)

    def add_args(self, parser):
        parser.add_argument('--toytemp-t', type=float, default=1.0, help='logit temperature')

    def compare_presets(self):
        return {'toytemp': ['--task', 'toytemp', '--toytemp-t', '2']}

    def create_task(self, args, model, criterion, mixer, info, device):
        return ClassificationTask(model, criterion=TemperatureLoss(criterion, args.toytemp_t), device=device,
                                  verbose=False)
'''


@pytest.fixture
def toy_task_files(tmp_path, monkeypatch):
    """The two files of a new method, written and imported the way a user's own package would be."""
    from timm_mixplug.train.specs import base as specs
    folder = tmp_path / 'toy_pkg'
    folder.mkdir()
    (folder / 'toy_temperature.py').write_text(textwrap.dedent(TOY_LIBRARY))
    (folder / 'toy_temperature_spec.py').write_text(textwrap.dedent(TOY_SPEC))
    monkeypatch.syspath_prepend(str(folder))
    import toy_temperature_spec  # noqa: F401  (registers --task toytemp)
    yield
    specs._TASKS.pop('toytemp')
    for name in ('toy_temperature', 'toy_temperature_spec'):
        sys.modules.pop(name)


def test_new_method_from_two_files_is_checked_refused_resumed_and_compared(toy_task_files, tmp_path, capsys):
    from timm_mixplug.compare.methods import builtin_methods
    from timm_mixplug.data.datasets import make_image_folder
    from timm_mixplug.errors import UsageError
    from timm_mixplug.train import engine
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.ranges import all_ranges
    assert parse_args(['--task', 'toytemp', '--toytemp-t', '2']).toytemp_t == 2.0
    assert 'toytemp_t' in all_ranges()  # the flag contract test covers it too
    with pytest.raises(UsageError, match=r'--toytemp-t must be a number > 0, got 0'):
        parse_args(['--task', 'toytemp', '--toytemp-t', '0'])
    with pytest.raises(UsageError, match='--toytemp-t is read only with --task toytemp'):
        parse_args(['--toytemp-t', '2'])
    assert builtin_methods()['toytemp'] == ['--task', 'toytemp', '--toytemp-t', '2']

    data = make_image_folder(str(tmp_path / 'data'), num_classes=4, per_class=8, val_per_class=1, size=16)
    run = tiny_train_args(data, None, None, '--output', str(tmp_path), '--task', 'toytemp', '--toytemp-t', '2',
                          epochs=2)
    assert engine.main(run + ['--experiment', 'toy', '--max-epochs-this-run', '1']) == 0
    folder = str(tmp_path / 'toy')
    assert engine.main(run + ['--resume', folder]) == 0
    assert len(open(os.path.join(folder, 'summary.csv')).read().splitlines()) == 3  # header + 2 epochs
    capsys.readouterr()
    assert engine.main(['validate', '--resume', folder, '--toytemp-t', '3']) == 2  # a weight setting
    assert '--toytemp-t 3.0: the weights in' in capsys.readouterr().err
