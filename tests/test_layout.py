"""The package's layers: library pieces never read argparse, imports run one way, a new method is one module."""
import ast
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, 'timm_mixplug')

# layer -> the package layers it may import (besides itself); train (the application) may import everything
ALLOWED = {
    'errors': set(),
    'loss': set(),
    'models': set(),
    'utils': {'errors'},
    'data': {'errors', 'loss'},
    'task': {'errors', 'loss', 'data', 'utils'},
    'timm_compat': {'errors', 'loss', 'data'},
}
LIBRARY = ('loss', 'models', 'utils', 'data', 'task', 'timm_compat')


def _modules():
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, PKG)
                yield rel.split(os.sep)[0].removesuffix('.py'), rel, ast.parse(open(path).read())


def _package_imports(rel: str, tree: ast.AST):
    """The timm_mixplug layers a module imports (module level and inside functions)."""
    parts = ['timm_mixplug'] + rel.removesuffix('.py').split(os.sep)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:len(parts) - node.level]
                names = ['.'.join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or '']
        for n in names:
            if n.startswith('timm_mixplug.'):
                yield n.split('.')[1]


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
        # bc.py registers them; _moved names the old module
        if rel in (os.path.join('data', 'mixing', 'bc.py'), '_moved.py'):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ('bc', 'bcplus'):
                bad.append(f'{rel}:{node.lineno} {node.value!r}')
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
    assert engine.main(['--data-dir', data, '--model', 'resnet20_cifar', '--img-size', '16', '-b', '8',
                        '--epochs', '1', '--warmup-epochs', '0', '--workers', '0', '--device', 'cpu',
                        '--output', str(tmp_path), '--experiment', 'toy', '--mix', 'toyflip', '--toyflip-lam',
                        '0.25', '--task', 'toyscale']) == 0
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
