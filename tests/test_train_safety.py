"""train.py never mis-trains silently: resume semantics, split safety, run-folder rules, Ctrl-C, NaN stop,
``validate`` with the run's own settings (tiny generated data, CPU)."""
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import (ROOT, TRAIN_PY, load_train_script, make_tiny_images, one_error_line as _error, read_rows,
                      tiny_train_args as base_args, wait_for_file)

train_script = load_train_script('mixplug_train_safety')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'safety_imgs', val_per_class=2)


def resume_args(data_dir, run, *extra):
    args = base_args(data_dir, 'unused', 'unused', *extra)
    i = args.index('--output')
    del args[i:i + 4]  # --output and --experiment: a resumed run continues in its folder
    return args + ['--resume', str(run)]



def _same_weights(a, b):
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_more_epochs_equals_uninterrupted_run(data_dir, tmp_path, caplog):
    """--epochs 1, then --resume --epochs 2 == --epochs 2 (the schedule comes from the command line)."""
    import logging
    caplog.set_level(logging.INFO)
    assert train_script.main(base_args(data_dir, tmp_path, 'full', '--epochs', '2')) == 0
    assert train_script.main(base_args(data_dir, tmp_path, 'short')) == 0
    shutil.copytree(tmp_path / 'short', tmp_path / 'short_lr')
    caplog.clear()
    assert train_script.main(resume_args(data_dir, tmp_path / 'short', '--epochs', '2')) == 0
    changed = [r.getMessage() for r in caplog.records if 'settings changed' in r.getMessage()]
    assert len(changed) == 1 and changed[0].endswith("settings changed from the checkpoint's: epochs 1 -> 2")
    full, short = read_rows(tmp_path / 'full' / 'summary.csv'), read_rows(tmp_path / 'short' / 'summary.csv')
    assert [r['epoch'] for r in short] == ['0', '1']
    for key in ('train_loss', 'eval_loss', 'eval_top1', 'lr'):
        assert [r[key] for r in full] == [r[key] for r in short], key
    assert float(short[1]['lr']) > 0  # the old schedule (1 epoch) would train epoch 1 at lr 0
    assert _same_weights(tmp_path / 'full' / 'last.safetensors', tmp_path / 'short' / 'last.safetensors')
    # a new --lr is used: cosine over 2 epochs at t=1 gives lr / 2
    assert train_script.main(resume_args(data_dir, tmp_path / 'short_lr', '--epochs', '2', '--lr', '0.2')) == 0
    assert float(read_rows(tmp_path / 'short_lr' / 'summary.csv')[1]['lr']) == pytest.approx(0.1)


def test_plateau_with_noise_resumes_bit_exactly(data_dir, tmp_path):
    common = ['--epochs', '2', '--sched', 'plateau', '--patience-epochs', '0', '--decay-rate', '0.5',
              '--lr-noise', '0.0', '--eval-metric', 'loss']
    assert train_script.main(base_args(data_dir, tmp_path, 'full', *common)) == 0
    assert train_script.main(base_args(data_dir, tmp_path, 'part', *common, '--max-epochs-this-run', '1')) == 0
    assert train_script.main(resume_args(data_dir, tmp_path / 'part', *common)) == 0
    full, part = read_rows(tmp_path / 'full' / 'summary.csv'), read_rows(tmp_path / 'part' / 'summary.csv')
    assert [r['lr'] for r in full] == [r['lr'] for r in part]
    assert [r['train_loss'] for r in full] == [r['train_loss'] for r in part]
    assert _same_weights(tmp_path / 'full' / 'last.safetensors', tmp_path / 'part' / 'last.safetensors')


