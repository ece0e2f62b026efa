"""Package conventions: README names import from the top level, ``python -m timm_mixplug``, README examples."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, make_tiny_images, tiny_train_args

README = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()


def _timm_has(name: str) -> bool:
    import importlib
    for mod in ('timm', 'timm.data', 'timm.data.loader', 'timm.task', 'timm.loss', 'timm.utils', 'timm.models',
                'timm.optim', 'timm.scheduler'):
        if hasattr(importlib.import_module(mod), name):
            return True
    return False


def readme_public_names():
    """Classes (`CamelCase`), calls (`name(...)`), `from timm_mixplug import ...` and `timm_mixplug.name` in
    README.md, less timm's own names."""
    names = set(re.findall(r'`([A-Z]\w*[a-z]\w*)[`(]', README))
    names |= set(re.findall(r'`([a-z_]\w*)\(', README))
    for m in re.finditer(r'from timm_mixplug import ([\w, ]+)', README):
        names |= {n.strip() for n in m.group(1).split(',') if n.strip()}
    names |= set(re.findall(r'timm_mixplug\.([A-Za-z_]\w*)\b(?![/.])', README))
    return sorted(n for n in names if not _timm_has(n))


def test_readme_names_import_from_the_top_level():
    import timm_mixplug
    names = readme_public_names()
    assert {'AuxHeadModel', 'SoftTargetKLDiv', 'create_mixup', 'zero_mean',
            'setup_timm_mixing'} <= set(names)  # the parser finds them
    missing = [n for n in names if not hasattr(timm_mixplug, n)]
    assert not missing, f'README names not importable from timm_mixplug: {missing}'


def test_readme_validate_example_uses_the_quickstart_run_folder():
    import yaml
    with open(os.path.join(ROOT, 'hparams', 'quickstart.yaml')) as f:
        out = yaml.safe_load(f)['output']
    block = README.split('## Install and quickstart', 1)[1].split('\n## ', 1)[0]
    assert 'python train.py -c hparams/quickstart.yaml' in block
    run_line = next(line for line in block.splitlines() if line.startswith('run='))
    assert f'ls -d {out}/*/' in run_line
    assert 'python train.py validate --resume "$run"' in block
    assert 'python train.py validate --resume "$run/best.safetensors"' in block


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'conv_imgs', val_per_class=1)


def test_python_dash_m_trains_like_train_py(data_dir, tmp_path):
    args = tiny_train_args(data_dir, tmp_path, 'run')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'timm_mixplug', *args], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'run' / 'best.safetensors').is_file() and (tmp_path / 'run' / 'summary.csv').is_file()
    r = subprocess.run([sys.executable, '-m', 'timm_mixplug', *args, '--experiment', 'bad', '--model', 'no_such_model'],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('train.py: error: unknown --model')
