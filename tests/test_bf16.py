"""Every task trains under ``--amp --amp-dtype bfloat16`` on CPU (the fast CPU path of the evidence runs)."""
import math

import pytest
import torch
import torch.nn as nn

from conftest import load_train_script, make_tiny_images, read_rows, tiny_train_args

train = load_train_script('mixplug_train_script_bf16')

TASKS = {
    'bcplus': ['--mix', 'bcplus', '--pad-crop', '2'],
    'dml_superclass': ['--task', 'dml', '--dml-peers', '2', '--mix', 'superclass', '--superclass-map', '{smap}'],
    'glmc_clr': ['--task', 'glmc', '--glmc-clr', '--imb-factor', '2'],
    'nonharmonic': ['--task', 'nonharmonic', '--nh-views', '2', '--nh-device-views', '--no-aug'],
    'aux': ['--task', 'aux', '--aux-tasks', 'superclass,crop_pos', '--superclass-map', '{smap}', '--no-aug'],
}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'bf16imgs', val_per_class=2, superclass_map=True)


@pytest.mark.parametrize('name', sorted(TASKS))
def test_task_trains_under_bf16_autocast(tiny, tmp_path, name):
    """One epoch of each task with bf16 autocast and channels-last (the evidence runs' setting)."""
    conv_dtypes = set()

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d) and module.training and isinstance(output, torch.Tensor):
            conv_dtypes.add(output.dtype)

    extra = [a.format(smap=f'{tiny}/super.yaml') for a in TASKS[name]]
    argv = tiny_train_args(tiny, tmp_path, name, '--amp', '--amp-dtype', 'bfloat16', '--channels-last', *extra)
    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        assert train.main(argv) == 0
    finally:
        handle.remove()
    assert conv_dtypes == {torch.bfloat16}  # the training forward ran under autocast
    row = read_rows(tmp_path / name / 'summary.csv')[-1]
    assert math.isfinite(float(row['train_loss'])) and math.isfinite(float(row['eval_loss']))


@pytest.mark.parametrize('native', [True, False])
def test_emulated_bf16_is_said_in_one_line(monkeypatch, caplog, native):
    """--amp-dtype bfloat16 on a CPU without native bf16 is emulated (10x slower here): one warning says so."""
    import argparse
    import logging
    from timm_mixplug.train import build
    from timm_mixplug.utils import precision
    monkeypatch.setattr(precision, 'native_bf16', lambda device: native)
    args = argparse.Namespace(amp=True, amp_dtype='bfloat16', rank=0)
    with caplog.at_level(logging.WARNING, logger='train'):
        autocast, scaler = build.amp_setup(args, torch.device('cpu'))
    said = [r.getMessage() for r in caplog.records]
    assert scaler is None and autocast().fast_dtype == torch.bfloat16
    assert said == ([] if native else [
        '--amp-dtype bfloat16: this CPU has no native bf16 (AVX512-BF16 or AMX), so autocast emulates it, several '
        'times slower than fp32 (10x for resnet20_cifar on an AVX2 CPU); drop --amp for speed'])
