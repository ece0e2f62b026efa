"""GLMC + seed 004 NT-Xent: schedule, weights, mixing, NT-Xent vs a loop, full loss by hand, data pipeline."""
import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import load_train_script, make_tiny_images, read_rows, run_torchrun, tiny_train_args
from timm_mixplug.task.glmc import (
    GLMCDataset, GLMCModel, GLMCTask, class_balanced_weights, cumulative_weight, cutmix_box, glmc_collate,
    glmc_mix, resample_weights, sample_lambda)
from timm_mixplug.loss import mixed_nt_xent, negative_cosine, nt_xent


def nt_xent_loop(z, zt, tau):
    """Seed 004 eq. (1) in SimCLR form, one anchor at a time (test-only reference): every other vector of
    cat(z, zt) is a negative (each vector its own class for ``nt_xent_loop_classes``)."""
    return nt_xent_loop_classes(z, zt, tau, [{i} for i in range(2 * z.shape[0])])


def test_cumulative_weight_schedule():
    assert cumulative_weight(0, 200) == 1.0
    assert cumulative_weight(100, 200) == pytest.approx(0.75)
    assert cumulative_weight(199, 200) == pytest.approx(1 - (199 / 200) ** 2)
    assert cumulative_weight(200, 200) == 0.0
    task = GLMCTask(_tiny_backbone(), [10, 5, 2], num_epochs=10)
    assert task.cumulative_weight == 1.0
    task.set_epoch(5, 10)
    assert task.cumulative_weight == pytest.approx(0.75)
    task.set_epoch(9)
    assert task.cumulative_weight == pytest.approx(0.19)


def test_class_balanced_and_resample_weights():
    counts = [100, 10, 1]
    w = class_balanced_weights(counts, 1.2)
    raw = torch.tensor(counts, dtype=torch.float64) ** -1.2
    assert torch.allclose(w.double(), raw / raw.sum() * 3, atol=1e-6) and w.sum().item() == pytest.approx(3.0)
    t = torch.tensor([0] * 100 + [1] * 10 + [2])
    assert torch.allclose(resample_weights(t, power=0.0), torch.full((111,), 1 / 111, dtype=torch.float64))
    r = resample_weights(t, power=1.0)  # class-balanced sampling: every class has total probability 1/3
    assert [r[t == c].sum().item() for c in range(3)] == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize('N,tau', [(3, 0.5), (5, 0.1)])
def test_nt_xent_matches_loop(N, tau):
    torch.manual_seed(N)
    z, zt = torch.randn(N, 4), torch.randn(N, 4)
    assert nt_xent(z, zt, tau).item() == pytest.approx(nt_xent_loop(z, zt, tau), rel=1e-5)


def test_mixed_nt_xent_eqs_2_3():
    torch.manual_seed(0)
    z1, z2, zm, zc = (torch.randn(4, 6) for _ in range(4))
    lam, tau = 0.3, 0.5
    total, l_mix, l_cut = mixed_nt_xent(z1, z2, zm, zc, lam, tau)
    e_mix = lam * nt_xent_loop(z1, zm, tau) + (1 - lam) * nt_xent_loop(z2, zm, tau)
    e_cut = lam * nt_xent_loop(z1, zc, tau) + (1 - lam) * nt_xent_loop(z2, zc, tau)
    assert l_mix.item() == pytest.approx(e_mix, rel=1e-5)
    assert l_cut.item() == pytest.approx(e_cut, rel=1e-5)
    assert total.item() == pytest.approx((e_mix + e_cut) / 2, rel=1e-5)


def nt_xent_loop_classes(z, zt, tau, classes):
    """NT-Xent without same-class negatives, one anchor at a time: ``classes[i]`` is the set of classes of
    vector i of cat(z, zt); a negative k is dropped from anchor i's denominator when the sets intersect."""
    u = [F.normalize(v, dim=0) for v in list(z.detach()) + list(zt.detach())]
    N = z.shape[0]
    total = 0.0
    for i in range(2 * N):
        pos = (i + N) % (2 * N)
        num = math.exp(float(u[i] @ u[pos]) / tau)
        den = num + sum(math.exp(float(u[i] @ u[k]) / tau) for k in range(2 * N)
                        if k not in (i, pos) and not classes[i] & classes[k])
        total += -math.log(num / den)
    return total / (2 * N)


