"""``python -m timm_mixplug compare``: the statistics, bad input, and one end-to-end bake-off (ce vs bc, two
seeds, 2 epochs on a tiny npz set) with reuse, resume, restart and failure handling."""
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, read_rows
from timm_mixplug.compare.cli import main as compare_main
from timm_mixplug.compare.guard import OutputLock
from timm_mixplug.compare.methods import builtin_methods
from timm_mixplug.compare.options import parse_options
from timm_mixplug.compare.report import figure
from timm_mixplug.compare.runner import DevicePool, Runner, child_device, run_all
from timm_mixplug.compare.runs import Run, metric_fields, state_progress
from timm_mixplug.compare.stats import metric_value, paired_delta, t_critical


def test_t_critical_table_and_expansion():
    assert t_critical(2) == pytest.approx(4.303, abs=5e-4)
    assert t_critical(1) == pytest.approx(12.706, abs=5e-4)
    assert t_critical(30) == pytest.approx(2.042, abs=5e-4)
    assert t_critical(40) == pytest.approx(2.0211, abs=1e-4)  # Cornish-Fisher beyond the table
    assert t_critical(10 ** 6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_critical(0)
    try:
        from scipy.stats import t
    except ImportError:
        return
    for df in list(range(1, 80)) + [100, 500]:
        assert t_critical(df) == pytest.approx(t.ppf(0.975, df), abs=1e-4), df


def test_paired_delta_by_hand():
    # differences 2, 4, 1: mean 7/3, sample std sqrt(7/3), half-width 4.3027 * sqrt(7/3) / sqrt(3)
    d = paired_delta({0: 80.0, 1: 84.0, 2: 83.0, 9: 50.0}, {0: 78.0, 1: 80.0, 2: 82.0})
    assert d['seeds'] == [0, 1, 2] and d['values'] == [2.0, 4.0, 1.0] and d['n'] == 3
    assert d['mean'] == pytest.approx(7 / 3) and d['std'] == pytest.approx(math.sqrt(7 / 3))
    half = 4.3027 * math.sqrt(7 / 3) / math.sqrt(3)
    assert d['ci95'] == pytest.approx([7 / 3 - half, 7 / 3 + half]) and d['ci95'][0] == pytest.approx(-1.4615, abs=1e-3)
    assert d['effect'] is False
    # differences 3, 3.5, 2.5: std 0.5, interval 3 +- 4.3027 * 0.5 / sqrt(3) = [1.758, 4.242], excludes 0
    d = paired_delta({0: 3.0, 1: 3.5, 2: 2.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d['ci95'] == pytest.approx([1.7579, 4.2421], abs=1e-3) and d['effect'] is True
    one = paired_delta({0: 5.0}, {0: 4.0})
    assert one['mean'] == 1.0 and one['std'] is None and one['ci95'] is None and one['effect'] is None


def test_metric_of_dml_rows_is_the_mean_of_the_peers():
    row = {'eval_top1': 90.0, 'eval_peer0_top1': 80.0, 'eval_peer1_top1': 84.0, 'eval_loss': 0.5,
           'ema_eval_top1': 70.0, 'ema_eval_peer0_top1': 60.0, 'ema_eval_peer1_top1': 62.0}
    assert metric_value(row, 'eval_top1') == 82.0
    assert metric_value(row, 'ema_eval_top1') == 61.0
    assert metric_value(row, 'eval_loss') == 0.5 and metric_value(row, 'eval_top5') is None
    fields = metric_fields([row], 'eval_top1')
    assert fields['final'] == 82.0 and fields['ensemble'] == 90.0 and 'shots' not in fields


def test_no_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    summary = dict(metric='eval_top1', baseline='ce', seeds=[0], methods={})
    assert figure(summary, {}, tmp_path / 'compare.png') is False
    assert capsys.readouterr().out == ('compare: matplotlib is not installed, so no compare.png '
                                       '(pip install -e ".[plot]")\n')
    assert not (tmp_path / 'compare.png').exists()


@pytest.mark.parametrize('argv, message', [
    (['--methods', 'ce,nope'], "unknown method 'nope' (known: ce, "),
    (['--methods', 'ce,bc', '--baseline', 'mixup'], "--baseline 'mixup' is not one of --methods"),
    (['--methods', 'ce', '--seeds', ' , '], '--seeds: no seeds given'),
    (['--methods', 'ce', '--seeds', '0,x'], 'expected comma-separated integers'),
    (['--methods', 'ce', '--jobs', '0'], '--jobs 0: must be >= 1'),
    (['--methods', 'ce,ce'], '--methods: listed twice: ce'),
    (['--methods', 'ce', '--base-args', '--seed 3'], '--seed is set by compare'),
    (['--methods', 'ce', '--methods-file', 'BAD'], 'expected a list or string of train.py arguments'),
    (['--methods', 'ce', '--config', 'no-such.yaml'], '--config no-such.yaml: no such file'),
    (['--methods', 'ce', '--devices', 'gpu0'], "--devices 'gpu0': expected comma-separated CUDA device indices"),
    (['--methods', 'ce', '--devices', '0,0'], '--devices: listed twice: 0'),
    (['--methods', 'ce', '--devices', '0,1', '--jobs', '1'], 'so 1 would stay idle; use --jobs 2 or more'),
    (['--methods', 'ce', '--devices', '999'], '--devices 999: '),  # no CUDA here, or not among the devices
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'BAD').write_text('broken: {lr: 1}\n')
    out = tmp_path / 'out'
    argv = [str(tmp_path / a) if a == 'BAD' else a for a in argv]
    assert compare_main(argv + ['--output', str(out), '--', '--epochs', '1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('compare: error: ') and message in err[0], err
    assert not out.exists()
    assert compare_main(['--methods', 'ce', '--output', str(out)]) == 2  # no training setup
    assert 'no training setup' in capsys.readouterr().err and not out.exists()


def test_devices_one_per_run_in_turn():
    """--devices: the runs at once hold distinct slots spread over the devices in turn, and a child's
    CUDA_VISIBLE_DEVICES is the device as the parent numbers it (through the parent's own variable)."""
    opts, _ = parse_options(['--methods', 'ce', '--devices', '2,0', '--', '--epochs', '1'])
    assert opts.device_list == [2, 0] and opts.jobs == 2  # default: one job per device
    pool = DevicePool([2, 0], jobs=4)
    with pool.lease() as a, pool.lease() as b, pool.lease() as c, pool.lease() as d:
        assert [a, b, c, d] == [2, 0, 2, 0]
    with pool.lease() as a:
        with pool.lease() as b:
            assert {a, b} == {2, 0}
    assert child_device(1, None) == '1'
    assert child_device(1, '') == '1'
    assert child_device(1, '4, 6,7') == '6'
    assert child_device(0, 'GPU-8f2c') == 'GPU-8f2c'


def test_runner_gives_each_child_its_device(tmp_path, monkeypatch, capsys):
    """Four stand-in children, two at a time over --devices 0,1 under a parent CUDA_VISIBLE_DEVICES=5,7:
    each sees exactly one device, and each run's line names the device it saw. (Which device a run takes
    depends on which run ends first: a run takes the device freed first; the pool's order is tested above.)"""
    child = 'import os; print(os.environ["CUDA_VISIBLE_DEVICES"], os.environ["OMP_NUM_THREADS"])'
    monkeypatch.setattr(Run, 'command', lambda self: [sys.executable, '-c', child])
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '5,7')
    runs = [Run('ce', s, [], tmp_path) for s in range(4)]
    runner = Runner('eval_top1', 3, len(runs), DevicePool([0, 1], 2))
    run_all(runner, runs, 2)
    seen = {r.name: r.log.read_text().split() for r in runs}
    out = capsys.readouterr().out
    said = dict(re.findall(r'\] (ce-s\d): training on CUDA device (\d)', out))
    assert sorted(said) == sorted(seen)
    for name, (visible, threads) in seen.items():
        assert threads == '3' and visible == '57'[int(said[name])], (name, visible, said[name])
    assert len(runner.failed) == 4  # the stand-ins leave no training state: reported, not kept


def test_help_and_dispatch(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'timm_mixplug', 'compare', '--help'], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    for text in ('--methods-file', '--report-only', '--jobs', 'example', 'nh_uniform', '--nh-device-views'):
        assert text in r.stdout, text


@pytest.fixture
def tiny_npz(tmp_path):
    """3 classes, 8 noisy 8x8 training images each, 4 validation images each."""
    rng = np.random.default_rng(0)
    for split, n in (('tr', 8), ('te', 4)):
        y = np.repeat(np.arange(3), n)
        x = (rng.integers(0, 150, (len(y), 8, 8, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
        np.savez(tmp_path / f'{split}.npz', x=x, y=y, classes=np.array(['a', 'b', 'c']))
    return str(tmp_path)


def _setup(data):
    return ['--dataset', 'npz', '--data-dir', data, '--train-split', 'tr', '--val-split', 'te', '--model',
            'resnet20_cifar', '--img-size', '8', '--crop-pct', '1.0', '-b', '12', '--epochs', '2', '--workers', '0',
            '--warmup-epochs', '0', '--no-aug', '--device', 'cpu', '--log-interval', '100']


def _load(path):
    return json.loads(path.read_text())


def test_end_to_end_reuse_resume_restart_and_failure(tiny_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the child processes import this checkout's package
    out = tmp_path / 'cmp'
    setup = _setup(tiny_npz)
    # one thread per run: two OpenMP threads crawl when other jobs share the two cores
    argv = ['--methods', 'ce,bc', '--seeds', '0,1', '--jobs', '1', '--threads', '1', '--output', str(out), '--',
            *setup]
    # an interrupted compare left bc-s1 after 1 of 2 epochs, and ce-s1 stopped before its first epoch ended
    partial = Run('bc', 1, setup + builtin_methods()['bc'], out)
    r = subprocess.run(partial.command() + ['--max-epochs-this-run', '1'], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert state_progress(partial.run_dir) == (1, 2)
    stale = out / 'runs' / 'ce-s1'
    stale.mkdir(parents=True)
    (stale / 'train.log').write_text('stopped early\n')

    assert compare_main(argv) == 0
    printed = capsys.readouterr().out
    assert 'compare: [4/4] bc-s1: resuming after epoch 1' in printed
    assert printed.count(': training') == 3 and not (stale / 'train.log').read_text().startswith('stopped')
    runs = {f'{m}-s{s}': _load(out / 'results' / f'{m}-s{s}.json') for m in ('ce', 'bc') for s in (0, 1)}
    for name, res in runs.items():
        rows = read_rows(out / 'runs' / name / 'summary.csv')
        assert [r['epoch'] for r in rows] == ['0', '1'], name
        assert res['final'] == float(rows[-1]['eval_top1']) and res['curve'] == [float(r['eval_top1']) for r in rows]
        assert res['wall_s'] > 0 and res['cpu_s'] > 0 and res['metric'] == 'eval_top1'
        assert res['command'][-2:] in (['--experiment', name], ['--resume', str(out / 'runs' / name)])
    assert runs['bc-s1']['resumed_from_epoch'] == 1 and runs['ce-s0']['resumed_from_epoch'] is None
    assert 'Resuming' in (out / 'runs' / 'bc-s1.log').read_text()

    # compare.json against the per-run numbers, by hand
    report = _load(out / 'compare.json')
    ce, bc = ([runs[f'{m}-s{s}']['final'] for s in (0, 1)] for m in ('ce', 'bc'))
    for m, vals in (('ce', ce), ('bc', bc)):
        e = report['methods'][m]
        assert e['values'] == vals and e['n'] == 2
        assert e['mean'] == pytest.approx(statistics.mean(vals)) and e['std'] == pytest.approx(statistics.stdev(vals))
    delta = report['methods']['bc']['delta']
    d = [b - c for b, c in zip(bc, ce)]
    half = 12.7062 * statistics.stdev(d) / math.sqrt(2)
    assert delta['values'] == pytest.approx(d) and delta['mean'] == pytest.approx(statistics.mean(d))
    assert delta['ci95'] == pytest.approx([statistics.mean(d) - half, statistics.mean(d) + half])
    assert delta['effect'] == (not delta['ci95'][0] <= 0 <= delta['ci95'][1])
    assert report['methods']['ce']['delta'] is None and report['baseline'] == 'ce'
    table = (out / 'compare.md').read_text()
    row = next(line for line in table.splitlines() if line.startswith('| bc |'))
    assert f'{statistics.mean(bc):.2f}' in row and f'{statistics.mean(d):+.2f} [{delta["ci95"][0]:+.2f}' in row
    assert ('| effect |' if delta['effect'] else '| no effect shown |') in row
    assert 'resumed (seed 1)' in row and '| ce | ' in table and '(baseline)' in table and '| ce |' in printed
    assert (out / 'compare.png').stat().st_size > 0

    # a second invocation trains nothing
    logs = {p.name: p.stat().st_mtime_ns for p in (out / 'runs').glob('*.log')}
    assert compare_main(argv) == 0
    printed = capsys.readouterr().out
    assert 'compare: reused 4 finished run(s)' in printed and ': training' not in printed
    assert logs == {p.name: p.stat().st_mtime_ns for p in (out / 'runs').glob('*.log')}
    assert _load(out / 'compare.json')['methods'] == report['methods']

    # a lost result file of a finished run folder is rebuilt without training
    (out / 'results' / 'ce-s1.json').unlink()
    assert compare_main(argv) == 0
    printed = capsys.readouterr().out
    assert 'ce-s1: eval_top1' in printed and 'rebuilt from its finished run folder' in printed
    assert ': training' not in printed and _load(out / 'results' / 'ce-s1.json')['final'] == runs['ce-s1']['final']

    # another training setup in the same --output is refused, nothing written
    md = (out / 'compare.md').stat().st_mtime_ns
    assert compare_main(argv + ['--lr', '0.1']) == 2
    assert 'was trained with other train.py arguments' in capsys.readouterr().err
    assert (out / 'compare.md').stat().st_mtime_ns == md

    # --report-only with another metric: re-read from the run folders
    assert compare_main(['--methods', 'ce,bc', '--seeds', '0,1', '--output', str(out), '--report-only',
                         '--metric', 'eval_loss']) == 0
    capsys.readouterr()
    losses = _load(out / 'compare.json')['methods']['bc']['values']
    assert losses == [float(read_rows(out / 'runs' / f'bc-s{s}' / 'summary.csv')[-1]['eval_loss']) for s in (0, 1)]

    # a failing run: reported with its log and command, not kept, exit 1 after the others
    monkeypatch.setattr(Run, 'command', lambda self: [sys.executable, '-c', 'import sys; print("boom"); '
                                                              'sys.exit(3)'])
    mfile = tmp_path / 'methods.yaml'
    mfile.write_text('broken: --mix none\n')
    assert compare_main(['--methods', 'ce,broken', '--methods-file', str(mfile), '--seeds', '0,1', '--output',
                         str(out), '--', *setup]) == 1
    printed = capsys.readouterr().out
    assert 'broken-s0 FAILED (exit code 3); log ' in printed and "sys.exit(3)'" in printed
    assert (out / 'runs' / 'broken-s0.log').read_text() == 'boom\n'
    assert not (out / 'results' / 'broken-s0.json').exists()
    report = _load(out / 'compare.json')
    assert report['methods']['broken']['n'] == 0 and [f['run'] for f in report['failed']] == ['broken-s0',
                                                                                               'broken-s1']
    assert 'Failed runs' in (out / 'compare.md').read_text()


# ---- issue 30: a compare that can be killed, rerun and given edited input ----

_FAKE_TRAIN = '''
import json, pathlib, struct, sys, time
run, mode, final = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == 'sleep':
    time.sleep(120)
run.mkdir(parents=True, exist_ok=True)
(run / 'summary.csv').write_text('epoch,eval_top1\\n0,40.0\\n1,' + final + '\\n')
head = json.dumps({'__metadata__': {'state': json.dumps({'meta': {'epoch': 2, 'num_epochs': 2}})}}).encode()
(run / 'last-state.safetensors').write_bytes(struct.pack('<Q', len(head)) + head)
'''


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """Runs train a stand-in child that writes a finished two-epoch run folder (final eval_top1 = 50 + seed) at
    once (``mode='done'``) or first sleeps two minutes (``'sleep'``); returns a function setting the mode."""
    script = tmp_path / 'fake_train.py'
    script.write_text(_FAKE_TRAIN)
    mode = {'mode': 'done'}
    monkeypatch.setattr(Run, 'command', lambda self: [sys.executable, str(script), str(self.run_dir), mode['mode'],
                                                      str(50.0 + self.seed)])
    return lambda m: mode.update(mode=m)


def _args(out, *extra):
    """ce vs bc, two seeds, a setup train.py's parser accepts (the stand-in child never reads it)."""
    return ['--methods', 'ce,bc', '--seeds', '0,1', '--output', str(out), *extra, '--', '--dataset', 'npz',
            '--data-dir', str(out.parent), '--model', 'resnet20_cifar', '--epochs', '2', '--warmup-epochs', '0']


def _one_error(capsys, *texts):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('compare: error: '), err
    for t in texts:
        assert t in err[0], (t, err[0])
    return err[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f'/proc/{pid}/stat').read().split(') ')[1].startswith('Z')


def test_output_lock_refuses_a_second_compare(tmp_path, capsys, fake_train):
    out = tmp_path / 'cmp'
    with OutputLock(out):
        assert compare_main(_args(out)) == 2
        _one_error(capsys, f'--output {out} is in use by another compare (pid {os.getpid()})', 'another --output')
        assert sorted(p.name for p in out.iterdir()) == ['.compare.lock']  # nothing started
    assert (out / '.compare.lock').read_text() == ''  # released


def test_stale_output_lock_of_a_dead_compare_is_taken_over(tmp_path, capsys, fake_train):
    out = tmp_path / 'cmp'
    out.mkdir()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (out / '.compare.lock').write_text(str(dead.pid))
    assert compare_main(_args(out)) == 0
    printed = capsys.readouterr().out
    assert f'compare: taking over {out / ".compare.lock"}: the compare that held it (pid {dead.pid}) is gone' in printed
    assert printed.count(': training') == 4 and (out / '.compare.lock').read_text() == ''


def _orphan_by_pid_file(run_dir):
    """A train.py left running by a killed compare, known by its recorded pid (it has not locked yet)."""
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', '--output', str(run_dir.parent),
                             '--experiment', run_dir.name])
    (run_dir.parent / f'{run_dir.name}.pid').write_text(str(proc.pid))
    return proc


def _orphan_by_train_lock(run_dir):
    """A train.py left running by a killed compare, known by its lock on the run folder (no pid file)."""
    code = ('import fcntl, os, sys, time; f = open(sys.argv[1], "a+"); fcntl.flock(f, fcntl.LOCK_EX); '
            'f.write(str(os.getpid())); f.flush(); print("locked", flush=True); time.sleep(120)')
    proc = subprocess.Popen([sys.executable, '-c', code, str(run_dir / '.train.lock')], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


@pytest.mark.parametrize('orphan', [_orphan_by_pid_file, _orphan_by_train_lock])
def test_rerun_after_kill_9_never_touches_a_run_still_training(tmp_path, capsys, fake_train, orphan):
    out = tmp_path / 'cmp'
    run_dir = out / 'runs' / 'bc-s1'
    run_dir.mkdir(parents=True)
    (run_dir / 'train.log').write_text('epoch 0 of a train.py still running\n')  # no state yet
    proc = orphan(run_dir)
    try:
        assert compare_main(_args(out)) == 2
        _one_error(capsys, f'bc-s1 is still being trained by train.py pid {proc.pid}', f'kill {proc.pid}')
        assert (run_dir / 'train.log').is_file() and not (out / 'runs' / 'bc-s1.log').exists()
        assert not (out / 'results').exists()
    finally:
        proc.kill()
        proc.wait()
    assert compare_main(_args(out)) == 0  # once it is gone (a stale pid file does not count), the run restarts
    assert 'bc-s1: eval_top1 51.00' in capsys.readouterr().out


def test_train_lock_name_is_train_py_s():
    from timm_mixplug.compare.guard import TRAIN_LOCK
    from timm_mixplug.train.run_folder import LOCK_FILE
    assert TRAIN_LOCK == LOCK_FILE


def test_sigterm_stops_the_children_and_exits_143(tmp_path, capsys, fake_train):
    fake_train('sleep')
    out = tmp_path / 'cmp'
    seen = {}

    def terminate_when_training():
        pid_file = out / 'runs' / 'ce-s0.pid'
        deadline = time.time() + 60
        while time.time() < deadline and not (pid_file.is_file() and pid_file.read_text()):
            time.sleep(0.05)
        seen['child'] = int(pid_file.read_text())
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=terminate_when_training)
    t.start()
    t0 = time.time()
    rc = compare_main(_args(out, '--jobs', '1'))
    t.join()
    assert rc == 143 and time.time() - t0 < 60  # the child sleeps 120 s: it was stopped, not waited out
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('compare: terminated (SIGTERM)'), err
    assert not _alive(seen['child']) and not (out / 'runs' / 'ce-s0.pid').exists()
    assert not (out / 'runs' / 'bc-s0.log').exists()  # nothing more was started
    assert signal.getsignal(signal.SIGTERM) == before  # compare's handler is gone again


def test_edited_config_is_never_reused_silently(tmp_path, capsys, fake_train):
    out, cfg = tmp_path / 'cmp', tmp_path / 'setup.yaml'
    cfg.write_text('epochs: 2\nwarmup_epochs: 0\n')
    argv = _args(out, '--config', str(cfg))
    assert compare_main(argv) == 0
    capsys.readouterr()
    res = _load(out / 'results' / 'bc-s1.json')
    assert res['args'][:2] == ['-c', str(cfg)] and len(res['fingerprint']) == 64
    assert compare_main(argv) == 0 and 'reused 4 finished run(s)' in capsys.readouterr().out  # unchanged: reused
    md = (out / 'compare.md').read_text()
    cfg.write_text('epochs: 2\nwarmup_epochs: 0\nlr: 0.5\n')  # same arguments, other content
    assert compare_main(argv) == 2
    _one_error(capsys, 'was trained from another content of', str(cfg), 'delete it to train the run again')
    assert (out / 'compare.md').read_text() == md and not list((out / 'runs').glob('*.pid'))
    # a result recorded without a fingerprint cannot tell: refused as well
    cfg.write_text('epochs: 2\nwarmup_epochs: 0\n')
    res = _load(out / 'results' / 'ce-s0.json')
    del res['fingerprint']
    (out / 'results' / 'ce-s0.json').write_text(json.dumps(res))
    assert compare_main(argv) == 2
    _one_error(capsys, 'ce-s0.json records no fingerprint of its config')


def test_config_files_named_in_train_args():
    from timm_mixplug.compare.runs import config_files, fingerprint
    assert config_files(['-c', 'a.yaml', '--lr', '1', '--config=b.yaml', '-cc.yaml', '--config', 'd']) == \
        ['a.yaml', 'b.yaml', 'c.yaml', 'd']
    assert fingerprint(['--lr', '1']) != fingerprint(['--lr', '2'])


@pytest.mark.parametrize('content, message', [
    ("a: \"--mix 'bc\"\n", 'method a: No closing quotation'),
    (b'\xff\xfe\x00bad', "'utf-8' codec can't decode"),
    ('a: []\nb: [--mix, bc]\na: [--mix, mixup]\n', "'a' is given twice (line 3)"),
    ('a: [--mix\n', 'not valid YAML'),
    ('- a\n- b\n', 'expected a mapping of method name'),
])
def test_malformed_methods_file_is_one_line(tmp_path, capsys, content, message):
    mfile, out = tmp_path / 'methods.yaml', tmp_path / 'cmp'
    (mfile.write_bytes if isinstance(content, bytes) else mfile.write_text)(content)
    assert compare_main(_args(out, '--methods-file', str(mfile))) == 2
    _one_error(capsys, f'--methods-file {mfile}: ', message)
    assert not out.exists()


def test_output_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / 'out.txt'
    f.write_text('not a folder\n')
    assert compare_main(_args(f)) == 2
    _one_error(capsys, f'--output {f}: not a folder')
    assert compare_main(_args(f / 'sub')) == 2
    _one_error(capsys, f'--output {f / "sub"}: not a folder ({f} is a file)')
    assert f.read_text() == 'not a folder\n'


@pytest.mark.parametrize('content, message', [
    ('{"method": "ce", "se', 'unreadable result file'),
    ('[1, 2]', 'expected a JSON object, got list'),
    ('{"method": "ce", "seed": 0, "metric": "eval_top1", "final": "high", "curve": [], "args": []}',
     "'final' is 'high'"),
    ('{"method": "bc", "seed": 0, "metric": "eval_top1", "final": 1, "curve": [], "args": []}', "'method' is 'bc'"),
    (None, 'is not a file'),
])
def test_corrupt_result_file_is_one_line(tmp_path, capsys, fake_train, content, message):
    out = tmp_path / 'cmp'
    path = out / 'results' / 'ce-s0.json'
    path.parent.mkdir(parents=True)
    path.mkdir() if content is None else path.write_text(content)
    for extra in ((), ('--report-only',)):
        assert compare_main(_args(out, *extra)) == 2
        _one_error(capsys, f'{path}', message)
    assert sorted(p.name for p in out.iterdir()) == ['results']


def test_mistyped_train_flag_is_found_before_any_run(tmp_path, capsys, fake_train):
    out = tmp_path / 'cmp'
    assert compare_main(_args(out) + ['--lrr', '0.1']) == 2
    line = _one_error(capsys, 'train.py refuses the training setup: ', '--lrr', 'no run was started')
    assert 'method' not in line and not out.exists()
    mfile = tmp_path / 'methods.yaml'
    mfile.write_text('wide: --mixup-alpah 0.4\n')
    argv = _args(out, '--methods-file', str(mfile))
    argv[1] = 'ce,wide'
    assert compare_main(argv) == 2
    _one_error(capsys, 'train.py refuses method wide (--mixup-alpah 0.4): ', '--mixup-alpah')
    assert not out.exists()


def test_train_flags_without_dashdash_go_to_train_py(tmp_path, capsys, fake_train):
    out = tmp_path / 'cmp'
    with_dash = _args(out)
    i = with_dash.index('--')
    without = with_dash[:i] + with_dash[i + 1:]
    mixed = with_dash[:i] + with_dash[i + 1:i + 3] + ['--'] + with_dash[i + 3:]  # --dataset npz before the --
    runs = [parse_options(a)[1] for a in (with_dash, without, mixed)]
    assert runs[0] == runs[1] == runs[2] and runs[0][0].args[:2] == ['--dataset', 'npz']
    assert compare_main(without + ['--basline', 'ce']) == 2  # a misspelled compare option reaches train.py
    _one_error(capsys, 'unrecognized arguments: --basline', 'compare passed --dataset npz', '--basline ce on to '
               'train.py (flags compare does not know: is a compare option misspelled?)')
    assert not out.exists()
    assert compare_main(without) == 0
    printed = capsys.readouterr().out
    assert 'compare: passing --dataset npz --data-dir' in printed and 'to train.py (flags compare does not know)' \
        in printed and printed.count(': training') == 4


def test_help_of_train_py_and_the_module_names_compare():
    from timm_mixplug.train.config import create_parser
    text = create_parser().format_help()
    assert 'python -m timm_mixplug compare --methods ce,bc,bcplus' in ' '.join(text.split())


def test_sigterm_to_a_compare_process_leaves_no_train_py_behind(tiny_npz, tmp_path):
    """The real thing: ``python -m timm_mixplug compare`` training a real train.py gets SIGTERM after the first
    saved epoch; the train.py is stopped with a resumable state, compare exits 143 with one line."""
    out = tmp_path / 'cmp'
    setup = [a if a != '2' else '500' for a in _setup(tiny_npz)]  # --epochs 500: still training when stopped
    cmd = [sys.executable, '-m', 'timm_mixplug', 'compare', '--methods', 'ce', '--seeds', '0', '--threads', '1',
           '--output', str(out), '--', *setup]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    run_dir, pid_file = out / 'runs' / 'ce-s0', out / 'runs' / 'ce-s0.pid'
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and state_progress(run_dir) is None:
            time.sleep(0.2)
        log = out / 'runs' / 'ce-s0.log'
        assert state_progress(run_dir) is not None, log.read_text()[-2000:] if log.is_file() else 'no log'
        child = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        err = proc.stderr.read().strip().splitlines()
        assert len(err) == 1 and err[0].startswith('compare: terminated (SIGTERM)'), err
        assert not _alive(child) and not pid_file.exists()
        done, total = state_progress(run_dir)
        assert 1 <= done < total == 500  # resumable by the same command
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_recycled_pid_is_not_a_train_py_of_the_run(tmp_path):
    from timm_mixplug.compare.guard import live_children, process_runs
    assert process_runs(os.getpid()) and not process_runs(os.getpid(), ('--experiment-of-nothing',))
    run = Run('ce', 0, [], tmp_path)
    run.pid_file.parent.mkdir(parents=True)
    run.pid_file.write_text(str(os.getpid()))  # alive, but pytest, not a train.py of ce-s0
    assert live_children([run]) == []


def test_unwritable_lock_and_report_are_one_line(tmp_path, capsys, fake_train):
    out = tmp_path / 'cmp'
    (out / '.compare.lock').mkdir(parents=True)
    assert compare_main(_args(out)) == 2
    _one_error(capsys, f'--output {out}: cannot write {out / ".compare.lock"}')
    (out / '.compare.lock').rmdir()
    (out / 'compare.md').mkdir()  # the report cannot be written: the results stay
    assert compare_main(_args(out)) == 1
    _one_error(capsys, f'{out / "compare.md"}: Is a directory', '--report-only writes the report again')
    assert len(list((out / 'results').glob('*.json'))) == 4


def test_methods_that_would_train_identically_are_refused(tmp_path, capsys, fake_train):
    """A config that selects BC already makes 'ce' train BC: compare says so instead of comparing BC with BC."""
    out, cfg = tmp_path / 'cmp', tmp_path / 'setup.yaml'
    cfg.write_text('mix: bc\n')
    assert compare_main(_args(out, '--config', str(cfg))) == 2
    _one_error(capsys, 'methods ce (no method arguments) and bc (--mix bc) train with identical settings',
               '-- --mix none')
    assert not (out / 'runs').exists() or not list((out / 'runs').iterdir())
    assert compare_main(_args(out, '--config', str(cfg)) + ['--mix', 'none']) == 0  # the setup made neutral


@pytest.mark.parametrize('native', [False, True])
def test_emulated_bf16_is_one_line_before_training(tmp_path, capsys, fake_train, monkeypatch, native):
    """train.py warns about emulated bf16 only in each run's log; compare says it once, naming the methods."""
    from timm_mixplug.utils import precision
    monkeypatch.setattr(precision, 'native_bf16', lambda device: native)
    out = tmp_path / 'cmp'
    assert compare_main(_args(out, '--device', 'cpu') + ['--amp', '--amp-dtype', 'bfloat16']) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if 'without native bf16' in ln]
    assert lines == ([] if native else ['compare: ce, bc train with --amp --amp-dtype bfloat16 on a CPU without '
                                        'native bf16 (AVX512-BF16 or AMX): autocast emulates it, several times '
                                        'slower than fp32; drop --amp for speed'])
    assert compare_main(_args(tmp_path / 'fp32', '--device', 'cpu')) == 0  # no autocast: no line
    assert 'without native bf16' not in capsys.readouterr().out
