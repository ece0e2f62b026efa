"""Deep Mutual Learning: KL direction / detaching, per-peer gradients, ensemble eval, checkpoints, DDP."""
import argparse
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.loss import SoftTargetCrossEntropy
from conftest import load_train_script, make_tiny_images, read_rows, run_torchrun, tiny_train_args
from timm_mixplug.loss import dml_losses
from timm_mixplug.train.specs.dml import parse_dml_peers
from timm_mixplug.task.dml import (
    DMLEnsemble, DMLTask, peer_state_dicts,
    save_peer_weights)


class Tiny(nn.Module):
    """A linear 'peer' on flattened 2x2x2 inputs, with timm's num_classes attribute."""

    def __init__(self, c=3):
        super().__init__()
        self.num_classes = c
        self.fc = nn.Linear(8, c)

    def forward(self, x):
        return self.fc(x.flatten(1))


def kl_by_hand(p, q):
    """KL(p || q), batch mean of sum_c p log(p / q), with explicit loops."""
    total = 0.0
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            total += p[b, c].item() * math.log(p[b, c].item() / q[b, c].item())
    return total / p.shape[0]


def test_kl_direction_and_values():
    """Two peers: peer i's term is KL(p_j || p_i) (row = target peer, column = trained peer), asymmetric."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    p = logits.softmax(-1)
    kl = dml_losses(logits)
    assert kl[0].item() == pytest.approx(kl_by_hand(p[1], p[0]), abs=1e-5)
    assert kl[1].item() == pytest.approx(kl_by_hand(p[0], p[1]), abs=1e-5)
    assert abs(kl[0] - kl[1]) > 1e-4
    assert dml_losses(torch.stack([logits[0], logits[0]])).abs().max() < 1e-6


def test_mimicry_mean_sum_and_temperature():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 5)
    T = 2.0
    p = (logits / T).softmax(-1)
    for i in range(3):
        others = [kl_by_hand(p[j], p[i]) for j in range(3) if j != i]
        mean = dml_losses(logits, kl_weight=0.5, temperature=T, kl_reduction='mean')[i].item()
        summ = dml_losses(logits, kl_weight=0.5, temperature=T, kl_reduction='sum')[i].item()
        assert mean == pytest.approx(0.5 * T ** 2 * sum(others) / 2, abs=1e-5)
        assert summ == pytest.approx(0.5 * T ** 2 * sum(others), abs=1e-5)
    two = logits[:2]
    assert torch.allclose(dml_losses(two, kl_reduction='mean'), dml_losses(two, kl_reduction='sum'))


def test_other_peers_are_detached_gradient_only_to_own_peer():
    torch.manual_seed(2)
    peers = [Tiny(), Tiny(), Tiny()]
    x = torch.randn(6, 2, 2, 2)
    y = torch.randint(0, 3, (6,))
    logits = torch.stack([m(x) for m in peers])
    kl = dml_losses(logits)
    (F.cross_entropy(logits[0], y) + kl[0]).backward()  # peer 0's loss only
    assert peers[0].fc.weight.grad is not None and peers[0].fc.weight.grad.abs().sum() > 0
    for m in peers[1:]:  # no gradient reaches the other peers (at most zeros through the stacked logits)
        for g in (m.fc.weight.grad, m.fc.bias.grad):
            assert g is None or not g.any()


def test_task_loss_and_gradients_equal_per_peer_losses():
    """Joint backward of sum_i L_i gives each peer exactly grad of its own L_i (so peer 0's update equals
    the reference's sequential update)."""
    torch.manual_seed(3)
    peers = [Tiny(), Tiny()]
    task = DMLTask(peers, criterion=nn.CrossEntropyLoss(), verbose=False)
    x = torch.randn(6, 2, 2, 2)
    y = torch.randint(0, 3, (6,))
    out = task(x, y)
    out['loss'].backward()
    joint = [m.fc.weight.grad.clone() for m in peers]
    # by hand: L_i = CE(z_i, y) + KL(softmax(z_j) || softmax(z_i)), z_j a constant
    for i, m in enumerate(peers):
        for q in peers:
            q.zero_grad(set_to_none=True)
        zi = m(x)
        with torch.no_grad():
            pj = peers[1 - i](x).softmax(-1)
        li = F.cross_entropy(zi, y) + (pj * (pj.log() - zi.log_softmax(-1))).sum(-1).mean()
        li.backward()
        assert torch.allclose(m.fc.weight.grad, joint[i], atol=1e-6)
        assert out[f'peer{i}_task'].item() == pytest.approx(F.cross_entropy(zi, y).item(), abs=1e-6)
    assert out['output'].shape == (6, 3) and torch.equal(out['output'], peers[0](x))


def test_mixed_batch_uses_soft_target_loss():
    torch.manual_seed(4)
    peers = [Tiny(), Tiny()]
    task = DMLTask(peers, criterion=SoftTargetCrossEntropy(), verbose=False)
    x = torch.randn(4, 2, 2, 2)
    t = torch.softmax(torch.randn(4, 3), -1)
    out = task(x, t)
    z = torch.stack([m(x) for m in peers])
    expect = sum(-(t * z[i].log_softmax(-1)).sum(-1).mean() for i in range(2)) + dml_losses(z).sum()
    assert out['loss'].item() == pytest.approx(expect.item(), abs=1e-6)


def test_ensemble_eval_and_evaluator():
    torch.manual_seed(5)
    peers = [Tiny(), Tiny()]
    task = DMLTask(peers, criterion=nn.CrossEntropyLoss(), verbose=False).eval()
    x = torch.randn(10, 2, 2, 2)
    y = torch.randint(0, 3, (10,))
    ens = task.get_eval_model()
    assert isinstance(ens, DMLEnsemble)
    mean_p = (peers[0](x).softmax(-1) + peers[1](x).softmax(-1)) / 2
    assert torch.allclose(ens(x).exp(), mean_p, atol=1e-6)
    ev = task.create_evaluator()
    ev.update(task.eval_forward(x), y)
    m = ev.compute()
    for k, model in enumerate(peers):
        acc = (model(x).argmax(-1) == y).float().mean().item() * 100
        assert m[f'peer{k}_top1'] == pytest.approx(acc)
    assert m['top1'] == pytest.approx((mean_p.argmax(-1) == y).float().mean().item() * 100)
    assert m['loss'] == pytest.approx(F.nll_loss(mean_p.log(), y).item(), abs=1e-5)
    assert set(type(ev).metric_names) >= {'top1', 'peer0_top1', 'peer1_top1'}
    ev2 = task.create_evaluator()
    ev2.update(ens(x), y)  # a plain (B, C) output counts as the ensemble
    assert ev2.compute()['top1'] == pytest.approx(m['top1'])
    lt = DMLTask([Tiny(), Tiny()], criterion=nn.CrossEntropyLoss(), train_counts=[200, 50, 5], verbose=False)
    assert {'many', 'medium', 'few'} <= set(type(lt.create_evaluator()).metric_names)


def test_checkpoint_keys_per_peer_and_roundtrip(tmp_path):
    import timm
    from safetensors.torch import load_file
    torch.manual_seed(6)
    peers = [timm.create_model('resnet20_cifar', num_classes=3), Tiny()]  # different architectures
    task = DMLTask(peers, criterion=nn.CrossEntropyLoss(), verbose=False)
    sd = task.get_trainable_module().state_dict()
    assert all(k.split('.')[0] in ('0', '1') for k in sd)
    assert list(task.get_eval_model().state_dict()) == list(sd)
    parts = peer_state_dicts(sd)
    fresh = timm.create_model('resnet20_cifar', num_classes=3)
    fresh.load_state_dict(parts[0])
    paths = save_peer_weights(task, str(tmp_path / 'best-peer{}.safetensors'))
    assert [os.path.basename(p) for p in paths] == ['best-peer0.safetensors', 'best-peer1.safetensors']
    fresh.load_state_dict(load_file(paths[0]))
    tiny = Tiny()
    tiny.load_state_dict(load_file(paths[1]))
    assert torch.equal(tiny.fc.weight, peers[1].fc.weight)
    # resume: a new task loads the trainable state exactly
    other = DMLTask([timm.create_model('resnet20_cifar', num_classes=3), Tiny()], verbose=False,
                    criterion=nn.CrossEntropyLoss())
    other.get_trainable_module().load_state_dict(sd)
    task.eval(), other.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(task.peer_eval_models()[0](x), other.peer_eval_models()[0](x))
    assert torch.equal(task.peer_eval_models()[1].fc.weight, other.peer_eval_models()[1].fc.weight)


def test_ema_covers_all_peers():
    torch.manual_seed(7)
    task = DMLTask([Tiny(), Tiny()], criterion=nn.CrossEntropyLoss(), verbose=False)
    task.setup_ema(decay=0.5)
    opt = torch.optim.SGD(task.get_trainable_module().parameters(), lr=1.0)
    x, y = torch.randn(4, 2, 2, 2), torch.randint(0, 3, (4,))
    before = [m.fc.weight.clone() for m in task.peer_eval_models(ema=True)]
    task(x, y)['loss'].backward()
    opt.step()
    task.update_ema()  # step=None: plain decay (timm copies the weights on the first counted steps)
    ema_peers = task.peer_eval_models(ema=True)
    for k, m in enumerate(task.peer_eval_models()):
        assert torch.allclose(ema_peers[k].fc.weight, 0.5 * before[k] + 0.5 * m.fc.weight, atol=1e-6)
    assert isinstance(task.get_eval_model(ema=True), DMLEnsemble)


def test_deterministic_under_manual_seed():
    def run():
        torch.manual_seed(8)
        task = DMLTask([Tiny(), Tiny()], criterion=nn.CrossEntropyLoss(), verbose=False)
        x, y = torch.randn(4, 2, 2, 2), torch.randint(0, 3, (4,))
        return task(x, y)['loss']
    assert torch.equal(run(), run())


def test_errors_and_peer_parsing():
    with pytest.raises(ValueError):
        DMLTask([Tiny()], criterion=nn.CrossEntropyLoss())
    with pytest.raises(ValueError):
        DMLTask([Tiny(3), Tiny(4)], criterion=nn.CrossEntropyLoss())
    assert parse_dml_peers('', 'm') == ['m', 'm']
    assert parse_dml_peers('3', 'm') == ['m'] * 3
    assert parse_dml_peers('a, b', 'm') == ['a', 'b']
    with pytest.raises(ValueError):
        parse_dml_peers('a', 'm')


def test_registry_spec_builds_peers():
    from timm_mixplug.train.specs.base import DataInfo, get_task_spec
    spec = get_task_spec('dml')
    p = argparse.ArgumentParser()
    spec.add_args(p)
    args = p.parse_args(['--dml-peers', 'resnet20_cifar,resnet32_cifar'])
    args.model, args.initial_checkpoint, args.imb_factor = 'resnet20_cifar', '', None
    spec.check_args(args)
    import timm
    made = []

    def create_fn(model_name=None):
        made.append(model_name)
        return timm.create_model(model_name, num_classes=4)
    peers = spec.create_model(args, DataInfo(num_classes=4), create_fn)
    assert made == ['resnet20_cifar', 'resnet32_cifar'] and args.model == 'resnet20_cifar'
    task = spec.create_task(args, peers, nn.CrossEntropyLoss(), None, DataInfo(num_classes=4), torch.device('cpu'))
    assert isinstance(task, DMLTask) and task.num_peers == 2
    bad = p.parse_args(['--dml-peers', 'resnet20_cifar,not_a_model'])
    bad.model, bad.initial_checkpoint = 'resnet20_cifar', ''
    with pytest.raises(ValueError):
        spec.check_args(bad)


def test_prepare_distributed_wraps_each_peer(gloo_group):
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.manual_seed(9)
    task = DMLTask([Tiny(), Tiny()], criterion=nn.CrossEntropyLoss(), verbose=False)
    keys = list(task.get_trainable_module().state_dict())
    task.prepare_distributed()
    assert all(isinstance(p, DDP) for p in task._ddp_peers)
    assert list(task.get_trainable_module().state_dict()) == keys  # checkpoint keys unchanged
    x, y = torch.randn(4, 2, 2, 2), torch.randint(0, 3, (4,))
    with task.no_sync():
        task(x, y)['loss'].backward()
    task(x, y)['loss'].backward()
    assert all(m.fc.weight.grad is not None for m in task.peer_eval_models())


# ---- few-step train.py runs (tiny generated data, CPU) ----

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'dml_imgs', val_per_class=3, superclass_map=True)


