"""timm's own checkpoints (written by timm.utils.CheckpointSaver) in train.py, and ours in timm."""
import argparse
import os
import pickle

import pytest
import torch

from conftest import load_train_script, make_tiny_images, read_rows, tiny_train_args
from timm_mixplug.train.timm_checkpoint import load_any_weights, load_timm_train_state
from timm_mixplug.utils.checkpoint import CheckpointError, load_weights

train_script = load_train_script('mixplug_train_script_timm_ckpt')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'timm_ckpt_imgs', val_per_class=2)


def base_args(data_dir, out, exp, *extra):
    return tiny_train_args(data_dir, out, exp, *extra, epochs=3)


def _timm_run(folder, epoch=1, ema=False, with_args=True):
    """A timm training checkpoint of resnet20_cifar (4 classes) after a few SGD steps, written by timm's
    CheckpointSaver as timm's train.py does (args as an argparse.Namespace)."""
    import timm
    from timm.optim import create_optimizer_v2
    from timm.utils import CheckpointSaver, ModelEmaV3
    torch.manual_seed(3)
    model = timm.create_model('resnet20_cifar', num_classes=4)
    opt = create_optimizer_v2(model, 'sgd', lr=0.05, momentum=0.9, weight_decay=2e-5)
    model_ema = ModelEmaV3(model, decay=0.5) if ema else None
    for _ in range(2):
        model(torch.randn(8, 3, 16, 16)).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()
        if model_ema is not None:
            model_ema.update(model)
    args = argparse.Namespace(model='resnet20_cifar', num_classes=4, lr=0.05, epochs=3)
    os.makedirs(folder, exist_ok=True)
    saver = CheckpointSaver(model, opt, args=args if with_args else None, model_ema=model_ema, checkpoint_dir=str(folder),
                            recovery_dir=str(folder), max_history=2)
    saver.save_checkpoint(epoch, metric=50.0)
    return model, opt, model_ema


def test_sections_of_a_timm_checkpoint(tmp_path):
    model, opt, model_ema = _timm_run(tmp_path, epoch=1, ema=True)
    sections, meta = load_timm_train_state(str(tmp_path / 'last.pth.tar'))
    assert meta['epoch'] == 2  # timm resumes at saved epoch + 1 (version 2 files)
    assert meta['model'] == 'resnet20_cifar' and meta['num_classes'] == 4
    assert meta['best_metric'] == 50.0 and meta['best_epoch'] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(sections['model'][k], v)
    ema_sd = model_ema.module.state_dict()
    assert any(not torch.equal(ema_sd[k], model.state_dict()[k]) for k in ema_sd)
    for k, v in ema_sd.items():
        assert torch.equal(sections['ema']['module.' + k], v)
    saved, ref = sections['optimizer'], opt.state_dict()
    assert saved['param_groups'] == ref['param_groups']
    for i, st in ref['state'].items():
        assert torch.equal(saved['state'][i]['momentum_buffer'], st['momentum_buffer'])
    # --initial-checkpoint takes the EMA weights first, as timm's load_checkpoint(use_ema=True)
    sd = load_any_weights(str(tmp_path / 'model_best.pth.tar'))
    with pytest.raises(CheckpointError, match='timm train.py checkpoint'):  # the library loader needs no pickle globals
        load_weights(str(tmp_path / 'model_best.pth.tar'))
    assert all(torch.equal(sd[k], v) for k, v in ema_sd.items())


def test_resume_timm_checkpoint_starts_at_next_epoch(data_dir, tmp_path):
    timm_dir = tmp_path / 'timm_run'
    model, _, _ = _timm_run(timm_dir, epoch=1)
    before = sorted(os.listdir(timm_dir))
    # lr 0 (and a fresh optimizer, whose saved lr would otherwise come back): the weights stay the timm
    # checkpoint's, so the saved weights show what was loaded
    args = base_args(data_dir, tmp_path, 'ours', '--resume', str(timm_dir / 'last.pth.tar'), '--lr', '0',
                     '--no-resume-opt')
    assert train_script.main(args) == 0
    rows = read_rows(tmp_path / 'ours' / 'summary.csv')
    assert [r['epoch'] for r in rows] == ['2']  # epoch 1 saved -> starts at 2 of 3
    from safetensors.torch import load_file
    ours = load_file(str(tmp_path / 'ours' / 'last.safetensors'))
    for k, p in model.named_parameters():
        assert torch.equal(ours[k], p.detach()), k
    assert sorted(os.listdir(timm_dir)) == before  # timm's folder is left alone
    # without saved args (timm's 'arch' is then the class name) the file still resumes
    _timm_run(tmp_path / 'no_args', epoch=0, with_args=False)
    assert train_script.main(base_args(data_dir, tmp_path, 'ours3', '--resume', str(tmp_path / 'no_args'),
                                       '--epochs', '2')) == 0
    assert [r['epoch'] for r in read_rows(tmp_path / 'ours3' / 'summary.csv')] == ['1']
    # a timm run folder resumes from its last.pth.tar; validate reads it too
    assert train_script.main(base_args(data_dir, tmp_path, 'ours2', '--resume', str(timm_dir))) == 0
    assert [r['epoch'] for r in read_rows(tmp_path / 'ours2' / 'summary.csv')] == ['2']
    assert train_script.main(['validate', *base_args(data_dir, tmp_path, 'v', '--resume',
                                                      str(timm_dir / 'checkpoint-1.pth.tar'))]) == 0


