"""Knowledge distillation against its no-teacher baseline on the CIFAR-10 development subset.

    python benchmarks/bench_distill.py --data ../shared/data        # resumable; about 1.5 h of CPU on one core

Setup: ``benchmarks/evidence.py``'s data (500 training images per class, 3,000 test images), pad-crop 4 + flip,
SGD lr 0.1, cosine, 30 epochs, batch 64, bf16 autocast, one thread. The teacher is a ResNet-56
(``resnet56_cifar``, 0.85 M parameters) trained first on the same data (seed 0; lr 0.05, 3 warm-up epochs); then ``python -m timm_mixplug
compare`` trains the ResNet-20 student with cross-entropy (``ce``) and with logit distillation from that teacher
(``kd``: T = 4, task and distillation weights 1, upstream's defaults) for seeds 0, 1, 2 and reports the paired
per-seed difference with its 95 % interval. Results (teacher's summary and the compare report) are copied to
``benchmarks/evidence/kd/``.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
from evidence import AUG, make_data, setup  # noqa: E402  (the evidence regimes' data and training setup)

KEEP = REPO / 'benchmarks' / 'evidence' / 'kd'
# ResNet-56 at the students' lr 0.1 with one warm-up epoch diverged in its first epoch and sat at chance for 12
# epochs (train loss 3.9, then 2.30): the deeper teacher gets lr 0.05 and 3 warm-up epochs
TEACHER_LR = ('--lr', '0.05', '--warmup-epochs', '3')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='folder with cifar10_train_subset10k.npz and cifar10_test.npz')
    p.add_argument('--output', default=str(REPO / 'output' / 'kd'))
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--jobs', type=int, default=1, help='student runs at once (one thread each)')
    a = p.parse_args()
    src, out = Path(a.data), Path(a.output)
    if not (src / 'cifar10_train_subset10k.npz').is_file() or not (src / 'cifar10_test.npz').is_file():
        print(f'bench_distill.py: error: --data {src} needs cifar10_train_subset10k.npz and cifar10_test.npz',
              file=sys.stderr)
        return 2
    data = out / 'data'
    make_data(src, data)
    flags = [x.replace('{data}', str(data)) for x in setup('train500', a.epochs, '0.1', '5e-4', AUG)]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    teacher = out / 'teacher'
    KEEP.mkdir(parents=True, exist_ok=True)
    if not (teacher / 'last.safetensors').is_file() or not (teacher / 'summary.csv').is_file() or len(
            (teacher / 'summary.csv').read_text().strip().splitlines()) < a.epochs + 1:
        cmd = [sys.executable, str(REPO / 'train.py'), *flags, '--model', 'resnet56_cifar', '--seed', '0',
               *TEACHER_LR, '--output', str(out), '--experiment', 'teacher']
        if (teacher / 'last-state.safetensors').is_file():
            cmd = [c for c in cmd if c not in ('--output', str(out), '--experiment', 'teacher')] + [
                '--resume', str(teacher)]
        print('teacher:', ' '.join(cmd), flush=True)
        if subprocess.call(cmd, env=env) != 0:
            return 1
    shutil.copy2(teacher / 'summary.csv', KEEP / 'teacher-summary.csv')
    methods = out / 'kd-methods.yaml'
    methods.write_text(f'kd: [--kd-model-name, resnet56_cifar, --kd-pretrained-path, {teacher / "last.safetensors"}]\n')
    cmd = [sys.executable, '-m', 'timm_mixplug', 'compare', '--methods', 'ce,kd', '--methods-file', str(methods),
           '--seeds', a.seeds, '--baseline', 'ce', '--jobs', str(a.jobs), '--threads', '1',
           '--output', str(out / 'compare'),
           '--', *flags]
    rc = subprocess.call(cmd, cwd=REPO)
    for f in sorted((out / 'compare' / 'results').glob('*.json')):
        shutil.copy2(f, KEEP / f.name)
    for f in ('compare.md', 'compare.json', 'compare.png'):
        if (out / 'compare' / f).is_file():
            shutil.copy2(out / 'compare' / f, KEEP / f)
    return rc


if __name__ == '__main__':
    sys.exit(main())
