"""The README quickstart (``train.py -c hparams/quickstart.yaml``) on an idle and on a busy machine, fp32 and bf16,
at 1 thread, 2 threads and train.py's automatic choice (``--threads 0``).

    python benchmarks/bench_quickstart.py                       # loads 0 and 2, every threads x dtype setting
    python benchmarks/bench_quickstart.py --loads 1 --threads 1 --dtypes fp32

``--loads K`` starts K single-threaded busy loops (other users' CPU-bound processes) beside each run. Each run
reports its wall time from start to exit (start-up included), its CPU time, and the best top-1 it prints. A run
past ``--timeout`` seconds is stopped and reported as such; a failed run shows its exit code and last line. Say the machine's load average with the numbers
(printed at the start): other work on the cores changes them.
"""
import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DTYPES = {'fp32': [], 'bf16': ['--amp', '--amp-dtype', 'bfloat16']}


def _spin():
    while True:
        pass


def run_one(threads: int, dtype: str, timeout: float):
    """(wall s, best top-1 or None, thread line, exit code) of one quickstart run."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(REPO / 'train.py'), '-c', str(REPO / 'hparams' / 'quickstart.yaml'),
               '--threads', str(threads), '--output', out] + DTYPES[dtype]
        env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
        t0, timed_out = time.perf_counter(), False
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            timed_out = True
            text, _ = proc.communicate()
        wall = time.perf_counter() - t0
    top1 = re.findall(r'\*\*\* Best top1: (\d+\.\d+)', text)
    why = re.findall(r'Using \d+ torch thread\(s\) per process \((.*)\)', text)
    tail = text.strip().splitlines()[-1] if text.strip() else ''
    return wall, float(top1[-1]) if top1 else None, why[0] if why else '', proc.returncode, timed_out, tail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--loads', default='0,2', help='busy processes beside each run, comma-separated')
    p.add_argument('--threads', default='1,2,0', help='torch threads (0 = automatic), comma-separated')
    p.add_argument('--dtypes', default='fp32,bf16')
    p.add_argument('--timeout', type=float, default=300)
    p.add_argument('--json', default=None, help='also write the rows here')
    a = p.parse_args()
    print(f'load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)', flush=True)
    rows = []
    print('| busy processes | threads | dtype | wall (s) | CPU (s) | best top-1 | thread choice |')
    print('|---|---|---|---|---|---|---|', flush=True)
    for load in [int(x) for x in a.loads.split(',')]:
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(load)]
        for s in spinners:
            s.start()
        try:
            for threads in [int(x) for x in a.threads.split(',')]:
                for dtype in a.dtypes.split(','):
                    before = os.times()
                    wall, top1, why, rc, timed_out, tail = run_one(threads, dtype, a.timeout)
                    after = os.times()
                    cpu = (after.children_user - before.children_user) + (after.children_system
                                                                        - before.children_system)
                    done = rc == 0 and top1 is not None
                    rows.append(dict(load=load, threads=threads, dtype=dtype, wall_s=wall, cpu_s=cpu, top1=top1,
                                     finished=done, thread_choice=why))
                    shown = (f'{wall:.0f}' if done else f'> {a.timeout:.0f} (stopped)' if timed_out
                             else f'failed (exit {rc}: {tail})')
                    print(f'| {load} | {threads or "auto"} | {dtype} | {shown} | {cpu:.0f} | '
                          f'{top1 if top1 is not None else "-"} | {why} |', flush=True)
        finally:
            for s in spinners:
                s.terminate()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
