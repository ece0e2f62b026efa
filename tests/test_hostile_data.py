"""Hostile data and faults (issue 30): BC at any batch size and class balance, a full disk while saving, data
layouts timm reads surprisingly, weights that match nothing, OpenMP's list form and a deleted run folder."""
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import timm_mixplug as tm
from timm_mixplug.data.mixing import DatasetPartners, StreamPartners, set_dataset_partners

from conftest import ROOT, TRAIN_PY


class _Patterns(Dataset):
    """Item k: a fixed random image through a fixed transform (x -> x * 2 + 1), label ``labels[k]``."""

    def __init__(self, labels, uint8=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.targets = list(labels)
        self.raw = torch.randint(0, 256, (len(labels), 3, 4, 4), generator=g, dtype=torch.uint8)
        self.uint8 = uint8

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, k):
        img = self.raw[k].numpy() if self.uint8 else self.raw[k].float() / 255 * 2 + 1
        return img, self.targets[k]


def _bc_plus(xi, xj, r):
    """formula (2) with the population std over C*H*W."""
    si, sj = xi.std(unbiased=False), xj.std(unbiased=False)
    p = 1 / (1 + si / sj * (1 - r) / r)
    return (p * (xi - xi.mean()) + (1 - p) * (xj - xj.mean())) / torch.sqrt(p ** 2 + (1 - p) ** 2)


def _check_batch(name, ds, x, y, out, soft, atol=1e-4):
    """Every output has a partner of another class from the training set (through its transform), and image and
    target follow the paper's formulas with the same r."""
    items = torch.stack([torch.as_tensor(ds[k][0]).float() for k in range(len(ds))])
    labels = torch.as_tensor(ds.targets)
    for i in range(len(y)):
        nz = (soft[i] > 0).nonzero().flatten().tolist()
        assert len(nz) == 2 and int(y[i]) in nz, soft[i]  # two classes: its own and the partner's
        other = [c for c in nz if c != int(y[i])][0]
        r = soft[i, int(y[i])]
        assert torch.allclose(soft[i].sum(), torch.tensor(1.0)) and 0 < r < 1
        cand = items[labels == other]
        expect = [r * x[i].float() + (1 - r) * c if name == 'bc' else _bc_plus(x[i].float(), c, r) for c in cand]
        err = torch.stack([(e - out[i].float()).abs().max() for e in expect]).min()
        assert err <= atol, (i, float(err))


@pytest.mark.parametrize('name', ['bc', 'bcplus'])
@pytest.mark.parametrize('counts', [(20, 20), (95, 5)])
@pytest.mark.parametrize('batch_size', [2, 8])
def test_bc_mixes_every_batch_at_any_batch_size_and_balance(name, counts, batch_size):
    """A 2-class and a 95/5 training set at batch 2 and 8: single-class batches (most of them at 95/5) with no
    other class in the memory draw partners from the training set; every element is mixed."""
    torch.manual_seed(0)
    ds = _Patterns([0] * counts[0] + [1] * counts[1])
    mixer = tm.create_mixup(name, num_classes=2, partners=DatasetPartners(ds))
    calls = []
    draw = mixer.partners.draw
    mixer.partners.draw = lambda *a, **k: calls.append(a) or draw(*a, **k)
    first = [(torch.stack([ds[k][0] for k in range(batch_size)]), torch.zeros(batch_size, dtype=torch.long))]
    for x, y in first + list(DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True)):
        out, soft = mixer(x.clone(), y)
        _check_batch(name, ds, x, y, out, soft)
    assert calls  # the case under test happened: a first batch of one class drew from the training set


def test_bc_collate_draws_uint8_partners_from_the_training_set():
    """The prefetcher path: uint8 items, the collate mixes in uint8 with a partner drawn from the dataset."""
    torch.manual_seed(1)
    ds = _Patterns([0] * 19 + [1], uint8=True)
    collate = tm.create_mixup('bc', num_classes=2, collate=True, partners=DatasetPartners(ds))
    for idx in ([0, 1], [2], [3, 4, 5]):  # the first batch has no memory; an odd batch and a batch of one work
        batch = [ds[k] for k in idx]
        out, soft = collate(batch)
        x = torch.stack([torch.as_tensor(b[0]) for b in batch])
        _check_batch('bc', ds, x, torch.zeros(len(idx), dtype=torch.long), out, soft, atol=0.5 + 1e-3)


