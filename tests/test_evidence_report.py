"""``benchmarks/evidence.py --report`` rebuilds the README evidence tables from the committed results alone."""
import importlib.util
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _evidence(monkeypatch, keep):
    spec = importlib.util.spec_from_file_location('evidence_script', os.path.join(ROOT, 'benchmarks', 'evidence.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, 'KEEP', keep)  # the committed folder stays untouched
    return mod


@pytest.mark.parametrize('regime', ['lt', 'dml', 'lt_clr'])  # lt_clr reuses lt's runs
def test_report_needs_no_data_and_reproduces_the_committed_tables(regime, tmp_path, monkeypatch):
    committed = os.path.join(ROOT, 'benchmarks', 'evidence', regime)
    keep = tmp_path / 'keep'
    shutil.copytree(os.path.join(ROOT, 'benchmarks', 'evidence'), keep, ignore=shutil.ignore_patterns('*.png'))
    ev = _evidence(monkeypatch, keep)
    out = tmp_path / 'out'
    assert ev.main(['--report', '--regimes', regime, '--output', str(out)]) == 0
    assert not (out / 'data').exists()  # nothing read or written for data
    with open(os.path.join(committed, 'compare.md')) as f:
        assert (keep / regime / 'compare.md').read_text() == f.read()
    assert sorted(p.name for p in (keep / regime).glob('*-s*.json')) == sorted(
        n for n in os.listdir(committed) if '-s' in n and n.endswith('.json'))


def test_training_without_data_is_one_error(tmp_path, monkeypatch, capsys):
    ev = _evidence(monkeypatch, tmp_path / 'keep')
    with pytest.raises(SystemExit) as e:
        ev.main(['--regimes', 'lt', '--output', str(tmp_path / 'out')])
    assert e.value.code == 2 and '--data is required to train' in capsys.readouterr().err


def test_primary_comparisons_are_the_committed_runs_and_the_readme_table(tmp_path, monkeypatch):
    """primary.md is rebuilt from the committed runs alone, and README's primary table is that file."""
    keep = tmp_path / 'keep'
    shutil.copytree(os.path.join(ROOT, 'benchmarks', 'evidence'), keep, ignore=shutil.ignore_patterns('*.png'))
    ev = _evidence(monkeypatch, keep)
    table = ev.primary_table()
    with open(os.path.join(ROOT, 'benchmarks', 'evidence', 'primary.md')) as f:
        assert f.read() == table
    with open(os.path.join(ROOT, 'README.md')) as f:
        assert table in f.read()
    assert len(table.splitlines()) == 2 + len(ev.PRIMARY)


def test_t_quantile_matches_the_95_table_and_known_99_5_values():
    from timm_mixplug.compare.stats import _T975, t_quantile
    assert [round(t_quantile(0.975, df), 3) for df in (1, 2, 5, 30)] == [round(_T975[df - 1], 3) for df in (1, 2, 5, 30)]
    assert t_quantile(0.995, 2) == pytest.approx(9.925, abs=1e-3)  # Bonferroni over 5 comparisons, n = 3
    assert t_quantile(0.995, 7) == pytest.approx(3.499, abs=1e-3)  # n = 8
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_accelerator_and_fp32_runs_are_kept_apart_with_their_own_setup(tmp_path, monkeypatch):
    ev = _evidence(monkeypatch, tmp_path / 'keep')
    assert (ev._variant('cpu', False), ev._variant('cpu', True), ev._variant('cuda', False)) == ('', 'fp32', 'cuda')
    flags = ev._accelerator_setup(ev.REGIMES['aug_long'][3])
    assert flags[flags.index('--val-split') + 1] == 'test10k'  # all 10,000 test images
    assert flags[flags.index('--warmup-epochs') + 1] == '5' and flags[-1] == '--sched-on-updates'
    dml = ev._accelerator_setup(ev.REGIMES['dml'][3])
    assert dml[dml.index('--warmup-epochs') + 1] == '5'


def test_primary_table_pools_both_cpu_precisions_pairwise_and_keeps_accelerator_runs_apart(tmp_path, monkeypatch):
    """BC+ vs CE pools the bf16 seeds with the fp32 ones (each seed's pair in one precision); cuda runs stay out."""
    import json
    keep = tmp_path / 'keep'
    finals = {('', 0): (70.0, 68.0), ('', 1): (71.0, 70.5), ('fp32', 3): (69.0, 66.0), ('cuda', 4): (90.0, 10.0)}
    for (variant, seed), (bcplus, ce) in finals.items():
        folder = keep / variant / 'aug_long'
        folder.mkdir(parents=True, exist_ok=True)
        for method, top1 in (('bcplus', bcplus), ('ce', ce)):
            (folder / f'{method}-s{seed}.json').write_text(json.dumps({'seed': seed, 'final': top1}))
    (keep / 'fp32' / 'aug_long' / 'bcplus-s5.json').write_text(json.dumps({'seed': 5, 'final': 99.0}))  # no CE: unpaired
    ev = _evidence(monkeypatch, keep)
    monkeypatch.setattr(ev, 'PRIMARY', (('BC+ vs CE', 'aug_long', 'bcplus', 'ce', None),))
    row = ev.primary_table().splitlines()[2].split(' | ')
    assert row[1] == '3 (2 bf16, 1 fp32)'
    assert row[2] == '+1.83'  # (2 + 0.5 + 3) / 3
    assert row[5] == 'bf16: +2.00, +0.50; fp32: +3.00'


def test_test10k_evaluates_each_kept_run_once_and_reports_the_primary_comparison(tmp_path, monkeypatch, capsys):
    """``--test10k``: each kept run whose folder still holds its final weights is evaluated on all 10,000 test
    images once (validate on test10k); the report pairs the seeds and shows the 3,000-image delta beside."""
    import json
    import subprocess
    keep = tmp_path / 'keep'
    folder = keep / 'fp32' / 'aug_long'
    folder.mkdir(parents=True)
    out = tmp_path / 'out'
    tops = {('bcplus', 3): (76.87, 76.67), ('ce', 3): (74.73, 74.50), ('bcplus', 4): (76.64, 76.00),
            ('ce', 4): (75.00, 75.25), ('ce', 5): (74.80, 74.00)}  # (3,000, 10,000); bcplus-s5 has no folder
    for (method, seed), (final, _) in tops.items():
        (folder / f'{method}-s{seed}.json').write_text(json.dumps({'seed': seed, 'final': final}))
        run = out / 'aug_long' / 'runs' / f'{method}-s{seed}'
        run.mkdir(parents=True)
        (run / 'last.safetensors').write_bytes(b'')
    (folder / 'bcplus-s5.json').write_text(json.dumps({'seed': 5, 'final': 75.7}))
    calls = []

    def validate(cmd, **kw):
        calls.append(cmd)
        name = os.path.basename(os.path.dirname(cmd[cmd.index('--resume') + 1]))
        method, seed = name.rsplit('-s', 1)
        assert cmd[cmd.index('--val-split') + 1] == 'test10k'
        return subprocess.CompletedProcess(cmd, 0, f'Eval: loss: 0.7000  top1: {tops[method, int(seed)][1]:.4f}  '
                                                   'top5: 97.0000\n', '')
    ev = _evidence(monkeypatch, keep)
    monkeypatch.setattr(ev.subprocess, 'run', validate)
    assert ev.eval_test10k('aug_long', out, folder) == 0
    assert json.loads((folder / 'test10k.json').read_text()) == {
        f'{m}-s{s}': v[1] for (m, s), v in tops.items()}
    assert len(calls) == 5 and ev.eval_test10k('aug_long', out, folder) == 0 and len(calls) == 5  # once each
    row = ev.test10k_table(folder, 'aug_long').splitlines()[2].split(' | ')
    assert row[1] == '3, 4'  # seed 5 has no BC+ on 10,000 images: unpaired
    # 10,000 images: (76.67 - 74.50 + 76.00 - 75.25) / 2; t(0.975, 1) = 12.706 times |2.17 - 0.75| / 2 either side
    assert row[2:] == ['+1.46', '[\u22127.56, +10.48]', '+2.17, +0.75', '+1.89 |']  # 3,000: (2.14 + 1.64) / 2


@pytest.mark.parametrize('extra', [['--report'], ['--device', 'cuda', '--data', 'DATA']])
def test_test10k_with_report_or_an_accelerator_is_one_error(extra, tmp_path, monkeypatch, capsys):
    ev = _evidence(monkeypatch, tmp_path / 'keep')
    with pytest.raises(SystemExit) as e:
        ev.main(['--test10k', '--regimes', 'aug_long', '--output', str(tmp_path / 'out')] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and '--test10k evaluates the CPU runs' in err[-1]
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'keep').exists()


def test_test10k_failure_is_one_line(tmp_path, monkeypatch, capsys):
    import json
    import subprocess
    folder = tmp_path / 'keep' / 'aug_long'
    folder.mkdir(parents=True)
    (folder / 'ce-s0.json').write_text(json.dumps({'seed': 0, 'final': 70.0}))
    run = tmp_path / 'out' / 'aug_long' / 'runs' / 'ce-s0'
    run.mkdir(parents=True)
    (run / 'last.safetensors').write_bytes(b'')
    ev = _evidence(monkeypatch, tmp_path / 'keep')
    monkeypatch.setattr(ev.subprocess, 'run', lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 2, '', 'train.py: error: --val-split: no test10k.npz in output/evidence/data\n'))
    assert ev.eval_test10k('aug_long', tmp_path / 'out', folder) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'test10k failed: train.py: error: --val-split' in err[0]
    assert not (folder / 'test10k.json').exists()


def test_committed_test10k_tables_are_the_committed_evaluations(monkeypatch):
    """Each committed test10k.md is the report of the test10k.json beside it (README quotes it)."""
    ev = _evidence(monkeypatch, os.path.join(ROOT, 'benchmarks', 'evidence'))
    from pathlib import Path
    found = sorted(Path(ROOT, 'benchmarks', 'evidence').glob('**/test10k.json'))
    assert found
    for f in found:
        assert (f.parent / 'test10k.md').read_text() == ev.test10k_table(f.parent, f.parent.name)