def test_nt_xent_without_same_class_negatives_matches_loop():
    torch.manual_seed(3)
    z1, z2, zm, zc = (torch.randn(5, 6) for _ in range(4))
    y1, y2 = torch.tensor([0, 1, 0, 2, 3]), torch.tensor([1, 1, 2, 0, 3])
    lam, tau = 0.3, 0.5
    total, l_mix, l_cut = mixed_nt_xent(z1, z2, zm, zc, lam, tau, labels=(y1, y2))
    a, b = y1.tolist(), y2.tolist()
    mixed = [{p, q} for p, q in zip(a, b)]  # a mixed feature holds both source classes
    c1, c2 = [{p} for p in a] + mixed, [{q} for q in b] + mixed
    e_mix = lam * nt_xent_loop_classes(z1, zm, tau, c1) + (1 - lam) * nt_xent_loop_classes(z2, zm, tau, c2)
    e_cut = lam * nt_xent_loop_classes(z1, zc, tau, c1) + (1 - lam) * nt_xent_loop_classes(z2, zc, tau, c2)
    assert l_mix.item() == pytest.approx(e_mix, rel=1e-5) and l_cut.item() == pytest.approx(e_cut, rel=1e-5)
    assert total.item() == pytest.approx((e_mix + e_cut) / 2, rel=1e-5)
    assert total.item() < mixed_nt_xent(z1, z2, zm, zc, lam, tau)[0].item()  # fewer negatives, smaller loss
    # all classes distinct: nothing is dropped and it is the paper's loss
    assert nt_xent(z1, zm, tau, torch.arange(10)).item() == pytest.approx(nt_xent(z1, zm, tau).item(), rel=1e-6)
    # one class: only the positive is left in each denominator, the loss is 0
    assert nt_xent(z1, zm, tau, torch.zeros(10, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match='labels'):
        nt_xent(z1, zm, tau, torch.zeros(4, dtype=torch.long))


def test_task_exclude_same_class_changes_only_the_clr_term():
    counts, B = [40, 8, 2], 4
    x = torch.randn(4 * B, 3, 16, 16)
    y = torch.tensor([0, 0, 2, 0, 1, 0, 1, 0])
    out = {}
    for excl in (False, True):
        task = GLMCTask(_tiny_backbone(), counts, clr_weight=1.0, clr_exclude_same_class=excl, verbose=False)
        torch.manual_seed(5)
        out[excl] = task(x, y)
    assert out[True]['glmc_ib'].item() == pytest.approx(out[False]['glmc_ib'].item(), rel=1e-6)
    assert out[True]['clr_loss'].item() < out[False]['clr_loss'].item()


def test_negative_cosine_stops_gradient_to_z():
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    loss = negative_cosine(p, z)
    loss.backward()
    assert z.grad is None and p.grad is not None
    assert loss.item() == pytest.approx(-F.cosine_similarity(p, z).mean().item())


def test_cutmix_box_side_and_clipping():
    torch.manual_seed(0)
    for lam in (0.0, 0.19, 0.5, 0.9, 1.0):
        for _ in range(20):
            y1, y2, x1, x2 = cutmix_box(32, 24, lam)
            assert 0 <= y1 <= y2 <= 32 and 0 <= x1 <= x2 <= 24
            assert y2 - y1 <= math.ceil(32 * math.sqrt(1 - lam)) and x2 - x1 <= math.ceil(24 * math.sqrt(1 - lam))
    sides = set()
    for _ in range(200):  # unclipped boxes (centre far from the border) have side ceil(side * sqrt(1 - lam))
        y1, y2, x1, x2 = cutmix_box(32, 32, 0.75)
        if 0 < y1 and y2 < 32:
            sides.add(y2 - y1)
    assert sides == {16}


def test_glmc_mix_global_and_local():
    torch.manual_seed(1)
    a1, a2, b1, b2 = (torch.randn(2, 3, 8, 8) for _ in range(4))
    x_mix, x_cut, (y1, y2, x1, x2) = glmc_mix(a1, a2, b1, b2, 0.3)
    assert torch.allclose(x_mix, 0.3 * a1 + 0.7 * b1, atol=1e-6)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    assert torch.equal(x_cut[..., inside], b2[..., inside]) and torch.equal(x_cut[..., ~inside], a2[..., ~inside])


def _tiny_backbone(num_classes=3, seed=0):
    import timm
    torch.manual_seed(seed)
    return timm.create_model('resnet20_cifar', num_classes=num_classes)


@pytest.mark.parametrize('clr', [None, 'shared', 'own'])
def test_glmc_loss_by_hand(clr):
    counts = [40, 8, 2]
    task = GLMCTask(_tiny_backbone(), counts, contrast_weight=4.0, clr_weight=0.7 if clr else 0.0, clr_tau=0.5,
                    clr_own_projector=clr == 'own', num_epochs=10, verbose=False)
    task.set_epoch(4, 10)
    B = 4
    x = torch.randn(4 * B, 3, 16, 16)
    y_a, y_b = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0])
    torch.manual_seed(11)
    out = task(x, torch.cat([y_a, y_b]))

    # by hand: same RNG draws (lam, then the box), the same network calls
    torch.manual_seed(11)
    lam = float(torch.rand(()))
    a1, a2, b1, b2 = x.chunk(4)
    x_mix, x_cut, _ = glmc_mix(a1, a2, b1, b2, lam)
    model = task.get_trainable_module()
    f = [model.features(g) for g in ((x_mix, x_cut, a1, b1) if clr else (x_mix, x_cut))]
    n = torch.tensor(counts, dtype=torch.float64)
    w = (n ** -1.2 / (n ** -1.2).sum() * 3).float()
    t_mix = lam * F.one_hot(y_a, 3).float() + (1 - lam) * F.one_hot(y_b, 3).float()
    t_w = lam * w[y_a, None] * F.one_hot(y_a, 3) + (1 - lam) * w[y_b, None] * F.one_hot(y_b, 3)
    a = 1 - (4 / 10) ** 2
    ce = F.cross_entropy  # probability targets: -sum t log softmax, batch mean (t_w not renormalised)
    l_ib = ce(model.fc(f[0]), t_mix) + ce(model.fc(f[1]), t_mix)
    l_cb = ce(model.backbone.get_classifier()(f[0]), t_w) + ce(model.backbone.get_classifier()(f[1]), t_w)
    z = [model.projector(v) for v in f]
    p = [model.predictor(v) for v in z]
    cons = -F.cosine_similarity(p[0], z[1]).mean() - F.cosine_similarity(p[1], z[0]).mean()
    expect = a * l_ib + (1 - a) * l_cb + 4.0 * cons
    if clr:  # the NT-Xent on GLMC's projection z, or on its own projection h (ours)
        h = [model.clr_projector(v) for v in f] if clr == 'own' else z
        assert (model.clr_projector is not None) == (clr == 'own')
        clr_l = 0.5 * (lam * nt_xent_loop(h[2], h[0], 0.5) + (1 - lam) * nt_xent_loop(h[3], h[0], 0.5)
                       + lam * nt_xent_loop(h[2], h[1], 0.5) + (1 - lam) * nt_xent_loop(h[3], h[1], 0.5))
        expect = expect + 0.7 * clr_l
        assert out['clr_loss'].item() == pytest.approx(clr_l, rel=1e-4)
    assert out['loss'].item() == pytest.approx(expect.item(), rel=1e-4)
    assert out['glmc_a'].item() == pytest.approx(a)
    assert out['output'].shape == (B, 3)
    out['loss'].backward()
    assert all(q.grad is not None for q in model.parameters())  # every head is used (DDP-safe)