def test_resume_timm_checkpoint_with_ema_and_initial_checkpoint(data_dir, tmp_path):
    _, _, model_ema = _timm_run(tmp_path / 'timm_run', epoch=0, ema=True)
    ckpt = str(tmp_path / 'timm_run' / 'last.pth.tar')
    # EMA decay 1: the EMA weights stay the timm checkpoint's
    assert train_script.main(base_args(data_dir, tmp_path, 'ema', '--resume', ckpt, '--model-ema',
                                       '--model-ema-decay', '1.0', '--epochs', '2')) == 0
    assert [r['epoch'] for r in read_rows(tmp_path / 'ema' / 'summary.csv')] == ['1']
    from safetensors.torch import load_file
    ours = load_file(str(tmp_path / 'ema' / 'last-ema.safetensors'))
    for k, p in model_ema.module.named_parameters():
        assert torch.equal(ours[k], p.detach()), k
    assert train_script.main(base_args(data_dir, tmp_path, 'init', '--initial-checkpoint', ckpt,
                                       '--epochs', '1')) == 0
    assert [r['epoch'] for r in read_rows(tmp_path / 'init' / 'summary.csv')] == ['0']


def test_timm_checkpoint_of_another_model_is_refused(data_dir, tmp_path, capsys):
    _timm_run(tmp_path / 'timm_run')
    args = base_args(data_dir, tmp_path, 'bad', '--resume', str(tmp_path / 'timm_run' / 'last.pth.tar'),
                     '--model', 'resnet32_cifar')
    assert train_script.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error:') and "model='resnet20_cifar'" in err[0]
    assert not (tmp_path / 'bad').exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch EVIL_MARKER',))


@pytest.mark.filterwarnings('ignore::UserWarning')
@pytest.mark.parametrize('flag', ['--resume', '--initial-checkpoint'])
@pytest.mark.parametrize('writer', ['torch', 'pickle'])
def test_malicious_pickle_is_refused_and_never_run(data_dir, tmp_path, monkeypatch, capsys, flag, writer):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / 'evil.pth.tar')
    payload = {'state_dict': {'conv1.weight': torch.zeros(1)}, 'epoch': 1, 'version': 2,
               'args': argparse.Namespace(model='resnet20_cifar'), 'x': _Evil()}
    if writer == 'torch':
        torch.save(payload, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(payload, f)
    # the file really runs code under a general unpickle
    with pytest.raises(CheckpointError, match='posix.system|non-allowlisted'):
        load_timm_train_state(path)
    assert not (tmp_path / 'EVIL_MARKER').exists()
    assert train_script.main(base_args(data_dir, tmp_path, 'evil', flag, path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error:') and 'refused' in err[0]
    assert not (tmp_path / 'EVIL_MARKER').exists()
    assert not (tmp_path / 'evil').exists()
    if writer == 'pickle':  # the control: an unrestricted unpickle would have run the command
        with open(path, 'rb') as f:
            pickle.load(f)
        assert (tmp_path / 'EVIL_MARKER').exists()


def test_our_best_safetensors_loads_in_timm(data_dir, tmp_path):
    """What timm's train.py does with ``--initial-checkpoint best.safetensors``."""
    import timm
    from timm.models import load_checkpoint
    assert train_script.main(base_args(data_dir, tmp_path, 'run', '--epochs', '1')) == 0
    path = str(tmp_path / 'run' / 'best.safetensors')
    model = timm.create_model('resnet20_cifar', num_classes=4)
    load_checkpoint(model, path, strict=True)
    model2 = timm.create_model('resnet20_cifar', num_classes=4, checkpoint_path=path)
    ours = load_weights(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours[k]) and torch.equal(model2.state_dict()[k], ours[k])
