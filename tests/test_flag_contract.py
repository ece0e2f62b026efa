"""Every flag train.py accepts has a valid range (timm_mixplug/train/ranges.py and each method's spec); every invalid value ends with one
``train.py: error:`` line naming the flag, exit code 2, no traceback and nothing written."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TRAIN_PY, load_train_script, make_tiny_images, run_torchrun
from timm_mixplug.train.config import create_parser
from timm_mixplug.train.flags import refused
from timm_mixplug.train.ranges import all_no_invalid, all_ranges, flag_name

train_script = load_train_script('mixplug_train_contract')


def _actions():
    """The parser's flags with a range (a refused timm option is an error whenever it is set: tested in
    test_timm_parity / test_distill)."""
    return {a.dest: a for a in create_parser()._actions if a.dest not in refused()}


RANGES, NO_INVALID = all_ranges(), all_no_invalid()


def test_every_flag_has_a_range():
    missing = sorted(d for d in _actions() if d not in RANGES and d not in NO_INVALID)
    assert not missing, f'flags without a range (ranges.py or their spec) and not a switch: {missing}'
    stale = sorted(d for d in list(RANGES) + list(NO_INVALID) if d not in _actions())
    assert not stale, f'entries for flags the parser does not have: {stale}'
    for dest, rule in RANGES.items():
        assert rule.bad, f'{dest}: a range without an invalid example'
    for dest in NO_INVALID:
        a = _actions()[dest]
        assert NO_INVALID[dest].startswith('free text') or a.nargs == 0, f'{dest} takes a value; give it a range'


def _cases():
    actions = _actions()
    for dest, rule in RANGES.items():
        opt = next((o for o in actions[dest].option_strings if o.startswith('--')), None)
        for bad in rule.bad:
            yield pytest.param(dest, opt, bad, rule, id=f'{dest}={bad}')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'contract_imgs', val_per_class=2)


@pytest.mark.parametrize('dest, opt, bad, rule', list(_cases()))
def test_invalid_value_is_one_error_line(data_dir, tmp_path, monkeypatch, capsys, dest, opt, bad, rule):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'afile').write_text('a file, not a folder\n')
    before = sorted(os.listdir(tmp_path))
    base = ['--data-dir', data_dir, '--model', 'resnet20_cifar', '--img-size', '16', '-b', '8', '--epochs', '1',
            '--warmup-epochs', '0',
            '--workers', '0', '--device', 'cpu', '--output', 'out', '--experiment', 'x', '--log-interval', '1']
    value = bad.split(' ')
    argv = base + list(rule.context) + ([opt] + value if opt else value)
    if dest == 'config':
        argv = ['-c', bad] + base
    if dest == 'data':
        argv = argv[2:]  # DIR alone (with --data-dir too, the two must agree)
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('train.py: error:')]
    assert len(lines) == 1, err[-2000:]
    assert (rule.expect or flag_name(dest)) in lines[0], lines[0]
    assert 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == before, 'files were written'


def test_bad_flag_subprocess_exit_2_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, TRAIN_PY, '--dataset', 'mixplug/digits', '--log-interval', '0',
                           '--output', str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ['train.py: error: --log-interval must be an integer >= 1, got 0']
    assert not (tmp_path / 'out').exists()


def test_a_rank_other_than_0_waits_for_rank_0_then_names_itself(tmp_path, monkeypatch, capsys):
    """Under torchrun rank 0 prints the error line; rank 1 fails the same way but waits (for torchrun to stop it
    when rank 0 exits) instead of exiting first, which would make torchrun stop rank 0 before it printed. Still
    running after the wait, it prints the line itself, naming its rank."""
    from timm_mixplug.train import engine
    waited = []
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setattr(engine, 'RANK_WAIT_S', 0.01)
    monkeypatch.setattr(engine.time, 'sleep', waited.append)
    assert engine.main(['--dataset', 'mixplug/digits', '--img-size', '0', '--output', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert waited == [0.01]
    assert err.strip() == 'train.py: error: --img-size must be an integer >= 1, got 0 (rank 1)'
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('rank0_delay', [0, 6])
def test_error_line_once_under_torchrun(tmp_path, rank0_delay):
    """Every rank fails on the flag; rank 0 prints the line. With rank 0 started late (as under load, when it is
    still importing while rank 1 has failed), rank 1 must not exit first: torchrun would stop rank 0 unprinted."""
    script = tmp_path / 'late_rank0.py'
    script.write_text(f"import os, runpy, sys, time\nif os.environ['RANK'] == '0':\n    time.sleep({rank0_delay})\n"
                      f"sys.argv[0] = {TRAIN_PY!r}\nrunpy.run_path({TRAIN_PY!r}, run_name='__main__')\n")
    proc = run_torchrun(['--dataset', 'mixplug/digits', '--device', 'cpu', '--img-size', '0',
                         '--output', str(tmp_path / 'out')], script=str(script))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert out.count('train.py: error:') == 1, out[-3000:]
    assert '--img-size must be an integer >= 1, got 0' in out
    assert not (tmp_path / 'out').exists()
