"""train.py, part 2: bad data files, class counts, one-channel input, the run-folder lock, SIGTERM, what a run
records about its data (checked on resume and validate), checkpoint and output faults, unreadable images."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import (ROOT, TRAIN_PY, load_train_script, make_tiny_images, one_error_line as _error, read_rows,
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


# ---- what a run records about its data; resume and validate check it ----

def _spy_evaluate(monkeypatch):
    from timm_mixplug.train import engine
    seen = {}
    orig = engine.evaluate

    def spy(args):
        seen.update(orig(args), img_size=args.img_size)
        return seen
    monkeypatch.setattr(engine, 'evaluate', spy)
    return seen


def _resume_args(args, run, *extra):
    return [a for a in args if a not in (str(run.parent), run.name, '--output', '--experiment')] + [
        '--resume', str(run), *extra]


@pytest.fixture(scope='module')
def trained_run(data_dir, tmp_path_factory):
    """A one-epoch run at 16 px (resnet20_cifar's default is 32) on the tiny folder."""
    out = tmp_path_factory.mktemp('trained')
    assert train_script.main(base_args(data_dir, out, 'r')) == 0
    return out / 'r'


def test_state_records_classes_and_data_config(trained_run):
    from timm_mixplug.utils.checkpoint import load_train_state
    _, meta = load_train_state(str(trained_run / 'last-state.safetensors'))
    data = meta['data']
    assert data['classes'] == ['class_0', 'class_1', 'class_2', 'class_3'] and data['num_classes'] == 4
    assert data['input_size'] == [3, 16, 16] and data['crop_pct'] == 1.0 and data['zero_mean_input'] is False
    assert len(data['mean']) == 3 and data['interpolation']
    assert meta['args']['img_size'] == 16 and meta['args']['epochs'] == 1  # the settings of this state


def test_validate_without_args_yaml_uses_the_state(trained_run, tmp_path, monkeypatch):
    import shutil
    run = tmp_path / 'copy'
    shutil.copytree(trained_run, run)
    best = float(read_rows(run / 'summary.csv')[0]['eval_top1'])
    os.remove(run / 'args.yaml')
    seen = _spy_evaluate(monkeypatch)
    assert train_script.main(['validate', '--resume', str(run), '--device', 'cpu']) == 0
    assert seen['img_size'] == 16 and seen['top1'] == pytest.approx(best, abs=1e-6)


def test_renamed_class_folder_is_refused_on_resume_and_validate(data_dir, trained_run, tmp_path, capsys):
    import shutil
    moved = tmp_path / 'data'
    shutil.copytree(data_dir, moved)
    for split in ('train', 'validation'):  # same count, new name: label 1 becomes class_2
        os.rename(moved / split / 'class_1', moved / split / 'renamed')
    args = _resume_args(base_args(str(moved), trained_run.parent, trained_run.name, '--epochs', '2'), trained_run)
    before = (trained_run / 'last-state.safetensors').read_bytes()
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert "names label 1 'class_2', the weights were trained with 'class_1' there" in line, line
    assert train_script.main(['validate', '--resume', str(trained_run), '--data-dir', str(moved),
                              '--device', 'cpu']) == 2
    line = _error(capsys)
    assert "--val-split 'validation' has classes that the trained weights lacks: renamed" in line, line
    assert (trained_run / 'last-state.safetensors').read_bytes() == before


def test_resume_that_dies_in_its_first_epoch_keeps_args_yaml(trained_run, data_dir, tmp_path, monkeypatch):
    import shutil
    import yaml
    from timm_mixplug.train import epochs
    run = tmp_path / 'copy'
    shutil.copytree(trained_run, run)
    before = (run / 'args.yaml').read_bytes()
    args = _resume_args(base_args(data_dir, run.parent, run.name, '--epochs', '2', '--lr', '0.02'), run)

    def killed(*a, **k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(epochs, 'train_one_epoch', killed)
        assert train_script.main(args) == 130
    assert (run / 'args.yaml').read_bytes() == before  # still the settings of the weights in the folder
    assert train_script.main(args) == 0  # the first state of the new settings brings their args.yaml
    saved = yaml.safe_load((run / 'args.yaml').read_text())
    assert saved['epochs'] == 2 and saved['lr'] == 0.02


def test_plain_state_dict_with_resume_points_to_initial_checkpoint(data_dir, trained_run, tmp_path, capsys):
    import torch
    from timm_mixplug.utils.checkpoint import load_weights
    pth = tmp_path / 'weights.pth'
    torch.save(load_weights(str(trained_run / 'last.safetensors')), pth)
    args = base_args(data_dir, tmp_path / 'out', 'x', '--resume', str(pth))
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert 'holds model weights only' in line and f'--initial-checkpoint {pth}' in line, line
    assert not (tmp_path / 'out').exists()


def test_initial_checkpoint_with_another_class_count_names_the_layer(data_dir, trained_run, tmp_path, capsys):
    args = base_args(data_dir, tmp_path / 'out', 'x', '--initial-checkpoint', str(trained_run / 'last.safetensors'),
                     '--num-classes', '6', '--allow-extra-classes')
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert 'fc.weight is (4, 64) in the checkpoint, (6, 64) in the model' in line, line
    assert line.endswith('the checkpoint has 4 classes: use --num-classes 4'), line


def test_errors_come_first_and_alone(data_dir, tmp_path, capsys):
    """The data-config block timm prints is one line after the checks; a check that fails after the build
    prints only its line."""
    assert train_script.main(base_args(data_dir, tmp_path / 'out', 'x', '--eval-metric', 'nope')) == 2
    captured = capsys.readouterr()
    assert 'Data processing configuration' not in captured.out + captured.err
    assert [ln for ln in captured.err.splitlines() if ln.strip()] == [
        ln for ln in captured.err.splitlines() if ln.startswith('train.py: error: --eval-metric')]


def test_pretrained_without_cached_weights_is_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), TORCH_HOME=str(tmp_path / 'th'),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, TRAIN_PY, '--dataset', 'mixplug/digits', '--model', 'resnet18',
                           '--pretrained', '--epochs', '1', '--warmup-epochs', '0', '--workers', '0',
                           '--output', str(tmp_path / 'out')], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('train.py: error: --pretrained: the weights of --model '
                                                   'resnet18 (timm/'), lines
    assert 'not in the local cache' in lines[0] and '--pretrained-path' in lines[0]