def test_bc_device_mixer_normalises_uint8_partners_as_the_prefetcher():
    """A float batch on the device with a uint8 training set: partners are normalised as timm's PrefetchLoader."""
    torch.manual_seed(2)
    ds = _Patterns([0] * 9 + [1], uint8=True)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    m, s = torch.tensor(mean).view(3, 1, 1) * 255, torch.tensor(std).view(3, 1, 1) * 255
    mixer = tm.create_mixup('bc', num_classes=2, partners=DatasetPartners(ds, mean=mean, std=std))
    x = (torch.as_tensor(ds[0][0]).float() - m) / s
    out, soft = mixer(x[None].clone(), torch.tensor([0]))
    r = soft[0, 0]
    partner = (torch.as_tensor(ds[9][0]).float() - m) / s  # the only item of class 1
    assert torch.allclose(out[0], r * x + (1 - r) * partner, atol=1e-5)
    with pytest.raises(ValueError, match='mean= and std='):
        tm.create_mixup('bc', num_classes=2, partners=DatasetPartners(ds))(x[None].clone(), torch.tensor([0]))


class _Stream(IterableDataset):
    """The items of a ``_Patterns`` set as a stream, in class order (the worst case: every first batch one class)."""

    def __init__(self, patterns):
        self.patterns = patterns

    def __iter__(self):
        return (self.patterns[k] for k in range(len(self.patterns)))


@pytest.mark.parametrize('name', ['bc', 'bcplus'])
def test_bc_on_a_stream_reads_partners_from_the_stream(name):
    """A stream (IterableDataset) sorted by class: the first two batches hold only class 0 and nothing else was
    seen, so partners are the next items of other classes the stream yields; every element of every batch
    follows the paper's formula with a partner of another class."""
    torch.manual_seed(3)
    ds = _Patterns([0] * 7 + [1] * 3 + [2] * 2)
    mixer = tm.create_mixup(name, num_classes=3)
    assert set_dataset_partners(mixer, _Stream(ds)) and isinstance(mixer.partners, StreamPartners)
    batches = list(DataLoader(_Stream(ds), batch_size=3))
    assert [b[1].tolist() for b in batches[:2]] == [[0, 0, 0], [0, 0, 0]]
    for x, y in batches:
        out, soft = mixer(x.clone(), y)
        _check_batch(name, ds, x, y, out, soft)


def test_bc_collate_in_a_loader_worker_reads_partners_from_the_stream():
    """The prefetcher path: the collate runs in a loader worker, where the stream's first batch (class 0 only)
    takes the next uint8 items of other classes from the worker's own reading of the stream."""
    torch.manual_seed(4)
    ds = _Patterns([0] * 7 + [1] * 3 + [2] * 2, uint8=True)
    collate = tm.create_mixup('bc', num_classes=3, collate=True)
    assert set_dataset_partners(collate, _Stream(ds))
    loader = DataLoader(_Stream(ds), batch_size=3, collate_fn=collate, num_workers=1)
    for b, (out, soft) in enumerate(loader):
        x = torch.stack([torch.as_tensor(ds[k][0]) for k in range(3 * b, 3 * b + 3)])
        _check_batch('bc', ds, x, torch.as_tensor(ds.targets[3 * b:3 * b + 3]), out, soft, atol=0.5 + 1e-3)


def test_stream_partners_name_a_stream_of_one_class():
    stream = _Stream(_Patterns([0] * 4))
    with pytest.raises(ValueError, match='10 items read from the training stream all have class 0; the stream needs '
                                         'two or more classes'):
        StreamPartners(stream, max_tries=10).draw(0, 2, like=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match='the training stream yields no items'):
        StreamPartners(_Stream(_Patterns([]))).draw(0, 2, like=torch.zeros(1, 3, 4, 4))


def test_dataset_partners_without_labels_redraw_until_the_class_differs():
    """A dataset whose labels cannot be read without loading: items are drawn until one has another class."""

    class NoTargets(Dataset):
        labels = [0] * 5 + [1] * 5

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, k):
            return torch.full((3, 4, 4), float(k)), self.labels[k]

    ds = NoTargets()
    partners = DatasetPartners(ds)
    assert partners.labels is None
    x, y = partners.draw(0, 6, like=torch.zeros(1, 3, 4, 4))
    assert x.shape == (6, 3, 4, 4) and (y == 1).all() and (x[:, 0, 0, 0] >= 5).all()
    with pytest.raises(ValueError, match='every item of the training set has class 0'):
        DatasetPartners(_Patterns([0] * 4)).draw(0, 2, like=torch.zeros(1, 3, 4, 4))