def test_eval_model_is_plain_timm_and_task_state():
    import timm
    task = GLMCTask(_tiny_backbone(), [5, 3, 1], verbose=False)
    ev_model = task.get_eval_model()
    fresh = timm.create_model('resnet20_cifar', num_classes=3)
    fresh.load_state_dict(ev_model.state_dict())  # best.safetensors is a plain timm checkpoint
    x = torch.randn(2, 3, 16, 16)
    task.eval()
    fresh.eval()
    assert torch.allclose(fresh(x), task.get_trainable_module()(x))
    state = task.get_task_state()
    assert set(state) == {'fc', 'projector', 'predictor'}
    other = GLMCTask(_tiny_backbone(seed=1), [5, 3, 1], verbose=False)
    other.load_task_state(state)
    assert torch.equal(other.get_trainable_module().fc.weight, task.get_trainable_module().fc.weight)
    task.setup_ema(decay=0.9)
    assert type(task.get_eval_model(ema=True)).__name__ == type(ev_model).__name__
    own = GLMCTask(_tiny_backbone(), [5, 3, 1], clr_weight=1.0, clr_own_projector=True, verbose=False)
    assert set(own.get_task_state()) == {'fc', 'projector', 'predictor', 'clr_projector'}
    with pytest.raises(RuntimeError, match='clr_projector'):  # a state with a head this model lacks
        other.load_task_state(own.get_task_state())
    with pytest.raises(RuntimeError, match='clr_projector'):
        own.load_task_state(state)
    assert {'many', 'medium', 'few'} <= set(type(task.create_evaluator()).metric_names)


