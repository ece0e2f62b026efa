"""Parity with timm's upstream train.py: the flag table, an upstream args.yaml, and the behaviour of each
timm option implemented by train.py (BCE, JSD/AugMix, repeated augmentation, compile, checkpoint history,
recovery, val interval, W&B, model dtype, head init, layer decay, create_dataset keys, loaders)."""
import collections
import importlib.machinery
import logging
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import make_tiny_images, read_rows, tiny_train_args
from timm_mixplug.train import engine
from timm_mixplug.train.build import build as build_model_and_data, create_timm_model
from timm_mixplug.train.config import create_parser, parse_args
from timm_mixplug.errors import UsageError
from timm_mixplug.train.flags import TIMM_FLAGS, implemented, refused

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'timm-train-args.yaml')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'parity_imgs', val_per_class=2)


def fixture_keys():
    with open(FIXTURE) as f:
        return set(yaml.safe_load(f))


def small(images, out, exp, *extra):
    return tiny_train_args(images, out, exp, *extra, log_interval=50)


def build(argv, training=True):
    args = parse_args(argv)
    device = engine._init_distributed(args)
    return args, build_model_and_data(args, device, training=training)


# ---- the table ----

def test_table_is_exactly_the_upstream_flags():
    """The fixture was written by upstream train.py: its keys are upstream's dests (plus nothing)."""
    dests = [f.dest for f in TIMM_FLAGS]
    assert len(dests) == len(set(dests))
    assert set(dests) == fixture_keys()
    assert set(refused()) <= fixture_keys()  # no non-upstream name in the refused list
    assert len(implemented()) + len(refused()) == len(TIMM_FLAGS)
    assert all(f.why for f in TIMM_FLAGS if f.dest in refused())


def test_every_fixture_key_is_known_and_at_defaults_nothing_is_refused():
    parser = create_parser()
    known = {a.dest for a in parser._actions}
    unknown = fixture_keys() - known
    assert not unknown, f'upstream keys unknown to our parser: {sorted(unknown)}'
    # the fixture's epochs: 1 with timm's default warmup_epochs: 5 would train at the warm-up LR throughout
    with pytest.raises(UsageError, match='--warmup-epochs 5 is not shorter than --epochs 1'):
        parse_args(['-c', FIXTURE])
    args = parse_args(['-c', FIXTURE, '--warmup-epochs', '0'])
    assert args.model == 'resnet10t' and args.checkpoint_hist == 10  # the refused options are at their defaults


def test_every_upstream_flag_on_the_command_line_and_in_help():
    parser = create_parser()
    for f in TIMM_FLAGS:
        for opt in f.flags:
            if opt.startswith('-'):
                assert opt in parser._option_string_actions, opt
    text = parser.format_help()
    for f in TIMM_FLAGS:
        if f.dest in ('local_rank', 'data'):
            continue
        assert next(o for o in f.flags if o.startswith('--')) in text, f.dest
        action = parser._option_string_actions[f.flags[-1]]
        assert len(action.help) > 10, f.dest
    assert text.count('(default:') >= len(TIMM_FLAGS) - 10  # defaults shown (some helps state their own)
    assert ' '.join(text.split()).count("[refused unless at timm's default:") == len(refused())


def test_unknown_key_is_an_error_with_suggestion(tmp_path):
    p = tmp_path / 'a.yaml'
    p.write_text('aug_repeat: 3\n')
    with pytest.raises(UsageError, match="unknown option 'aug_repeat'.*did you mean 'aug_repeats'"):
        parse_args(['-c', str(p)])
    p.write_text('amp_scaler: x\n')  # was in the old ignore list but is not an upstream flag
    with pytest.raises(UsageError, match="unknown option 'amp_scaler'"):
        parse_args(['-c', str(p)])