def _npz_set(root, counts, size=8, val=2):
    """``root/train.npz`` with ``counts[c]`` images of class c (class c brighter), ``root/validation.npz``."""
    rng = np.random.RandomState(0)
    os.makedirs(root, exist_ok=True)
    for split, per in (('train', counts), ('validation', [val] * len(counts))):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(per)])
        x = (rng.rand(len(y), size, size, 3) * 60 + 120 * y[:, None, None, None]).astype(np.uint8)
        np.savez(os.path.join(root, f'{split}.npz'), x=x, y=y)
    return str(root)


@pytest.mark.parametrize('mix,counts,batch,workers', [('bc', (6, 6), 2, 0), ('bcplus', (95, 5), 8, 1),
                                                      ('bc', (15, 5), 3, 0), ('bcplus', (6, 2), 1, 0)])
def test_train_bc_at_small_batches_on_two_and_imbalanced_classes(tmp_path, monkeypatch, mix, counts, batch, workers):
    """train.py --mix bc|bcplus trains at -b 2 on a 2-class set, -b 8 on a 95/5 set (a loader worker), an odd
    -b 3 and -b 1 (every batch one class: the first draws from the training set): no batch-size refusal."""
    from timm_mixplug.train import engine
    data = _npz_set(tmp_path / 'd', counts)
    argv = ['--dataset', 'npz', '--data-dir', data, '--model', 'resnet20_cifar', '--img-size', '8', '--epochs', '1',
            '--warmup-epochs', '0', '--workers', str(workers), '--device', 'cpu', '--output', str(tmp_path),
            '--mix', mix, '-b', str(batch), '--experiment', 'run', '--lr', '0.01']
    calls, draw = [], DatasetPartners.draw
    monkeypatch.setattr(DatasetPartners, 'draw', lambda self, *a, **k: calls.append(a) or draw(self, *a, **k))
    assert engine.main(argv) == 0
    assert os.path.isfile(tmp_path / 'run' / 'last.safetensors')
    assert calls or batch > 1 or workers  # -b 1 in this process: its first batch drew from the training set


def _limit_file_size(limit):
    def apply():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _train_argv(data, out, exp, *extra):
    return ['--dataset', 'npz', '--data-dir', data, '--model', 'resnet20_cifar', '--img-size', '8',
            '--warmup-epochs', '0', '--workers', '0', '--device', 'cpu', '--output', str(out), '-b', '4',
            '--experiment', exp, '--lr', '0.01', *extra]


def test_save_safetensors_turns_the_writers_file_size_error_into_oserror(tmp_path):
    """safetensors raises SafetensorError ("File too large (os error 27)"), not OSError: save_safetensors
    raises OSError(EFBIG) naming the file, removes its temporary and leaves the previous file intact."""
    import subprocess
    import sys
    code = ('import errno, os, sys, torch\n'
            'from timm_mixplug.utils.checkpoint import save_safetensors, load_weights\n'
            'p = sys.argv[1]\n'
            'try:\n'
            '    save_safetensors(p, {"w": torch.zeros(100000)})\n'
            'except OSError as e:\n'
            '    assert e.errno == errno.EFBIG and e.filename == p, e\n'
            '    assert os.listdir(os.path.dirname(p)) == ["w.safetensors"]\n'
            '    assert load_weights(p)["w"].tolist() == [1.0]\n'
            '    print("ok")\n')
    path = tmp_path / 'w.safetensors'
    from timm_mixplug.utils.checkpoint import save_safetensors
    save_safetensors(str(path), {'w': torch.ones(1)})
    proc = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_file_size(50_000), cwd=ROOT)
    assert proc.stdout.strip() == 'ok', proc.stderr[-2000:]


