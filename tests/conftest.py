"""Helpers shared by the tests that run train.py end to end on tiny generated image folders."""
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, 'train.py')
# superclass map for make_tiny_images' four classes
SUPERCLASS_YAML = 'class_0: round\nclass_1: round\nclass_2: square\nclass_3: square\n'


def load_train_script(module_name: str):
    """A fresh import of the repository's train.py under ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, TRAIN_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_tiny_images(tmp_path_factory, name: str, val_per_class: int, superclass_map: bool = False) -> str:
    """A 4-class, 8-train-images-per-class 16x16 ImageFolder; ``superclass_map`` adds ``super.yaml``."""
    from timm_mixplug.data.datasets import make_image_folder
    root = tmp_path_factory.mktemp(name)
    make_image_folder(str(root), num_classes=4, per_class=8, val_per_class=val_per_class, size=16)
    if superclass_map:
        (root / 'super.yaml').write_text(SUPERCLASS_YAML)
    return str(root)


@pytest.fixture
def gloo_group(tmp_path):
    """A single-process gloo process group (rank 0 of 1, a file:// store under ``tmp_path``) for the test's
    duration; skips without torch.distributed, fails if a group is already up (an earlier test leaked it)."""
    if not dist.is_available():
        pytest.skip('torch.distributed not available')
    assert not dist.is_initialized(), 'a process group is already initialised: an earlier test leaked it'
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "pg"}', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_train_args(data_dir, out, exp, *extra, epochs=1, batch_size=8, lr=0.05, log_interval=2):
    """train.py arguments for a short CPU run of resnet20_cifar (no warm-up, no workers, no flip or colour
    jitter) on a ``make_tiny_images`` folder, writing ``out/exp`` (``out`` None: no --output / --experiment, as a
    resume that finds its run from --resume); ``extra`` flags come last (later words win)."""
    where = [] if out is None else ['--output', str(out), '--experiment', exp]
    return ['--data-dir', str(data_dir), '--model', 'resnet20_cifar', '--img-size', '16', '--crop-pct', '1.0',
            '-b', str(batch_size), '--epochs', str(epochs), '--workers', '0', '--lr', str(lr),
            '--warmup-epochs', '0', *where, '--log-interval', str(log_interval), '--hflip', '0',
            '--color-jitter', '0', '--scale', '0.8', '1.0', '--device', 'cpu', *extra]


class Uint8Items(torch.utils.data.Dataset):
    """(uint8 CHW array, label) items for timm's ``create_loader``; ignores the transform it sets."""

    def __init__(self, imgs, labels):
        self.imgs, self.labels, self.transform = imgs, labels, None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.imgs[i].numpy(), self.labels[i]


def read_rows(path):
    """The rows of a CSV file (e.g. summary.csv) as dicts."""
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def run_torchrun(train_args, nproc: int = 2, script: str = TRAIN_PY) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc train.py *train_args`` on CPU threads (skips without
    torchrun); ``script`` runs in place of train.py."""
    torchrun = shutil.which('torchrun', path=os.path.dirname(sys.executable)) or shutil.which('torchrun')
    if torchrun is None:
        pytest.skip('torchrun not found')
    cmd = [torchrun, '--standalone', f'--nproc_per_node={nproc}', script, *train_args]
    return subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)


def one_error_line(capsys) -> str:
    """The single ``train.py: error:`` line of the captured stderr (and no traceback)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('train.py: error:')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    return lines[0]


def wait_for_file(path, proc, timeout: float = 600) -> None:
    """Wait until ``path`` exists while ``proc`` (a train.py subprocess) runs; fails with its stderr if not."""
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), proc.communicate()[1][-3000:]