def _args(data, out, exp, *extra):
    return tiny_train_args(data, out, exp, '--task', 'dml', *extra, epochs=2, lr=0.01, log_interval=10)


def test_train_py_dml_superclass_mix_resume_and_checkpoints(tiny_data, tmp_path):
    """Seed 001's setting (--mix superclass + DML) end to end; resume equals the uninterrupted run."""
    from safetensors.torch import load_file
    import timm
    train = load_train_script('mixplug_train_script_dml')
    common = ['--dml-peers', 'resnet20_cifar,resnet20_cifar', '--mix', 'superclass', '--superclass-map',
              os.path.join(tiny_data, 'super.yaml'), '--model-ema', '--model-ema-decay', '0.9']
    assert train.main(_args(tiny_data, tmp_path, 'full', *common)) == 0
    assert train.main(_args(tiny_data, tmp_path, 'part', *common, '--max-epochs-this-run', '1')) == 0
    assert train.main(_args(tiny_data, tmp_path, 'part', *common, '--resume', str(tmp_path / 'part'))) == 0
    full, part = read_rows(tmp_path / 'full' / 'summary.csv'), read_rows(tmp_path / 'part' / 'summary.csv')
    assert len(full) == len(part) == 2
    for key in ('train_loss', 'train_kl_loss', 'eval_top1', 'eval_peer0_top1', 'eval_peer1_top1',
                'eval_peer1_loss', 'ema_eval_top1'):
        assert key in full[0]
        assert [r[key] for r in full] == [r[key] for r in part], key
    best = load_file(str(tmp_path / 'full' / 'best.safetensors'))
    for sd in peer_state_dicts(best):  # one timm checkpoint per peer under the 0. / 1. prefixes
        timm.create_model('resnet20_cifar', num_classes=4).load_state_dict(sd)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not available')
def test_train_py_dml_two_process_gloo(tiny_data, tmp_path):
    proc = run_torchrun(_args(tiny_data, tmp_path, 'ddp', '-b', '4', '--epochs', '1', '--mix', 'mixup',
                              '--model-ema'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_rows(tmp_path / 'ddp' / 'summary.csv')
    assert len(rows) == 1 and rows[0]['eval_peer0_top1'] != '' and rows[0]['eval_peer1_top1'] != ''


def test_clip_parameters_cover_every_peer():
    peers = [Tiny(), Tiny()]
    task = DMLTask(peers, criterion=nn.CrossEntropyLoss(), verbose=False)
    assert len(task.get_clip_parameters()) == 4
    assert task.get_clip_parameters(exclude_head=True) == []  # Tiny is only a head


def test_autocast_bfloat16_step():
    torch.manual_seed(10)
    task = DMLTask([Tiny(), Tiny()], criterion=nn.CrossEntropyLoss(), verbose=False)
    x, y = torch.randn(4, 2, 2, 2), torch.randint(0, 3, (4,))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = task(x, y)
    assert out['loss'].dtype == torch.float32 and torch.isfinite(out['loss'])
    out['loss'].backward()
