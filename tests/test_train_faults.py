"""train.py, part 2: bad data files, class counts, one-channel input, the run-folder lock, SIGTERM."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import (ROOT, TRAIN_PY, load_train_script, make_tiny_images, one_error_line as _error,
                      tiny_train_args as base_args, wait_for_file)

train_script = load_train_script('mixplug_train_faults')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'fault_imgs', val_per_class=2)



def _npz_dir(tmp_path, x, y, **kw):
    rng = np.random.default_rng(0)
    good_x = rng.integers(0, 255, (12, 16, 16, 3)).astype(np.uint8)
    np.savez(tmp_path / 'validation.npz', x=good_x, y=np.repeat(np.arange(3), 4))
    np.savez(tmp_path / 'train.npz', x=x, y=y, **kw)
    return base_args(str(tmp_path), tmp_path / 'out', 'x', '--dataset', 'npz')


@pytest.mark.parametrize('case,expect', [
    ('half_labels', '"y" must hold integer class labels 0..C-1, got [0.5, 1.5'),
    ('channels_first', 'channels first? use x.transpose(0, 2, 3, 1)'),
    ('rgba', 'RGBA? drop the alpha channel'),
    ('object', 'cannot be read (Object arrays cannot be loaded'),
    ('not_zip', 'is not an npz (zip) file'),
])
def test_bad_npz_files_are_refused_before_training(tmp_path, capsys, case, expect):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 16, 16, 3)).astype(np.uint8)
    y = np.repeat(np.arange(3), 4)
    if case == 'half_labels':
        args = _npz_dir(tmp_path, x, y + 0.5)
    elif case == 'channels_first':
        args = _npz_dir(tmp_path, x.transpose(0, 3, 1, 2), y)
    elif case == 'rgba':
        args = _npz_dir(tmp_path, np.concatenate([x, x[..., :1]], -1), y)
    elif case == 'object':
        args = _npz_dir(tmp_path, np.array([x[0], None] * 6, dtype=object), y)
    else:
        args = _npz_dir(tmp_path, x, y)
        (tmp_path / 'train.npz').write_text('not a zip file')
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert expect in line and 'train.npz' in line, line
    assert not (tmp_path / 'out').exists()


def test_integer_valued_float_labels_are_accepted(tmp_path):
    from timm_mixplug.data.datasets import NpzDataset
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(tmp_path / 'train.npz', x=x, y=np.array([0., 1., 2., 1.]))
    assert NpzDataset(str(tmp_path), 'train').targets == [0, 1, 2, 1]


def test_imb_factor_that_empties_classes_is_refused(tmp_path, capsys):
    from timm_mixplug.data.datasets import make_image_folder
    make_image_folder(str(tmp_path / 'd'), num_classes=4, per_class=16, val_per_class=1, size=16)
    args = base_args(str(tmp_path / 'd'), tmp_path / 'out', 'x', '--imb-factor', '100')
    assert train_script.main(args) == 2
    line = _error(capsys)
    # n_c = floor(16 * 100^(-c/3)) = 16, 3, 0, 0
    assert '--imb-factor 100 leaves 2 class(es) without training images (class_2, class_3' in line, line
    assert 'the smallest keeps 3' in line and 'use --imb-factor 16 or less' in line
    assert not (tmp_path / 'out').exists()


def test_num_classes_above_the_data_needs_allow_extra_classes(data_dir, tmp_path, capsys):
    args = base_args(data_dir, tmp_path / 'out', 'x', '--num-classes', '100')
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert '--num-classes 100 is more than the 4 classes' in line and '--allow-extra-classes' in line
    assert not (tmp_path / 'out').exists()
    assert train_script.main(args + ['--allow-extra-classes']) == 0


def test_in_chans_1_reads_images_as_grayscale(data_dir, tmp_path):
    """As timm's train.py: a one-channel model gets images read in mode 'L'."""
    args = base_args(data_dir, tmp_path / 'out', 'g', '--in-chans', '1')
    assert train_script.main(args) == 0
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.data import create_datasets
    a = parse_args(base_args(data_dir, tmp_path / 'o2', 'g', '--in-chans', '1', '--dataset', 'mixplug/digits@16'))
    ds_train, _, _ = create_datasets(a)
    assert ds_train.img_mode == 'L' and ds_train[0][0].mode == 'L'


def _start(args):
    return subprocess.Popen([sys.executable, TRAIN_PY, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_second_process_in_a_run_folder_is_refused_and_sigterm_exits_143(data_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    args = base_args(data_dir, out, 's', '--epochs', '50')
    proc = _start(args)
    run = out / 's'
    wait_for_file(run / 'args.yaml', proc)
    try:
        # a second run in the same folder, and a resume of the running one: one line each, nothing written
        before = sorted(os.listdir(run))
        assert train_script.main(base_args(data_dir, out, 's', '--overwrite-experiment')) == 2
        line = _error(capsys)
        assert f'{run} is in use by another train.py (pid {proc.pid})' in line, line
        wait_for_file(run / 'last-state.safetensors', proc)
        resume = [a for a in args if a not in (str(out), 's', '--output', '--experiment')] + ['--resume', str(run)]
        assert train_script.main(resume) == 2
        assert f'(pid {proc.pid})' in _error(capsys)
        assert set(before) <= set(os.listdir(run))
    finally:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'train.py: terminated (SIGTERM); the last state is {run / "last-state.safetensors"}'), last
    assert last.endswith(f'--resume {run}')
    # the lock went with the process: the run continues
    resume = [a for a in args if a not in (str(out), 's', '--output', '--experiment')] + [
        '--resume', str(run), '--max-epochs-this-run', '1']
    assert train_script.main(resume) == 0


def test_temporary_names_are_unique_per_write(tmp_path):
    from timm_mixplug.utils.checkpoint import remove_stale_temp, temp_path
    a, b = temp_path(str(tmp_path / 'summary.csv')), temp_path(str(tmp_path / 'summary.csv'))
    assert a != b and os.path.basename(a).startswith('.summary.csv.') and a.endswith('.tmp')
    assert sorted(remove_stale_temp(str(tmp_path))) == sorted(os.path.basename(p) for p in (a, b))