def test_reused_experiment_refused_then_overwritten(data_dir, tmp_path, capsys):
    assert train_script.main(base_args(data_dir, tmp_path, 'r', '--mix', 'bcplus')) == 0
    run = tmp_path / 'r'
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert train_script.main(base_args(data_dir, tmp_path, 'r')) == 2
    line = _error(capsys)
    assert '--experiment r' in line and 'already holds a run' in line and '--overwrite-experiment' in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # --overwrite-experiment with --resume is contradictory
    assert train_script.main(resume_args(data_dir, run, '--overwrite-experiment')) == 2
    assert '--overwrite-experiment' in _error(capsys)

    # validate --resume RUN uses the run's settings: the BC+ zero-mean input without repeating --mix
    from timm_mixplug.train import engine
    best = float(read_rows(run / 'summary.csv')[0]['eval_top1'])
    seen = {}
    orig = engine.evaluate

    def spy(args):
        seen.update(orig(args), mix=args.mix)
        return seen
    engine.evaluate = spy
    try:
        assert train_script.main(['validate', '--resume', str(run), '--workers', '0', '--device', 'cpu']) == 0
    finally:
        engine.evaluate = orig
    assert seen['mix'] == 'bcplus' and seen['top1'] == pytest.approx(best, abs=1e-6)
    capsys.readouterr()
    assert train_script.main(['validate', '--resume', str(run), '--mix', 'none', '--device', 'cpu']) == 2
    assert '--mix none' in _error(capsys)
    assert train_script.main(['validate', '--resume', str(run), '--model', 'resnet32_cifar', '--device', 'cpu']) == 2
    assert '--model' in _error(capsys)

    # an older run's --checkpoint-hist epochs and recovery state go too (they would join the new history)
    (run / 'checkpoint-7.safetensors').write_bytes((run / 'checkpoint-0.safetensors').read_bytes())
    (run / 'recovery-state.safetensors').write_bytes((run / 'last-state.safetensors').read_bytes())
    assert train_script.main(base_args(data_dir, tmp_path, 'r', '--overwrite-experiment')) == 0
    rows = read_rows(run / 'summary.csv')
    assert len(rows) == 1
    assert sorted(p.name for p in run.glob('checkpoint-*')) == ['checkpoint-0.safetensors']
    assert not (run / 'recovery-state.safetensors').exists()
    import yaml
    assert yaml.safe_load((run / 'args.yaml').read_text())['mix'] == 'none'


def test_nan_loss_stops_and_keeps_last_good_state(data_dir, tmp_path, capsys):
    assert train_script.main(base_args(data_dir, tmp_path, 'n')) == 0
    run = tmp_path / 'n'
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix == '.safetensors'}
    capsys.readouterr()
    assert train_script.main(resume_args(data_dir, run, '--epochs', '2', '--lr', '1e30')) == 1
    line = _error(capsys)
    assert 'NaN or inf at epoch 1, step ' in line and str(run / 'last-state.safetensors') in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.suffix == '.safetensors'} == files
    assert len(read_rows(run / 'summary.csv')) == 1