class _Toy:
    def __init__(self, targets):
        self.targets = list(targets)
        self.transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return np.full((3, 2, 2), i, dtype=np.uint8), self.targets[i]


def test_dataset_and_collate_layout():
    base = _Toy([0] * 30 + [1] * 3)
    ds = GLMCDataset(base, resample_power=0.0)
    calls = []

    def transform(img):  # two independent augmentations: record the calls
        calls.append(int(img[0, 0, 0]))
        return img
    ds.transform = transform
    assert base.transform is None and ds.targets == base.targets
    torch.manual_seed(0)
    items = [ds[i] for i in (0, 31, 5)]
    assert all(len(v) == 4 for v, _ in items) and len(calls) == 12
    x, y = glmc_collate(items)
    B = 3
    assert x.dtype == torch.uint8 and x.shape == (4 * B, 3, 2, 2) and y.shape == (2 * B,)
    assert x[:B, 0, 0, 0].tolist() == [0, 31, 5] and x[B:2 * B, 0, 0, 0].tolist() == [0, 31, 5]
    js = [int(v[2][0, 0, 0]) for v, _ in items]
    assert x[2 * B:3 * B, 0, 0, 0].tolist() == js and x[3 * B:, 0, 0, 0].tolist() == js
    assert y[:B].tolist() == [0, 1, 0] and y[B:].tolist() == [base.targets[j] for j in js]


def test_resampled_batch_follows_class_weights_and_seed():
    base = _Toy([0] * 90 + [1] * 10)
    ds = GLMCDataset(base, resample_power=1.0)  # class-balanced re-sampling
    torch.manual_seed(0)
    draws = torch.tensor([base.targets[ds.draw()] for _ in range(2000)])
    assert abs(draws.float().mean().item() - 0.5) < 0.05
    torch.manual_seed(0)
    again = torch.tensor([base.targets[ds.draw()] for _ in range(2000)])
    assert torch.equal(draws, again)


def test_registry_spec_and_arg_checks():
    from timm_mixplug.train.specs.base import DataInfo, get_task_spec
    spec = get_task_spec('glmc')
    assert spec.mixes_itself
    p = argparse.ArgumentParser()
    spec.add_args(p)
    args = p.parse_args(['--glmc-clr', '--glmc-clr-tau', '0.2'])
    args.mix = 'none'
    spec.check_args(args)
    args.epochs = 20
    task = spec.create_task(args, _tiny_backbone(), None, None, DataInfo(num_classes=3, class_counts=[9, 4, 1]),
                            torch.device('cpu'))
    assert isinstance(task, GLMCTask) and task.clr_weight == 1.0 and task.clr_tau == 0.2 and task.num_epochs == 20
    assert spec.create_collate(args, None, None) is glmc_collate
    assert isinstance(spec.wrap_dataset(_Toy([0, 1, 2]), args, None, True), GLMCDataset)
    assert task.get_trainable_module().clr_projector is None
    args.glmc_clr_own_projector = True
    task = spec.create_task(args, _tiny_backbone(), None, None, DataInfo(num_classes=3, class_counts=[9, 4, 1]),
                            torch.device('cpu'))
    assert task.get_trainable_module().clr_projector is not None
    args.glmc_clr = False
    assert 'glmc_clr_own_projector' in spec.unused_flags(args)
    args.mix = 'mixup'
    with pytest.raises(ValueError):
        spec.check_args(args)


