"""Checkpoints: safetensors + JSON, atomic writes, exact round trips, no pickle execution."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from timm_mixplug.utils.checkpoint import (
    CheckpointError, capture_rng, load_stateful, load_train_meta, load_train_state, load_weights,
    restore_rng, save_train_state, save_weights, scheduler_state)


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    return m


def _train_a_bit(model, opt, steps=3):
    for _ in range(steps):
        loss = model(torch.randn(6, 4)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize('opt_name', ['adamw', 'sgd'])
def test_train_state_round_trip_is_exact(tmp_path, opt_name):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    model = _model()
    opt = create_optimizer_v2(model, opt_name, lr=0.1, weight_decay=0.01)
    sched, _ = create_scheduler_v2(opt, 'cosine', num_epochs=5, warmup_epochs=1)
    _train_a_bit(model, opt)
    sched.step(2)
    path = str(tmp_path / 'last-state.safetensors')
    save_train_state(path, dict(model=model.state_dict(), optimizer=opt.state_dict(),
                                scheduler=scheduler_state(sched), rng=capture_rng()), dict(epoch=2, note='x'))
    assert [f for f in os.listdir(tmp_path) if f.endswith('.tmp')] == []

    model2 = _model()
    opt2 = create_optimizer_v2(model2, opt_name, lr=0.1, weight_decay=0.01)
    sched2, _ = create_scheduler_v2(opt2, 'cosine', num_epochs=5, warmup_epochs=1)
    sections, meta = load_train_state(path)
    assert meta == dict(epoch=2, note='x')
    model2.load_state_dict(sections['model'])
    opt2.load_state_dict(sections['optimizer'])
    load_stateful(sched2, sections['scheduler'])
    assert opt2.state_dict()['param_groups'] == opt.state_dict()['param_groups']
    # continuing both gives bit-identical parameters
    torch.manual_seed(1)
    _train_a_bit(model, opt)
    torch.manual_seed(1)
    _train_a_bit(model2, opt2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    sched.step(3)
    sched2.step(3)
    assert opt.param_groups[0]['lr'] == opt2.param_groups[0]['lr']


@pytest.mark.filterwarnings('ignore::FutureWarning')
def test_plateau_scheduler_nested_state(tmp_path):
    from timm.scheduler import create_scheduler_v2
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched, _ = create_scheduler_v2(opt, 'plateau', num_epochs=10, patience_epochs=0, decay_rate=0.5)
    for e, m in enumerate([1.0, 0.5, 0.4]):
        sched.step(e + 1, m)
    path = str(tmp_path / 's.safetensors')
    save_train_state(path, dict(scheduler=scheduler_state(sched)), {})
    opt2 = torch.optim.SGD(_model().parameters(), lr=0.1)
    sched2, _ = create_scheduler_v2(opt2, 'plateau', num_epochs=10, patience_epochs=0, decay_rate=0.5)
    load_stateful(sched2, load_train_state(path)[0]['scheduler'])
    assert sched2.lr_scheduler.state_dict() == sched.lr_scheduler.state_dict()


def test_rng_capture_restore(tmp_path):
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    path = str(tmp_path / 'rng.safetensors')
    save_train_state(path, dict(rng=state), {})
    torch.rand(5), np.random.rand(5), random.random()
    restore_rng(load_train_state(path)[0]['rng'])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_weights_file_is_plain_and_shared_tensors_ok(tmp_path):
    from safetensors.torch import load_file
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied
    path = str(tmp_path / 'w.safetensors')
    save_weights(path, model.state_dict(), model='tied', epoch=3)
    sd = load_file(path)
    assert set(sd) == {'0.weight', '1.weight'} and torch.equal(sd['0.weight'], sd['1.weight'])
    assert load_weights(path).keys() == sd.keys()
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_overwrite_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / 'last.safetensors')
    save_weights(path, {'a': torch.zeros(2)})
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError('disk full')
    monkeypatch.setattr(st, 'save_file', boom)
    with pytest.raises(OSError):
        save_weights(path, {'a': torch.ones(2)})
    monkeypatch.undo()
    assert torch.equal(load_weights(path)['a'], torch.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ['last.safetensors']


def test_corrupt_and_foreign_files(tmp_path):
    path = str(tmp_path / 'last-state.safetensors')
    save_train_state(path, dict(model=_model().state_dict()), dict(epoch=1))
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='corrupt'):
        load_train_state(path)
    open(path, 'wb').write(b'not a safetensors file at all')
    with pytest.raises(CheckpointError):
        load_train_state(path)
    weights = str(tmp_path / 'w.safetensors')
    save_weights(weights, _model().state_dict())
    with pytest.raises(CheckpointError, match='not a timm_mixplug training state'):
        load_train_state(weights)
    with pytest.raises(CheckpointError, match='not found'):
        load_train_state(str(tmp_path / 'missing.safetensors'))


def test_train_meta_is_read_from_the_header_alone(tmp_path, monkeypatch):
    path = str(tmp_path / 'last-state.safetensors')
    meta = dict(epoch=3, num_epochs=9, args={'model': 'resnet20_cifar', 'lr': 0.1})
    save_train_state(path, dict(model=_model().state_dict()), meta)
    assert load_train_state(path)[1] == meta
    import safetensors
    monkeypatch.setattr(safetensors.safe_open, 'get_tensor', lambda *a: pytest.fail('a tensor was read'),
                        raising=False)
    assert load_train_meta(path) == meta
    weights = str(tmp_path / 'w.safetensors')
    save_weights(weights, _model().state_dict())
    with pytest.raises(CheckpointError, match='not a timm_mixplug training state'):
        load_train_meta(weights)
    open(path, 'wb').write(b'not a safetensors file at all')
    with pytest.raises(CheckpointError, match='corrupt or unreadable'):
        load_train_meta(path)
    with pytest.raises(CheckpointError, match='not found'):
        load_train_meta(str(tmp_path / 'missing.safetensors'))


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch EVIL_MARKER',))


@pytest.mark.filterwarnings('ignore::UserWarning')
def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / 'evil.pth')
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {'w': torch.zeros(1)}, 'x': _Evil()}, f)
    with pytest.raises(CheckpointError):
        load_weights(path)
    assert not (tmp_path / 'EVIL_MARKER').exists()
    # a plain torch.save state dict is fine
    torch.save({'state_dict': {'module.w': torch.ones(2)}}, str(tmp_path / 'ok.pth'))
    assert list(load_weights(str(tmp_path / 'ok.pth'))) == ['w']


def test_resolve_resume_path(tmp_path):
    from timm_mixplug.train.timm_checkpoint import resolve_resume_path
    state = tmp_path / 'last-state.safetensors'
    save_train_state(str(state), {}, {})
    for p in (tmp_path, tmp_path / 'last.safetensors', state):
        assert resolve_resume_path(str(p)) == str(state)
    with pytest.raises(CheckpointError, match='no training state'):
        resolve_resume_path(str(tmp_path / 'other'))