def test_file_size_limit_while_saving_is_one_line_and_the_state_stays(tmp_path):
    """``ulimit -f`` below the state's size on a resumed run: one line naming the file, exit 1, the previous
    state intact and resumable."""
    import subprocess
    import sys
    from timm_mixplug.utils.checkpoint import load_train_meta
    data = _npz_set(tmp_path / 'd', (8, 8))
    first = subprocess.run([sys.executable, TRAIN_PY, *_train_argv(data, tmp_path, 'run', '--epochs', '1')],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / 'run'
    before = {f: os.path.getsize(run / f) for f in os.listdir(run) if f.endswith('.safetensors')}
    epoch = load_train_meta(str(run / 'last-state.safetensors'))['epoch']
    proc = subprocess.run([sys.executable, TRAIN_PY, *_train_argv(data, tmp_path, 'run', '--epochs', '2'),
                           '--resume', str(run)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          preexec_fn=_limit_file_size(100_000))
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('train.py: error:')]
    assert proc.returncode == 1 and len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert 'File too large' in errors[0] and f'--resume {run}' in errors[0], errors
    assert {f: os.path.getsize(run / f) for f in os.listdir(run) if f.endswith('.safetensors')} == before
    assert load_train_meta(str(run / 'last-state.safetensors'))['epoch'] == epoch
    assert not [f for f in os.listdir(run) if f.endswith('.tmp')]


@pytest.mark.parametrize('value,code,says', [('2,1', 0, 'Using 2 torch thread(s) per process (OMP_NUM_THREADS=2,1, '
                                                          'its first nesting level)'),
                                              ('two', 2, "OMP_NUM_THREADS='two' is neither a number nor")])
def test_omp_num_threads_in_openmp_list_form(tmp_path, value, code, says):
    """OpenMP's list form (one number per nesting level) uses its first level and says so; anything else is one
    line, exit 2, nothing written."""
    import subprocess
    import sys
    data = _npz_set(tmp_path / 'd', (4, 4))
    proc = subprocess.run([sys.executable, TRAIN_PY, *_train_argv(data, tmp_path, 'run', '--epochs', '1')],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS=value))
    assert proc.returncode == code and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert says in proc.stderr
    if code:  # (libgomp itself may warn about the value first)
        ours = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith('libgomp:')]
        assert len(ours) == 1 and ours[0].startswith('train.py: error:') and not (tmp_path / 'run').exists()


