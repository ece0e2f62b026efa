"""End-to-end tests of train.py on tiny generated data (CPU, a few steps each)."""
import csv
import os

import pytest
import torch

from conftest import ROOT, load_train_script, run_torchrun, tiny_train_args as base_args
from timm_mixplug.data.datasets import make_image_folder

train_script = load_train_script('mixplug_train_script')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('imgs')
    make_image_folder(str(root), num_classes=4, per_class=8, val_per_class=3, size=16)
    return str(root)


def read_summary(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize('mix', ['none', 'mixup', 'cutmix', 'bc', 'bcplus', 'superclass'])
def test_each_mix_end_to_end(data_dir, tmp_path, mix):
    extra = ['--mix', mix]
    if mix == 'superclass':
        smap = tmp_path / 'super.yaml'
        smap.write_text('class_0: round\nclass_1: round\nclass_2: square\nclass_3: square\n')
        extra += ['--superclass-map', str(smap)]
    if mix == 'bc':
        extra += ['--no-prefetcher']  # the plain loader path (device-side mixing)
    assert train_script.main(base_args(data_dir, tmp_path, 'run', *extra)) == 0
    run = tmp_path / 'run'
    rows = read_summary(run / 'summary.csv')
    assert len(rows) == 1
    for key in ('train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'samples_per_sec'):
        assert key in rows[0] and rows[0][key] != ''
    assert torch.isfinite(torch.tensor(float(rows[0]['train_loss'])))
    for name in ('args.yaml', 'last.safetensors', 'best.safetensors', 'last-state.safetensors'):
        assert (run / name).is_file(), name
    import yaml
    saved = yaml.safe_load((run / 'args.yaml').read_text())
    assert saved['mix'] == mix and saved['num_classes'] == 4
    # the saved weights are plain timm weights
    import timm
    from safetensors.torch import load_file
    model = timm.create_model('resnet20_cifar', num_classes=4)
    model.load_state_dict(load_file(str(run / 'best.safetensors')))


def test_bcplus_mixes_in_the_collate_on_the_prefetcher_path(data_dir, tmp_path, monkeypatch):
    from timm_mixplug.data.mixing.bc import BetweenClassPlusMixer
    calls = {'collate': 0, 'device': 0}
    collate, device = BetweenClassPlusMixer.collate_uint8, BetweenClassPlusMixer.__call__

    def spy_collate(self, *a):
        calls['collate'] += 1
        out = collate(self, *a)
        assert out[0].is_floating_point()
        return out

    def spy_device(self, *a):
        calls['device'] += 1
        return device(self, *a)
    monkeypatch.setattr(BetweenClassPlusMixer, 'collate_uint8', spy_collate)
    monkeypatch.setattr(BetweenClassPlusMixer, '__call__', spy_device)
    assert train_script.main(base_args(data_dir, tmp_path, 'run', '--mix', 'bcplus')) == 0
    assert calls == {'collate': 4, 'device': 0}  # 32 images, batch 8
    assert train_script.main(base_args(data_dir, tmp_path, 'np', '--mix', 'bcplus', '--no-prefetcher')) == 0
    assert calls == {'collate': 4, 'device': 4}


def test_resume_matches_uninterrupted_run(data_dir, tmp_path):
    common = ['--epochs', '3', '--mix', 'bcplus', '--model-ema', '--model-ema-decay', '0.9',
              '--drop-path', '0.1', '--sched-on-updates', '--warmup-epochs', '1']
    assert train_script.main(base_args(data_dir, tmp_path, 'full', *common)) == 0
    assert train_script.main(base_args(data_dir, tmp_path, 'part', *common, '--max-epochs-this-run', '1')) == 0
    assert len(read_summary(tmp_path / 'part' / 'summary.csv')) == 1
    # resume from the run folder: continues in the same folder
    resume = base_args(data_dir, tmp_path, 'part', *common)
    resume[resume.index('--experiment'):resume.index('--experiment') + 2] = []
    resume[resume.index('--output'):resume.index('--output') + 2] = []
    assert train_script.main(resume + ['--resume', str(tmp_path / 'part')]) == 0
    full = read_summary(tmp_path / 'full' / 'summary.csv')
    part = read_summary(tmp_path / 'part' / 'summary.csv')
    assert [r['epoch'] for r in part] == ['0', '1', '2']
    for key in ('train_loss', 'eval_loss', 'eval_top1', 'ema_eval_loss', 'lr'):
        assert [r[key] for r in full] == [r[key] for r in part], key
    from safetensors.torch import load_file
    a, b = load_file(str(tmp_path / 'full' / 'last.safetensors')), load_file(str(tmp_path / 'part' / 'last.safetensors'))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_and_initial_checkpoint(data_dir, tmp_path, capsys):
    assert train_script.main(base_args(data_dir, tmp_path, 'r')) == 0
    run = tmp_path / 'r'
    best = read_summary(run / 'summary.csv')[0]
    metrics = {}
    from timm_mixplug.train import engine
    orig = engine.evaluate

    def spy(args):
        metrics.update(orig(args))
        return metrics
    engine.evaluate = spy
    try:
        assert train_script.main(['validate', '-c', str(run / 'args.yaml'), '--resume', str(run)]) == 0
        assert abs(metrics['top1'] - float(best['eval_top1'])) < 1e-6
        metrics.clear()
        assert train_script.main(['--evaluate', '-c', str(run / 'args.yaml'),
                                  '--initial-checkpoint', str(run / 'last.safetensors')]) == 0
        assert abs(metrics['top1'] - float(best['eval_top1'])) < 1e-6
    finally:
        engine.evaluate = orig
    # --initial-checkpoint starts a new run from those weights (weights only: epoch 0, fresh optimizer)
    assert train_script.main(base_args(data_dir, tmp_path, 'ft', '--initial-checkpoint',
                                       str(run / 'last.safetensors'))) == 0
    assert read_summary(tmp_path / 'ft' / 'summary.csv')[0]['epoch'] == '0'


def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: '), err
    return err[0]


@pytest.mark.parametrize('extra, expect', [
    (['--mix', 'bogus'], 'invalid choice'),
    (['--mix', 'mixup', '-b', '7'], 'even'),  # timm's Mixup pairs a batch with its reverse (BC: any size)
    (['--no-such-flag'], 'unrecognized'),
    (['--resume', 'MISSING'], 'no training state'),
    (['--model', 'no_such_model'], 'unknown --model'),
    (['--opt', 'no_such_opt'], '--opt'),
    (['-b', '64'], 'fewer than one --batch-size'),
])
def test_bad_input_exit_2_nothing_written(data_dir, tmp_path, capsys, extra, expect):
    out = tmp_path / 'out'
    args = base_args(data_dir, out, 'x', *extra)
    if extra[0] == '--resume':
        args = [a if a != 'MISSING' else str(tmp_path / 'missing') for a in args]
    assert train_script.main(args) == 2
    assert expect in _error(capsys)
    assert not out.exists()


def test_missing_data_dir_and_corrupt_checkpoint(data_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    assert train_script.main(base_args(str(tmp_path / 'nope'), out, 'x')) == 2
    assert '--data-dir must be an existing folder' in _error(capsys)
    # a truncated training state
    assert train_script.main(base_args(data_dir, tmp_path, 'ok')) == 0
    capsys.readouterr()
    state = tmp_path / 'ok' / 'last-state.safetensors'
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'last-state.safetensors').write_bytes(state.read_bytes()[:1000])
    assert train_script.main(base_args(data_dir, out, 'x', '--resume', str(bad))) == 2
    assert 'corrupt' in _error(capsys)
    # weights-only file given to --resume
    assert train_script.main(base_args(data_dir, out, 'x', '--resume', str(tmp_path / 'ok' / 'best.safetensors'))) == 2
    _error(capsys)
    assert not out.exists()


def test_quickstart_config_loads():
    from timm_mixplug.train.config import parse_args
    args = parse_args(['-c', os.path.join(ROOT, 'hparams', 'quickstart.yaml')])
    assert args.dataset == 'mixplug/digits' and args.mix == 'bcplus' and args.smoothing == 0.0


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not available')
def test_two_process_gloo_torchrun(data_dir, tmp_path):
    proc = run_torchrun(base_args(data_dir, tmp_path, 'ddp', '--mix', 'bc', '--epochs', '2', '--model-ema'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_summary(tmp_path / 'ddp' / 'summary.csv')
    assert len(rows) == 2
    # 32 images / (2 ranks x 8) = 2 steps per rank per epoch, all ranks' samples in the loss
    assert 'Distributed training: 2 processes, backend gloo' in proc.stdout + proc.stderr
    assert (tmp_path / 'ddp' / 'last-state.safetensors').is_file()
    assert 'Warning' not in proc.stderr, proc.stderr[-3000:]  # no warning a user cannot act on (DDP, loaders)


def test_epoch_seeds_differ_per_rank_and_epoch():
    from timm_mixplug.utils.random import epoch_seed
    seeds = {epoch_seed(42, e, r) for e in range(50) for r in range(8)}
    assert len(seeds) == 400
    assert epoch_seed(42, 3, 1) == epoch_seed(42, 3, 1) != epoch_seed(43, 3, 1)


def test_registered_task_and_long_tail_through_train_py(data_dir, tmp_path, caplog):
    """--task dml (2 peers, per-peer metrics) on a long-tailed subset (--imb-factor)."""
    import logging
    caplog.set_level(logging.INFO)
    from timm_mixplug.train.specs.base import list_tasks
    assert 'dml' in list_tasks(), 'the built-in dml method is not registered'
    args = base_args(data_dir, tmp_path, 'dml', '--task', 'dml', '--dml-peers', '2', '--imb-factor', '2')
    assert train_script.main(args) == 0
    row = read_summary(tmp_path / 'dml' / 'summary.csv')[0]
    for key in ('eval_top1', 'eval_peer0_top1', 'eval_peer1_top1', 'eval_few'):
        assert key in row, key


def test_pad_crop_replaces_random_resized_crop(data_dir, tmp_path):
    from timm.data import create_dataset, create_loader
    from torchvision import transforms as T
    from timm_mixplug.data.datasets import apply_pad_crop
    from timm_mixplug.data.pad_crop import PadCrop
    ds = create_dataset('', root=data_dir, split='train')
    loader = create_loader(ds, (3, 16, 16), 8, is_training=True, num_workers=0, device=torch.device('cpu'))
    assert apply_pad_crop(loader.dataset, 4, (16, 16))
    head = ds.transform.transforms[0]
    assert isinstance(head, PadCrop) and isinstance(head.pad, T.Pad) and isinstance(head.crop, T.RandomCrop)
    x, _ = next(iter(loader))
    assert x.shape == (8, 3, 16, 16)
    assert train_script.main(base_args(data_dir, tmp_path, 'pc', '--pad-crop', '4', '--mix', 'bc')) == 0


def test_pad_crop_fills_with_the_mean_colour():
    """--pad-crop pads with the data config's mean (uint8), so the border is ~0 after the loader normalises it
    (as in normalise-then-zero-pad CIFAR code), not black."""
    import numpy as np
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_loader
    from PIL import Image
    from timm_mixplug.data.datasets import ArrayImageDataset, apply_pad_crop
    ds = ArrayImageDataset(np.full((16, 8, 8, 3), 255, np.uint8), [0, 1] * 8, ['a', 'b'])
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    loader = create_loader(ds, (3, 8, 8), 16, is_training=True, hflip=0., color_jitter=0., num_workers=0,
                           mean=mean, std=std, device=torch.device('cpu'))
    assert apply_pad_crop(loader.dataset, 4, (8, 8), mean)
    pad = ds.transform.transforms[0].pad
    padded = np.asarray(pad(Image.fromarray(ds.images[0])))
    assert padded.shape == (16, 16, 3)
    border = np.ones((16, 16), bool)
    border[4:12, 4:12] = False
    assert (padded[border] == np.round(255 * np.array(mean))).all() and (padded[~border] == 255).all()
    torch.manual_seed(0)
    x, _ = next(iter(loader))  # normalised by the prefetcher
    white = ((1 - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1)
    is_border = (x - white).abs().amax(1) > 1e-3
    assert is_border.any()  # some crops include padding
    tol = 0.5 / 255 / min(std) + 1e-6  # uint8 rounding of the mean
    assert x.permute(0, 2, 3, 1)[is_border].abs().max() <= tol


def test_npz_dataset(tmp_path, capsys):
    """--dataset npz reads <data-dir>/<split>.npz (uint8 NHWC images, labels), e.g. the CIFAR-10 subset files."""
    import numpy as np
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = (rng.integers(0, 60, (24, 16, 16, 3)) + 60 * y[:, None, None, None]).astype(np.uint8)
    np.savez(tmp_path / 'tr.npz', x=x, y=y, classes=np.array(['a', 'b', 'c']))
    np.savez(tmp_path / 'te.npz', x=x[::4], y=y[::4])
    args = base_args(str(tmp_path), tmp_path / 'out', 'npz', '--dataset', 'npz', '--train-split', 'tr',
                     '--val-split', 'te', '--mix', 'bc')
    assert train_script.main(args) == 0
    rows = read_summary(tmp_path / 'out' / 'npz' / 'summary.csv')
    assert len(rows) == 1 and rows[0]['epoch'] == '0'
    correct = float(rows[0]['eval_top1']) * 6 / 100  # top-1 over te.npz's 6 images: a whole count of them
    assert 0 <= correct <= 6 and correct == pytest.approx(round(correct), abs=1e-4), rows[0]['eval_top1']
    from safetensors.torch import load_file
    head = load_file(str(tmp_path / 'out' / 'npz' / 'best.safetensors'))['fc.weight']
    assert head.shape[0] == 3  # the npz's 3 classes reached the model
    bad = base_args(str(tmp_path), tmp_path / 'out', 'npz2', '--dataset', 'npz', '--train-split', 'nope')
    assert train_script.main(bad) == 2
    assert "--train-split 'nope': no " in capsys.readouterr().err


def test_thread_choice_follows_free_cores_workers_and_overrides():
    from timm_mixplug.train.options import choose_threads
    assert choose_threads(0, 0, 1, None, cores=2, load=0.1)[0] == 2  # an idle machine: every core
    assert choose_threads(0, 0, 1, None, cores=2, load=1.0)[0] == 1  # one busy core: one thread
    assert choose_threads(0, 1, 1, None, cores=2, load=0.0)[0] == 1  # a loader worker takes a core
    assert choose_threads(0, 0, 2, None, cores=8, load=0.0)[0] == 4  # two local processes share the cores
    assert choose_threads(0, 0, 1, None, cores=2, load=5.0)[0] == 1  # never below one
    assert choose_threads(3, 0, 1, '2', cores=2, load=5.0) == (3, '--threads 3')  # the flag wins
    assert choose_threads(0, 0, 1, '2', cores=2, load=5.0) == (2, 'OMP_NUM_THREADS=2')


def test_long_evaluation_logs_progress(tmp_path, monkeypatch, caplog):
    import logging
    from timm_mixplug.train import engine, loop
    from timm_mixplug.data.datasets import make_image_folder
    monkeypatch.setattr(loop, 'PROGRESS_SECONDS', 0.0)  # every batch counts as long
    data = make_image_folder(str(tmp_path / 'd'), num_classes=4, per_class=8, val_per_class=4, size=16)
    caplog.set_level(logging.INFO)
    assert engine.main(base_args(data, tmp_path, 'r')) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Eval: [')]
    assert lines and lines[0].startswith('Eval: [   1/2]') and 'ETA' in lines[0]


def test_workers_beyond_the_cores_are_lowered_in_one_line(tmp_path, caplog):
    import logging
    from timm_mixplug.train import engine
    from timm_mixplug.data.datasets import make_image_folder
    cores = len(os.sched_getaffinity(0))
    data = make_image_folder(str(tmp_path / 'd'), num_classes=4, per_class=8, val_per_class=1, size=16)
    caplog.set_level(logging.INFO)
    assert engine.main(base_args(data, tmp_path, 'r', '--workers', str(cores + 2))) == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert f'Lowering --workers {cores + 2} to {cores}: this machine gives each of its 1 training process(es) ' \
           f'{cores} core(s)' in msgs
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_epoch_numbers_agree_and_an_unfinished_run_says_how_to_continue(tmp_path, caplog, monkeypatch):
    """One convention (epochs count from 0, as timm logs them) in the summary, the end line, validate and
    resume; --max-epochs-this-run says the run is unfinished and how to continue; no matplotlib: one line."""
    import logging
    from timm_mixplug.train import engine
    from timm_mixplug.data.datasets import make_image_folder
    from timm_mixplug.train import epochs
    monkeypatch.setattr(epochs, 'plot_summary', lambda *a, **k: False)  # as without the plot extra
    data = make_image_folder(str(tmp_path / 'd'), num_classes=4, per_class=8, val_per_class=2, size=16)
    base = base_args(data, None, None, epochs=2)  # the resume below finds the run from --resume
    caplog.set_level(logging.INFO)
    run = tmp_path / 'r'
    assert engine.main(base + ['--output', str(tmp_path), '--experiment', 'r', '--max-epochs-this-run', '1']) == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith('*** Best top1:') and '(epoch 0)' in m for m in msgs)
    unfinished = [m for m in msgs if m.startswith('Unfinished: stopped after epoch 0 of 0..1')]
    assert unfinished and unfinished[0].endswith(f'--resume {run}')
    assert '--max-epochs-this-run' not in unfinished[0].split('continue with:')[1]
    assert sum(m.startswith('summary.png is not drawn: it needs matplotlib') for m in msgs) == 1
    assert [r['epoch'] for r in read_summary(run / 'summary.csv')] == ['0']
    caplog.clear()
    assert engine.main(['validate', '--resume', str(run), '--workers', '0']) == 0
    assert any('(after epoch 0: 1 epoch(s) trained)' in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert engine.main(base + ['--resume', str(run)]) == 0
    assert any('after epoch 0 (1 epoch(s) trained)' in r.getMessage() for r in caplog.records)
    assert [r['epoch'] for r in read_summary(run / 'summary.csv')] == ['0', '1']


def test_busy_cores_sees_another_busy_process():
    """The automatic thread count reads what the cores do now (not the lagging load average)."""
    import multiprocessing as mp
    from timm_mixplug.train.options import busy_cores
    spinner = mp.get_context('spawn').Process(target=_spin, daemon=True)
    spinner.start()
    try:
        import time
        time.sleep(1.0)  # past the child's start-up
        busy, how = busy_cores(0.5)
    finally:
        spinner.terminate()
    assert how in ('busy', 'load')
    if how == 'busy':
        assert busy >= 0.7, busy


def _spin():
    while True:
        pass