def test_own_clr_projector_needs_the_clr_term():
    with pytest.raises(ValueError, match='clr_weight'):
        GLMCTask(_tiny_backbone(), [5, 3, 1], clr_own_projector=True, verbose=False)
    with pytest.raises(ValueError, match='own_clr_projector'):
        GLMCTask(GLMCModel(_tiny_backbone()), [5, 3, 1], clr_weight=1.0, clr_own_projector=True, verbose=False)


def test_sample_lambda_deterministic_and_in_range():
    torch.manual_seed(3)
    a = [sample_lambda(1.0), sample_lambda(0.4)]
    torch.manual_seed(3)
    assert a == [sample_lambda(1.0), sample_lambda(0.4)] and all(0 <= v <= 1 for v in a)


# ---- few-step train.py runs (tiny generated data, CPU) ----

@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'glmc_imgs', val_per_class=3)


def _args(data, out, exp, *extra):
    return tiny_train_args(data, out, exp, '--task', 'glmc', *extra, epochs=2, lr=0.01, log_interval=10)


def test_train_py_glmc_clr_resume_and_plain_timm_weights(tiny_data, tmp_path):
    import timm
    from safetensors.torch import load_file
    train = load_train_script('mixplug_train_script_glmc')
    common = ['--glmc-clr', '--glmc-clr-own-projector', '--model-ema', '--model-ema-decay', '0.9', '--glmc-resample-power', '0.5',
              '--imb-factor', '2']  # 4 classes x 8 images -> 8, 6, 5, 4
    assert train.main(_args(tiny_data, tmp_path, 'full', *common)) == 0
    assert train.main(_args(tiny_data, tmp_path, 'part', *common, '--max-epochs-this-run', '1')) == 0
    assert train.main(_args(tiny_data, tmp_path, 'part', *common, '--resume', str(tmp_path / 'part'))) == 0
    full, part = read_rows(tmp_path / 'full' / 'summary.csv'), read_rows(tmp_path / 'part' / 'summary.csv')
    assert len(full) == len(part) == 2
    for key in ('train_loss', 'train_glmc_consistency', 'train_clr_loss', 'eval_top1', 'eval_few',
                'ema_eval_top1'):
        assert key in full[0]
        assert [r[key] for r in full] == [r[key] for r in part], key
    assert [float(r['train_glmc_a']) for r in full] == pytest.approx([1.0, 0.75])  # a = 1 - (epoch / 2)^2
    model = timm.create_model('resnet20_cifar', num_classes=4)  # the eval model is the plain timm model (fc_cb)
    model.load_state_dict(load_file(str(tmp_path / 'full' / 'best.safetensors')))


def test_train_py_glmc_plain_loader_and_bad_mix(tiny_data, tmp_path, capsys):
    train = load_train_script('mixplug_train_script_glmc')
    assert train.main(_args(tiny_data, tmp_path, 'np', '--no-prefetcher', '--epochs', '1')) == 0
    assert len(read_rows(tmp_path / 'np' / 'summary.csv')) == 1
    capsys.readouterr()
    assert train.main(_args(tiny_data, tmp_path, 'bad', '--mix', 'mixup')) == 2
    assert 'GLMC mixes itself' in capsys.readouterr().err


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not available')
def test_train_py_glmc_two_process_gloo(tiny_data, tmp_path):
    proc = run_torchrun(_args(tiny_data, tmp_path, 'ddp', '-b', '4', '--epochs', '1', '--glmc-clr'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_rows(tmp_path / 'ddp' / 'summary.csv')
    assert len(rows) == 1 and rows[0]['eval_top1'] != ''


def test_clip_parameters_exclude_both_heads():
    task = GLMCTask(_tiny_backbone(), [5, 3, 1], verbose=False)
    m = task.get_trainable_module()
    all_p = list(task.get_clip_parameters())
    kept = {id(p) for p in task.get_clip_parameters(exclude_head=True)}
    assert len(all_p) == len(list(m.parameters()))
    assert id(m.fc.weight) not in kept and id(m.backbone.get_classifier().weight) not in kept
    assert id(m.projector.weight) in kept and id(m.predictor.weight) in kept


def test_autocast_bfloat16_step():
    task = GLMCTask(_tiny_backbone(), [5, 3, 1], clr_weight=1.0, verbose=False)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 3, (8,))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = task(x, y)
    assert out['loss'].dtype == torch.float32 and torch.isfinite(out['loss'])
    out['loss'].backward()