def test_upstream_fixture_trains_without_warning(images, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert engine.main(['-c', FIXTURE, '--data-dir', images, '--output', str(tmp_path), '--warmup-epochs', '0']) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert os.path.isfile(tmp_path / 'from-timm' / 'best.safetensors')


def test_refused_option_off_default_is_one_error_line(images, tmp_path, capsys):
    """Set away from timm's default, a refused option stops the run before anything is written; at its
    default (``--tta 0``) it is accepted silently."""
    assert engine.main(small(images, tmp_path, 'w', '--tta', '3')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: --tta 3: not supported with timm_mixplug'), err
    assert not (tmp_path / 'w').exists()
    assert engine.main(small(images, tmp_path, 'w', '--tta', '0')) == 0


# ---- losses ----

def _bce_by_hand(x, t):
    p = torch.sigmoid(x.double())
    return -(t * p.log() + (1 - t) * (1 - p).log())


def test_bce_loss_value_without_mixing():
    from timm_mixplug.train.options import create_train_loss
    torch.manual_seed(0)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    args = parse_args(['--bce-loss', '--smoothing', '0.1'])
    t = torch.full((6, 5), 0.1 / 5).scatter_(1, y[:, None], 0.9 + 0.1 / 5).double()
    assert create_train_loss(args)(x, y).item() == pytest.approx(_bce_by_hand(x, t).mean().item(), rel=1e-5)
    args = parse_args(['--bce-loss', '--smoothing', '0.1', '--bce-sum'])  # sum over classes: C times the mean
    assert create_train_loss(args)(x, y).item() == pytest.approx(_bce_by_hand(x, t).sum(1).mean().item(), rel=1e-5)
    args = parse_args(['--bce-loss', '--smoothing', '0', '--bce-pos-weight', '2'])
    t0 = F.one_hot(y, 5).double()
    p = torch.sigmoid(x.double())
    expect = -(2 * t0 * p.log() + (1 - t0) * (1 - p).log()).mean()
    assert create_train_loss(args)(x, y).item() == pytest.approx(expect.item(), rel=1e-5)


def test_bce_loss_with_mixing_uses_the_mixed_targets():
    from timm_mixplug.train.options import create_train_loss
    torch.manual_seed(1)
    x = torch.randn(4, 3)
    soft = torch.tensor([[0.7, 0.3, 0.], [0., 0.4, 0.6], [0.5, 0.5, 0.], [1., 0., 0.]])
    args = parse_args(['--bce-loss', '--mixup', '0.2'])
    assert args.mix == 'mixup'
    assert create_train_loss(args)(x, soft).item() == pytest.approx(_bce_by_hand(x, soft.double()).mean().item(),
                                                                    rel=1e-5)
    args = parse_args(['--bce-loss', '--mixup', '0.2', '--bce-target-thresh', '0.45'])
    binar = (soft > 0.45).double()
    assert create_train_loss(args)(x, soft).item() == pytest.approx(_bce_by_hand(x, binar).mean().item(), rel=1e-5)


def test_bce_in_training_with_mixed_targets(images, tmp_path):
    """train.py's task with --bce-loss --mix mixup: its loss is the hand BCE of its logits against the mixed
    (soft) targets the loader delivers."""
    from timm.loss import BinaryCrossEntropy
    args, b = build(small(images, tmp_path, 'bce', '--bce-loss', '--mix', 'mixup', '--bce-pos-weight', '1.5'))
    assert isinstance(b.task.criterion, BinaryCrossEntropy)
    x, y = next(iter(b.loader_train))
    assert y.shape == (8, 4) and ((y > 0).sum(1) >= 2).any()  # soft, mixed targets
    out = b.task(x, y)
    p = torch.sigmoid(out['output'].detach().double())
    t = y.double()
    expect = -(1.5 * t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert out['loss'].item() == pytest.approx(expect.item(), rel=1e-4)
    assert engine.main(small(images, tmp_path, 'bce2', '--bce-loss', '--mix', 'cutmix')) == 0


@pytest.mark.parametrize('extra, match', [
    (['--bce-loss', '--mix', 'bc'], 'own loss \\(SoftTargetKLDiv'),
    (['--bce-sum'], 'add --bce-loss'),
    (['--jsd-loss'], 'add --aug-splits'),
    (['--aug-splits', '1'], '0 .off. or an integer >= 2'),
    (['--aug-splits', '2', '--mix', 'mixup'], 'cannot be combined'),
    (['--split-bn'], 'add --aug-splits'),
    (['--aug-repeats', '0.5'], '>= 1'),
    (['--val-interval', '0'], '>= 1'),
    (['--checkpoint-hist', '-1'], '>= 0'),
    (['--recovery-interval', '-2'], '>= 0'),
    (['--model-dtype', 'bfloat16', '--amp'], 'float32 model'),
    (['--torchcompile-mode', 'max-autotune'], 'add --torchcompile'),
    (['--layer-decay-min-scale', '2'], r'\[0, 1\]'),
    (['--wandb-resume-id', 'x'], 'add --resume'),
    (['--torchcompile', 'bogus'], 'must be a torch.compile backend'),
    (['--epoch-repeats', '-1'], '>= 0'),
    (['--worker-seeding', 'some'], 'must be one of all, part'),
    (['--train-num-samples', '0'], '>= 1'),
    (['--bce-loss', '--bce-target-thresh', '1.5'], r'\[0, 1\]'),
    (['--bce-loss', '--bce-pos-weight', '0'], '> 0'),
    (['--aug-splits', '2', '--task', 'dml'], 'classification only'),
    (['--aug-splits', '2', '--no-prefetcher'], 'prefetcher'),
    (['--jsd-loss', '--bce-loss', '--aug-splits', '2'], 'choose one'),
])
def test_cross_flag_checks(extra, match):
    with pytest.raises(UsageError, match=match):
        parse_args(extra)


# ---- AugMix: --aug-splits / --jsd-loss / --split-bn ----

def test_augmix_splits_jsd_and_split_bn(images, tmp_path):
    from timm.data import AugMixDataset
    from timm.layers import SplitBatchNorm2d
    from timm.loss import JsdCrossEntropy
    args, b = build(small(images, tmp_path, 'am', '--aug-splits', '3', '--jsd-loss', '--split-bn',
                          '--aa', 'augmix-m3-w2-d1', '--smoothing', '0'))
    assert isinstance(b.loader_train.dataset.dataset, AugMixDataset)  # inside SeededItems
    assert isinstance(b.task.criterion, JsdCrossEntropy)
    bns = [m for m in b.task.get_trainable_module().modules() if isinstance(m, SplitBatchNorm2d)]
    assert bns and all(m.num_splits == 3 for m in bns)
    x, y = next(iter(b.loader_train))
    assert x.shape[0] == 3 * 8 and torch.equal(y[:8], y[8:16]) and torch.equal(y[:8], y[16:])
    assert not torch.equal(x[:8], x[8:16])  # the augmented splits differ from the clean one
    # JSD of identical splits is the clean split's cross-entropy alone
    logits = torch.randn(4, 4)
    same = torch.cat([logits] * 3)
    assert b.task.criterion(same, y[:4].repeat(3)).item() == pytest.approx(
        F.cross_entropy(logits, y[:4]).item(), rel=1e-5)
    assert engine.main(small(images, tmp_path, 'am2', '--aug-splits', '2', '--jsd-loss', '--split-bn')) == 0


# ---- repeated augmentation ----

def test_aug_repeats_sample_counts(images, tmp_path):
    from timm.data.distributed_sampler import RepeatAugSampler
    from timm_mixplug.train.options import set_loader_epoch
    args, b = build(small(images, tmp_path, 'ra', '--aug-repeats', '3', '-b', '4'))
    sampler = b.loader_train.loader.batch_sampler.sampler
    assert isinstance(sampler, RepeatAugSampler)
    orders = []
    for epoch in (0, 1):
        set_loader_epoch(b.loader_train, epoch)
        idx = list(iter(b.loader_train.loader.batch_sampler))
        flat = [i for batch in idx for i in batch]
        assert len(flat) == 32 and len(b.loader_train) == 8  # one epoch = len(dataset) samples
        # each drawn image appears 3 times (10 x 3), the last one twice (32 = 10 * 3 + 2)
        assert sorted(collections.Counter(flat).values()) == [2] + [3] * 10
        orders.append(flat)
    assert orders[0] != orders[1]  # set_epoch reshuffles
    from timm_mixplug.train.options import loader_kwargs  # distributed: create_loader builds it per rank
    args.distributed = True
    assert loader_kwargs(args, True)['num_aug_repeats'] == 3 and 'num_aug_repeats' not in loader_kwargs(args, False)
    assert engine.main(small(images, tmp_path, 'ra2', '--aug-repeats', '2')) == 0


# ---- torch.compile ----

TASKS = {
    'classification': [],
    'dml': ['--dml-peers', '2'],
    'glmc': [],
    'nonharmonic': ['--nh-views', '2'],
    'aux': ['--aux-tasks', 'random_labels'],
}


@pytest.mark.parametrize('task', list(TASKS))
def test_torchcompile_loss_matches_eager(images, tmp_path, task):
    """Every task's compile(): the compiled loss equals the eager one (aot_eager backend: the same graph
    capture as inductor without the C++ build; inductor is measured in benchmarks/bench_compile.py)."""
    from torch._dynamo.utils import counters
    extra = ['--task', task, *TASKS[task], '--no-prefetcher']
    losses = []
    for compiled in (False, True):
        argv = small(images, tmp_path, task, *extra) + (['--torchcompile', 'aot_eager'] if compiled else [])
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        args, b = build(argv)
        x, y = next(iter(b.loader_train))
        torch.manual_seed(1)
        out = b.task(x, y)
        out['loss'].backward()
        losses.append(out['loss'].item())
        assert (counters['stats']['unique_graphs'] > 0) == compiled  # compiled graphs ran (only) when asked
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5)


def test_torchcompile_end_to_end_saves_plain_keys(images, tmp_path):
    from safetensors.torch import load_file
    assert engine.main(small(images, tmp_path, 'tc', '--torchcompile', 'aot_eager')) == 0
    sd = load_file(str(tmp_path / 'tc' / 'best.safetensors'))
    assert sd and not any('_orig_mod' in k for k in sd)


# ---- checkpoints: history and recovery ----

def test_checkpoint_history_keeps_the_n_best(tmp_path):
    from timm_mixplug.utils.checkpoint_history import CheckpointHistory
    sd = lambda: {'w': torch.zeros(1)}  # noqa: E731
    h = CheckpointHistory(str(tmp_path), 2, decreasing=False)
    for epoch, metric in enumerate([1.0, 5.0, 3.0, 4.0, 2.0]):
        h.save(metric, sd, epoch=epoch)
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-1.safetensors', 'checkpoint-3.safetensors']
    again = CheckpointHistory(str(tmp_path), 2)  # a resumed run counts the files already there
    again.save(4.5, sd, epoch=5)
    assert sorted(os.listdir(tmp_path)) == ['checkpoint-1.safetensors', 'checkpoint-5.safetensors']
    lo = tmp_path / 'lo'
    lo.mkdir()
    h = CheckpointHistory(str(lo), 1, decreasing=True)
    for epoch, metric in enumerate([3.0, 1.0, 2.0]):
        h.save(metric, sd, epoch=epoch)
    assert os.listdir(lo) == ['checkpoint-1.safetensors']
    h0 = CheckpointHistory(str(lo), 0)
    assert h0.save(0.0, sd, epoch=9) is None


def test_val_interval_and_checkpoint_hist_end_to_end(images, tmp_path):
    assert engine.main(small(images, tmp_path, 'vi', '--epochs', '3', '--val-interval', '2',
                             '--checkpoint-hist', '1')) == 0
    rows = read_rows(tmp_path / 'vi' / 'summary.csv')
    assert [r['eval_top1'] != '' for r in rows] == [False, True, True]  # epoch 1, and the last epoch
    files = os.listdir(tmp_path / 'vi')
    assert len([f for f in files if f.startswith('checkpoint-')]) == 1
    assert 'checkpoint-0.safetensors' not in files and 'recovery-state.safetensors' not in files


def test_recovery_interval_writes_a_resumable_state(images, tmp_path, monkeypatch):
    from timm_mixplug.utils import checkpoint_history
    from timm_mixplug.utils.checkpoint import load_train_state
    monkeypatch.setattr(checkpoint_history.RecoveryWriter, 'clear', lambda self: None)  # as if interrupted
    assert engine.main(small(images, tmp_path, 'rec', '--epochs', '2', '--max-epochs-this-run', '1',
                             '--recovery-interval', '3')) == 0
    path = tmp_path / 'rec' / 'recovery-state.safetensors'
    _, meta = load_train_state(str(path))
    assert meta['epoch'] == 1 and meta['recovery_batch'] == 2 and meta['num_updates'] == 3
    monkeypatch.undo()
    assert engine.main(small(images, tmp_path, 'rec', '--epochs', '2', '--resume', str(path))) == 0
    rows = read_rows(tmp_path / 'rec' / 'summary.csv')
    assert [r['epoch'] for r in rows] == ['0', '1'] and not path.exists()


# ---- W&B ----

def test_log_wandb_missing_package_is_one_line_exit_2(images, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb fails
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'wandb' else
                        importlib.machinery.PathFinder.find_spec(name))
    assert engine.main(small(images, tmp_path, 'wb', '--log-wandb')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "timm_mixplug[wandb]"' in err[0]
    assert not (tmp_path / 'wb').exists()


def test_log_wandb_logs_every_epoch(images, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType('wandb')
    fake.__spec__ = importlib.machinery.ModuleSpec('wandb', None)
    fake.init = lambda **kw: calls.append(('init', kw))
    fake.log = lambda row: calls.append(('log', row))
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    assert engine.main(small(images, tmp_path, 'wb', '--log-wandb', '--wandb-project', 'p', '--epochs', '2',
                             '--wandb-tags', 'a', 'b')) == 0
    assert calls[0][0] == 'init' and calls[0][1]['project'] == 'p' and calls[0][1]['tags'] == ['a', 'b']
    assert calls[0][1]['config']['model'] == 'resnet20_cifar' and calls[0][1]['name'] == 'wb'
    logs = [c[1] for c in calls if c[0] == 'log']
    assert [r['epoch'] for r in logs] == [0, 1] and 'eval_top1' in logs[1] and 'train_loss' in logs[0]


# ---- model options ----

def test_model_dtype_bfloat16(images, tmp_path):
    args, b = build(small(images, tmp_path, 'bf', '--model-dtype', 'bfloat16'))
    assert {p.dtype for p in b.task.get_trainable_module().parameters()} == {torch.bfloat16}
    x, y = next(iter(b.loader_train))
    assert x.dtype == torch.bfloat16
    assert engine.main(small(images, tmp_path, 'bf2', '--model-dtype', 'bfloat16', '--no-prefetcher')) == 0
    assert float(read_rows(tmp_path / 'bf2' / 'summary.csv')[0]['train_loss']) < 10


def test_head_init_scale_and_bias(images, tmp_path):
    args = parse_args(small(images, tmp_path, 'h'))
    torch.manual_seed(0)
    ref = create_timm_model(args, 4)
    args = parse_args(small(images, tmp_path, 'h', '--head-init-scale', '0.5', '--head-init-bias', '0.25'))
    torch.manual_seed(0)
    m = create_timm_model(args, 4)
    assert torch.allclose(m.get_classifier().weight, 0.5 * ref.get_classifier().weight)
    assert torch.all(m.get_classifier().bias == 0.25)
    body = [k for k in ref.state_dict() if not k.startswith('fc.')]
    assert all(torch.equal(ref.state_dict()[k], m.state_dict()[k]) for k in body)


def test_layer_decay_min_scale_reaches_the_optimizer():
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    import timm
    model = timm.create_model('resnet20_cifar', num_classes=4)

    def scales(*extra):
        args = parse_args(['--layer-decay', '0.5', *extra])
        opt = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
        return [g['lr_scale'] for g in opt.param_groups]
    assert min(scales()) < 0.3
    assert min(scales('--layer-decay-min-scale', '0.3')) == pytest.approx(0.3)


# ---- datasets and loaders ----

def test_create_dataset_receives_timm_dataset_keys(tmp_path, monkeypatch):
    from timm_mixplug.data.datasets import ArrayImageDataset
    from timm_mixplug.train import data as train_data
    from timm_mixplug.train.data import create_datasets
    import numpy as np
    seen = []

    def fake(name, **kw):
        seen.append((name, kw))
        return ArrayImageDataset(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1], ['a', 'b'])
    monkeypatch.setattr(train_data, 'create_dataset', fake)
    args = parse_args(['--dataset', 'hfds/x', '--data-dir', str(tmp_path), '--input-key', 'img',
                       '--target-key', 'label_id', '--train-num-samples', '4', '--val-num-samples', '2',
                       '--dataset-trust-remote-code', '--epoch-repeats', '2'])
    create_datasets(args)
    (_, tr), (_, va) = seen
    assert (tr['input_key'], tr['target_key'], tr['num_samples'], tr['trust_remote_code'], tr['repeats']) == (
        'img', 'label_id', 4, True, 2.0)
    assert (va['input_key'], va['num_samples'], 'repeats' in va) == ('img', 2, False)

    def broken(name, **kw):
        raise KeyError('image')  # what hfds raises for a missing column
    monkeypatch.setattr(train_data, 'create_dataset', broken)
    with pytest.raises(UsageError, match="cannot load dataset 'hfds/x'"):
        create_datasets(args)


def test_multi_epochs_loader_and_worker_seeding(images, tmp_path):
    from timm.data.loader import MultiEpochsDataLoader
    args, b = build(small(images, tmp_path, 'me', '--use-multi-epochs-loader', '--worker-seeding', 'part'))
    assert isinstance(b.loader_train.loader, MultiEpochsDataLoader)
    assert b.loader_train.loader.worker_init_fn.keywords['worker_seeding'] == 'part'
    assert engine.main(small(images, tmp_path, 'me2', '--use-multi-epochs-loader', '--epochs', '2')) == 0
    assert len(read_rows(tmp_path / 'me2' / 'summary.csv')) == 2


# ---- process options ----

def test_device_modules_are_imported_and_bad_ones_refused(images, tmp_path, monkeypatch, capsys):
    (tmp_path / 'my_backend_mod.py').write_text('LOADED = True\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'my_backend_mod', raising=False)
    assert engine.main(small(images, tmp_path, 'dm', '--device-modules', 'my_backend_mod')) == 0
    assert sys.modules['my_backend_mod'].LOADED
    assert engine.main(small(images, tmp_path, 'dm2', '--device-modules', 'no_such_backend_xyz')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import 'no_such_backend_xyz'" in err[0]
    assert not (tmp_path / 'dm2').exists()


def test_fast_norm_enables_timm_fast_norm_layers(monkeypatch):
    from timm.layers import LayerNorm, fast_norm
    from timm_mixplug.train.options import apply_process_options
    monkeypatch.setattr(fast_norm, '_USE_FAST_NORM', False)
    assert not LayerNorm(8)._fast_norm
    apply_process_options(parse_args(['--fast-norm']))
    assert LayerNorm(8)._fast_norm
