"""benchmarks/gpu_check.py in its CPU smoke mode, so the prepared accelerator check never rots."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

METHODS = ('ce', 'mixup', 'bc', 'bcplus', 'superclass', 'dml', 'nonharmonic', 'aux', 'glmc', 'glmc-clr', 'kd')


def test_gpu_check_smoke_mode_on_cpu(tmp_path):
    out = tmp_path / 'gc'
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'gpu_check.py'), '--device', 'cpu',
                        '--steps', '2', '--small', '--out', str(out)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    result = json.loads((out / 'gpu_check.json').read_text())
    assert tuple(result['methods']) == METHODS
    for name, r in result['methods'].items():
        assert r['rc'] == 0 and math.isfinite(r['loss']) and r['images_per_s'] > 0, (name, r)
        assert r['peak_memory_mib'] is None  # no GPU memory on the CPU
    assert result['baseline']['images_per_s'] > 0 and math.isfinite(result['baseline']['loss'])
    names = [e['name'] for e in result['exactness']]
    assert names == ['bc', 'bcplus', 'superclass', 'dml', 'glmc', 'nt_xent', 'ricap', 'cutout']
    assert all(e['ok'] and e['max_abs_diff'] <= e['tol'] for e in result['exactness'])
    assert [result[k]['skipped'] for k in ('compile', 'torchrun', 'nccl')] == ['CUDA only'] * 3
    table = (out / 'gpu_check.md').read_text()
    assert all(f'| {m} | 0 |' in table for m in METHODS) and 'timm baseline' in table


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_gpu_check_refuses_cuda_without_it(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'gpu_check.py'), '--out', str(tmp_path / 'x')],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and 'CUDA is not available here' in p.stderr
    assert not (tmp_path / 'x').exists()