def test_sigint_one_line_exit_130_and_resume(data_dir, tmp_path):
    out = tmp_path / 'out'
    args = base_args(data_dir, out, 's', '--epochs', '50')
    proc = subprocess.Popen([sys.executable, TRAIN_PY, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    state = out / 's' / 'last-state.safetensors'
    wait_for_file(state, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'train.py: interrupted; the last state is {state} ('), last
    cmd = last.split('resume with: ', 1)[1]
    assert cmd.startswith('python train.py ') and cmd.endswith(f'--resume {out / "s"}')
    done = int(re.search(r'\((\d+) epochs? done\)', last).group(1))
    # a kill during a checkpoint write leaves a temporary file: removed when the run starts again
    stale = out / 's' / '.last-state.safetensors.abc123.tmp'
    stale.write_bytes(b'partial')
    import shlex
    resume = shlex.split(cmd)[2:] + ['--max-epochs-this-run', '1']
    assert train_script.main(resume) == 0
    assert not stale.exists()
    rows = read_rows(out / 's' / 'summary.csv')
    assert [int(r['epoch']) for r in rows] == list(range(done + 1))


# ---- split safety ----

def test_missing_and_misspelt_splits_are_errors(data_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    assert train_script.main(base_args(data_dir, out, 'x', '--val-split', 'nosuchsplit')) == 2
    line = _error(capsys)
    assert "--val-split 'nosuchsplit'" in line and 'train, validation' in line
    assert train_script.main(base_args(data_dir, out, 'x', '--train-split', 'trian')) == 2
    assert "--train-split 'trian'" in _error(capsys)
    flat = tmp_path / 'flat'  # class folders only, no train/ validation/ split folders
    shutil.copytree(os.path.join(data_dir, 'train'), flat)
    assert train_script.main(base_args(str(flat), out, 'x')) == 2
    line = _error(capsys)
    assert "--train-split 'train'" in line and 'class_0' in line
    assert train_script.main(['--dataset', 'mixplug/digits', '--val-split', 'vall', '--device', 'cpu',
                               '--output', str(out)]) == 2
    assert "--val-split 'vall'" in _error(capsys)
    assert not out.exists()


def test_validation_classes_must_be_training_classes(data_dir, tmp_path, capsys):
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.data import create_datasets
    root = tmp_path / 'd'
    shutil.copytree(data_dir, root)
    shutil.rmtree(root / 'validation' / 'class_1')  # a training class without validation images
    args = parse_args(['--data-dir', str(root), '--device', 'cpu'])
    ds_train, ds_eval, info = create_datasets(args)
    assert ds_eval.reader.class_to_idx == ds_train.reader.class_to_idx  # same indices, not re-numbered
    assert sorted(set(t for _, t in ds_eval.reader.samples)) == [0, 2, 3]
    shutil.copytree(root / 'validation' / 'class_0', root / 'validation' / 'class_9')
    assert train_script.main(base_args(str(root), tmp_path / 'out', 'x')) == 2
    line = _error(capsys)
    assert 'class_9' in line and "--val-split 'validation'" in line
    assert not (tmp_path / 'out').exists()


def test_npz_labels_outside_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.integers(0, 255, (24, 16, 16, 3)).astype(np.uint8)
    np.savez(tmp_path / 'train.npz', x=x, y=y, classes=np.array(['a', 'b', 'c']))
    np.savez(tmp_path / 'validation.npz', x=x[:6], y=np.array([0, 1, 2, 3, 0, 1]))  # label 3: no such class
    args = base_args(str(tmp_path), tmp_path / 'out', 'x', '--dataset', 'npz')
    assert train_script.main(args) == 2
    line = _error(capsys)
    assert '--val-split' in line and 'outside the 3 training classes' in line
    np.savez(tmp_path / 'train.npz', x=x, y=y + 1, classes=np.array(['a', 'b', 'c']))  # label 3 in training
    assert train_script.main(args) == 2
    assert 'lie outside its 3 classes' in _error(capsys)
    np.savez(tmp_path / 'train.npz', x=x, y=y, classes=np.array(['a', 'b', 'c']))
    assert train_script.main(base_args(str(tmp_path), tmp_path / 'out', 'x', '--dataset', 'npz',
                                       '--val-split', 'test')) == 2
    line = _error(capsys)
    assert "--val-split 'test'" in line and 'train, validation' in line
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('noise', [0.0, None])
def test_plateau_history_restored_after_reductions(tmp_path, noise):
    """restore_optimizer + restore_plateau reproduce a plateau schedule (with LR noise) that has already
    reduced the LR; without them the resumed LR would restart at --lr."""
    from timm.scheduler import create_scheduler_v2
    from timm_mixplug.utils.checkpoint import load_train_state, save_train_state, scheduler_state
    from timm_mixplug.train.resume import restore_optimizer, restore_plateau

    def make():
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched, _ = create_scheduler_v2(opt, sched='plateau', num_epochs=10, patience_epochs=0, decay_rate=0.5,
                                       warmup_epochs=0, noise=noise, noise_seed=3)
        return model, opt, sched

    metrics = [3.0, 2.0, 1.0, 2.5, 0.5, 0.2]  # mode 'max': falling metrics make the plateau halve the LR
    model, opt, sched = make()
    lrs = []
    for epoch, m in enumerate(metrics):
        if epoch == 3:
            save_train_state(str(tmp_path / 's.safetensors'), dict(optimizer=opt.state_dict(),
                                                                   scheduler=scheduler_state(sched)), {})
        sched.step(epoch + 1, m)
        lrs.append(opt.param_groups[0]['lr'])
    assert min(lrs[:3]) < 0.05  # two reductions (0.1 -> 0.025, noise within 67 %) before the checkpoint
    sections, _ = load_train_state(str(tmp_path / 's.safetensors'))
    _, opt2, sched2 = make()
    saved_lrs = restore_optimizer(opt2, sections['optimizer'])
    assert opt2.param_groups[0]['lr'] == 0.1  # the command line's hyper-parameters...
    assert restore_plateau(sched2, opt2, sections['scheduler'], saved_lrs, 1.0)  # ...and the plateau's history
    sched2.step(3)  # the engine steps a resumed scheduler to the start epoch
    resumed = []
    for epoch, m in enumerate(metrics[3:], start=3):
        sched2.step(epoch + 1, m)
        resumed.append(opt2.param_groups[0]['lr'])
    assert resumed == lrs[3:]


def test_warmup_longer_than_the_run_is_refused(tmp_path, capsys):
    """A --warmup-epochs 5 the user gives with --epochs 1 would train every step at the warm-up LR (timm's default
    5 is shortened instead: tests/test_hostile_config.py)."""
    from timm_mixplug.train import engine
    assert engine.main(['--dataset', 'mixplug/digits', '--epochs', '1', '--lr', '0.05', '--warmup-epochs', '5',
                        '--output', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['train.py: error: --warmup-epochs 5 is not shorter than --epochs 1: every step would train at the '
                   'warm-up LR (from --warmup-lr 1e-05), never at --lr 0.05; use --warmup-epochs 0 or fewer']
    assert os.listdir(tmp_path) == []