def test_run_folder_deleted_under_a_running_job_is_one_line(tmp_path):
    import shutil
    import subprocess
    import sys
    from conftest import wait_for_file
    data = _npz_set(tmp_path / 'd', (40, 40))
    proc = subprocess.Popen([sys.executable, TRAIN_PY, *_train_argv(data, tmp_path, 'run', '--epochs', '200')],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for_file(tmp_path / 'run' / 'last-state.safetensors', proc, timeout=120)
        shutil.rmtree(tmp_path / 'run')
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    errors = [ln for ln in err.splitlines() if ln.startswith('train.py: error:')]
    assert proc.returncode == 1 and len(errors) == 1 and 'Traceback' not in err, err[-3000:]
    assert f'the run folder {tmp_path / "run"} was deleted or moved' in errors[0]


def _folder_argv(data, out, exp='run', *extra):
    return ['--data-dir', str(data), '--model', 'resnet20_cifar', '--img-size', '16', '--epochs', '1',
            '--warmup-epochs', '0', '--workers', '0', '--device', 'cpu', '--output', str(out), '-b', '4',
            '--experiment', exp, *extra]


def _png(path, array):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.mark.parametrize('layout,says', [
    ('loose', "--train-split 'train' ({d}/train): 1 image file(s) lie directly in the folder, outside any class "
              "folder (e.g. stray.png): timm would read them as a class named ''"),
    ('nested', "--val-split 'validation' ({d}/validation): 2 image file(s) lie in sub-folders of class folders (e.g. "
               "class_1/extra/a.png): timm would put them in a class named 'extra', not 'class_1'"),
    ('single', "--train-split 'train' holds a single class ('class_0'); a classifier needs images of two or more"),
    ('torch_loose', "--train-split 'train' ({d}/train): 1 image file(s) lie directly in the folder, outside any "
                    "class folder (e.g. stray.png): torchvision's ImageFolder would skip them without a word"),
])
def test_image_folder_layouts_timm_reads_surprisingly_are_refused(tmp_path, capsys, layout, says):
    """A file loose in the split folder (timm's reader makes it a class, torchvision's skips it), images in a
    sub-folder of a class folder, a single class: one line, exit 2, nothing written."""
    from conftest import one_error_line
    from timm_mixplug.data.datasets import make_image_folder
    from timm_mixplug.train import engine
    d = tmp_path / 'd'
    make_image_folder(str(d), num_classes=1 if layout == 'single' else 3, per_class=4, val_per_class=2, size=16)
    noise = np.random.RandomState(0).randint(0, 255, (16, 16, 3), dtype=np.uint8)
    if layout in ('loose', 'torch_loose'):
        _png(str(d / 'train' / 'stray.png'), noise)
    elif layout == 'nested':
        for name in ('a.png', 'b.png'):
            _png(str(d / 'validation' / 'class_1' / 'extra' / name), noise)
    extra = ['--dataset', 'torch/image_folder'] if layout == 'torch_loose' else []
    assert engine.main(_folder_argv(d, tmp_path / 'out', 'run', *extra)) == 2
    assert says.format(d=d) in one_error_line(capsys)
    assert not (tmp_path / 'out').exists()


def test_16bit_grayscale_pngs_are_read_as_8_bits_not_clipped(tmp_path, caplog, monkeypatch):
    """timm's convert('RGB') clips a 16-bit grayscale PNG to white; the folder reader reads value / 257 and
    says so once; 8-bit and 16-bit RGB files are unchanged; training runs."""
    import logging
    from PIL import Image
    from timm_mixplug.data.folder import EightBitPngReader
    from timm_mixplug.train import engine
    from timm_mixplug.train.config import parse_args
    from timm_mixplug.train.data import create_datasets
    monkeypatch.setattr(EightBitPngReader, '_said', False)
    d = tmp_path / 'd'
    for split, n in (('train', 4), ('validation', 2)):
        for c, value in enumerate((30000, 60000)):
            for i in range(n):
                _png(str(d / split / f'class_{c}' / f'{i}.png'), np.full((16, 16), value + i, dtype=np.uint16))
        _png(str(d / split / 'class_2' / '0.png'), np.full((16, 16, 3), 200, dtype=np.uint8))
        _png(str(d / split / 'class_2' / '1.png'), np.full((16, 16, 3), 10, dtype=np.uint8))
    assert Image.open(d / 'train' / 'class_0' / '0.png').mode == 'I;16'  # the case under test
    args = parse_args(_folder_argv(d, tmp_path / 'out'))
    caplog.set_level(logging.WARNING)
    ds_train, ds_eval, _ = create_datasets(args)
    got = {(int(y), int(np.asarray(img)[0, 0, 0])) for img, y in (ds_train[i] for i in range(len(ds_train)))}
    expect = {(0, round((30000 + i) / 257)) for i in range(4)} | {(1, round((60000 + i) / 257)) for i in range(4)}
    assert got == expect | {(2, 200), (2, 10)}
    assert np.asarray(ds_eval[0][0]).shape == (16, 16, 3) and np.asarray(ds_eval[0][0])[0, 0, 0] == 117
    said = [r.getMessage() for r in caplog.records if '16-bit grayscale PNG' in r.getMessage()]
    assert len(said) == 1 and said[0].endswith('read as 8 bits (value / 257), not clipped to white as timm would '
                                               '(said once)')
    assert engine.main(_folder_argv(d, tmp_path / 'out')) == 0


def test_dataset_errors_name_the_keyword_and_train_names_the_flag(tmp_path, capsys):
    """Library errors name the keyword (``split``), never a flag; train.py maps it to --train-split / --val-split."""
    from conftest import one_error_line
    from timm_mixplug.data.datasets import DatasetError, DigitsDataset, NpzDataset
    from timm_mixplug.train import engine
    data = _npz_set(tmp_path / 'd', (4, 4))
    with pytest.raises(DatasetError) as e:
        NpzDataset(data, 'nope')
    assert e.value.keyword == 'split' and str(e.value).startswith("split 'nope': no ") and '--' not in str(e.value)
    with pytest.raises(DatasetError, match="split 'nope': the digits dataset has the splits") as e:
        DigitsDataset('nope')
    assert '--' not in str(e.value)
    assert engine.main(_train_argv(data, tmp_path, 'run', '--val-split', 'nope')) == 2
    assert f"--val-split 'nope': no {data}/nope.npz; the splits in {data} are: train, validation" in \
        one_error_line(capsys)


def _weights(path, num_classes=2, prefix='', peers=0):
    """resnet20_cifar weights for ``num_classes``: plain, under a key ``prefix``, or ``peers`` DML peers."""
    import timm
    from timm_mixplug.utils.checkpoint import save_weights
    sd = timm.create_model('resnet20_cifar', num_classes=num_classes).state_dict()
    if peers:
        sd = {f'{p}.{k}': v.clone() for p in range(peers) for k, v in sd.items()}
    save_weights(str(path), {prefix + k: v for k, v in sd.items()}, task='dml' if peers else 'classification')
    return str(path)


def _fix_command(line):
    """The ``python -c "..."`` of an error line, and the file the flag should then be given."""
    import re
    cmd = re.search(r'(python -c ".*?")', line).group(1)
    return cmd, re.search(r'and give --[a-z-]+ (\S+)$', line).group(1)


def _run_fix(cmd):
    import subprocess
    import sys
    proc = subprocess.run(cmd.replace('python', sys.executable, 1), shell=True, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize('flag', ['--initial-checkpoint', '--pretrained-path'])
def test_weights_under_a_prefix_are_refused_naming_the_prefix_and_the_fix_works(tmp_path, capsys, flag):
    """Every key prefixed 'model.': timm's --pretrained-path loader would train from random initialisation
    after a log line; both flags refuse in one line naming the prefix, and the command given fixes the file."""
    from conftest import one_error_line
    from timm_mixplug.train import engine
    data = _npz_set(tmp_path / 'd', (4, 4))
    bad = _weights(tmp_path / 'w.safetensors', prefix='model.')
    extra = [flag, bad] + (['--pretrained'] if flag == '--pretrained-path' else [])
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', *extra)) == 2
    line = one_error_line(capsys)
    assert "every key of the file starts with 'model.'" in line and not (tmp_path / 'run').exists(), line
    if flag == '--pretrained-path':
        assert 'randomly initialised parameter tensors of --model resnet20_cifar are not in the file' in line
    cmd, fixed = _fix_command(line)
    _run_fix(cmd)
    extra[1] = fixed
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', *extra)) == 0


def test_pretrained_path_allows_the_new_classifier_only(tmp_path):
    """--pretrained-path of 10-class weights on a 2-class set: timm resets the classifier (what --num-classes
    asks for) and loads the rest; the run trains from those weights."""
    from timm_mixplug.train import engine
    data = _npz_set(tmp_path / 'd', (4, 4))
    good = _weights(tmp_path / 'w10.safetensors', num_classes=10)
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', '--pretrained', '--pretrained-path',
                                   good)) == 0