@pytest.mark.parametrize('dataset,expect,not_expect', [
    ('', 'one folder per split (train/, validation/), each holding one folder of images per class',
     '--dataset-download'),
    ('npz', 'holding <split>.npz files', '--dataset-download'),
    ('torch/cifar10', 'or add --dataset-download', None),
])
def test_missing_data_dir_says_what_it_must_hold(tmp_path, capsys, dataset, expect, not_expect):
    args = base_args(str(tmp_path / 'missing'), tmp_path / 'out', 'x') + (['--dataset', dataset] if dataset else [])
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert '--data-dir' in line and expect in line, line
    assert not_expect is None or not_expect not in line


def test_unwritable_output_and_full_disk_are_one_line(data_dir, tmp_path, capsys, monkeypatch):
    import errno
    import safetensors.torch
    from timm_mixplug.utils.checkpoint import load_train_state
    assert train_script.main(base_args(data_dir, '/proc/mixplug-out', 'x')) == 2
    line = _error(capsys)
    assert 'cannot create the run folder /proc/mixplug-out/x' in line and 'choose another --output' in line, line

    real = safetensors.torch.save_file
    calls = []

    def full_disk(tensors, path, metadata=None):
        if any('last-state' in c for c in calls):  # after epoch 0's state the disk is full
            calls.append(path)
            with open(path, 'wb') as f:
                f.write(b'partial')
            raise OSError(errno.ENOSPC, 'No space left on device', path)
        calls.append(path)
        return real(tensors, path, metadata=metadata)
    monkeypatch.setattr(safetensors.torch, 'save_file', full_disk)
    run = tmp_path / 'out' / 'd'
    assert train_script.main(base_args(data_dir, tmp_path / 'out', 'd', '--epochs', '3')) == 1
    line = _error(capsys)
    assert line.startswith(f'train.py: error: {run / "best.safetensors"}: No space left on device') or \
        line.startswith(f'train.py: error: {run / "last.safetensors"}: No space left on device'), line
    assert f'the last complete state is {run / "last-state.safetensors"}' \
        in line and f'--resume {run}' in line, line
    monkeypatch.setattr(safetensors.torch, 'save_file', real)
    _, meta = load_train_state(str(run / 'last-state.safetensors'))
    assert meta['epoch'] == 1 and not [n for n in os.listdir(run) if n.endswith('.tmp')]


def test_unreadable_validation_images_are_excluded_and_counted(data_dir, tmp_path, caplog):
    import shutil
    bad = tmp_path / 'data'
    shutil.copytree(data_dir, bad)
    victim = sorted((bad / 'validation' / 'class_2').iterdir())[0]
    victim.write_bytes(b'not an image')
    args = base_args(str(bad), tmp_path / 'out', 'v')
    assert train_script.main(args) == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith('Unreadable image') and victim.name in m for m in msgs), msgs[-5:]
    assert any(m == 'Eval: 1 unreadable image file(s) excluded from the metrics (named above)' for m in msgs)
    # the metric is over the 7 readable images: a multiple of 1/7
    top1 = float(read_rows(tmp_path / 'out' / 'v' / 'summary.csv')[0]['eval_top1'])
    assert min(abs(top1 - 100 * k / 7) for k in range(8)) < 1e-3, top1


def test_invalid_args_yaml_of_an_older_state_is_one_line(tmp_path):
    from timm_mixplug.errors import UsageError
    from timm_mixplug.train.resume import saved_args
    (tmp_path / 'args.yaml').write_text('epochs: [1\nlr: 0.1\n')
    state = str(tmp_path / 'last-state.safetensors')
    with pytest.raises(UsageError, match=r'args.yaml is not valid YAML .* at line 2\): restore it'):
        saved_args(state, {'model': 'm'})
    assert saved_args(state, {'args': {'epochs': 3}}) == {'epochs': 3}  # the state's own settings come first