def test_teacher_of_another_class_count_and_a_dml_run_as_teacher(tmp_path, capsys):
    """The message names what the file holds and a fix that works: a teacher over other classes is not fixed
    by --num-classes; a DML run's weights hold its peers, and the command given writes one peer."""
    from conftest import one_error_line
    from timm_mixplug.train import engine
    data = _npz_set(tmp_path / 'd', (4, 4))
    kd = ['--kd-model-name', 'resnet20_cifar', '--kd-pretrained-path']
    other = _weights(tmp_path / 't3.safetensors', num_classes=3)
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', *kd, other)) == 2
    line = one_error_line(capsys)
    assert 'the file holds a teacher of 3 classes, the data has 2' in line and '--num-classes' not in line, line
    dml = _weights(tmp_path / 'dml.safetensors', peers=2)
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', *kd, dml)) == 2
    line = one_error_line(capsys)
    assert "it is a DML run's weights: its 2 peers under 0.*, 1.*" in line and not (tmp_path / 'run').exists()
    cmd, fixed = _fix_command(line)
    _run_fix(cmd)
    assert engine.main(_train_argv(data, tmp_path, 'run', '--epochs', '1', *kd, fixed)) == 0


def test_setup_timm_mixing_takes_dataset_partners():
    """timm's own train.py: ``partners=`` reaches the BC mixer, so a first batch of one class is mixed."""
    import timm
    from timm_mixplug import setup_timm_mixing
    ds = _Patterns([0] * 6 + [1] * 2)
    _, mixup_fn, _ = setup_timm_mixing('bc', timm.create_model('resnet20_cifar', num_classes=2), 2, {},
                                       prefetcher=False, partners=DatasetPartners(ds))
    x = torch.stack([ds[k][0] for k in range(4)])
    out, soft = mixup_fn(x.clone(), torch.zeros(4, dtype=torch.long))
    _check_batch('bc', ds, x, torch.zeros(4, dtype=torch.long), out, soft)
