"""Knowledge distillation through timm's tasks (Hinton et al. 2015): the loss against a hand formula, a frozen
teacher in eval mode that sees the student's (BC+ zero-mean) input, and train.py's --kd-* flags end to end."""
import logging
import os
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import ROOT, TRAIN_PY, load_train_script, make_tiny_images, one_error_line, read_rows, tiny_train_args
from timm_mixplug.task.distill import create_distillation_task

train_script = load_train_script('mixplug_train_distill')


def _models(seed=0):
    torch.manual_seed(seed)
    return timm.create_model('resnet20_cifar', num_classes=5), timm.create_model('resnet20_cifar', num_classes=5)


def _hand_kd(s_logits, t_logits, T):
    """T^2 * mean over the batch of sum_c p_t(c) (log p_t(c) - log p_s(c)), p = softmax(logits / T)."""
    p_t = torch.softmax(t_logits / T, 1)
    return (p_t * (p_t.log() - torch.log_softmax(s_logits / T, 1))).sum(1).mean() * T * T


@pytest.mark.parametrize('task_w,distill_w,want', [(None, None, (1.0, 1.0)), (0.3, None, (0.3, 0.7)),
                                                    (None, 2.0, (1.0, 2.0)), (0.5, 0.25, (0.5, 0.25))])
def test_logit_distillation_loss_is_the_hand_formula(task_w, distill_w, want):
    student, teacher = _models()
    task = create_distillation_task(student, teacher, 'logit', criterion=torch.nn.CrossEntropyLoss(),
                                    task_loss_weight=task_w, distill_loss_weight=distill_w, temperature=3.0)
    task.train()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    out = task(x, y)
    student.train()
    with torch.no_grad():
        s = student(x)
        teacher.eval()
        t = teacher(x)
    hand = want[0] * F.cross_entropy(s, y) + want[1] * _hand_kd(s, t, 3.0)
    assert out['kd_loss'].item() == pytest.approx(_hand_kd(s, t, 3.0).item(), rel=1e-5)
    assert out['loss'].item() == pytest.approx(hand.item(), rel=1e-5)


def test_teacher_is_frozen_in_eval_mode_and_gets_no_gradient():
    student, teacher = _models()
    task = create_distillation_task(student, teacher, 'logit', criterion=torch.nn.CrossEntropyLoss())
    task.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))['loss'].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    # eval mode: BatchNorm running statistics of the teacher did not move
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def _seen_by_teacher(teacher):
    seen = []
    teacher.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    return seen


def test_teacher_sees_the_students_zero_mean_input():
    from timm_mixplug.data.mixing import zero_mean
    student, teacher = _models()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x = zero_mean(torch.randn(4, 3, 32, 32) + 0.5)
    # the same normalisation: the teacher's input is the student's (the mixed, zero-mean batch itself)
    teacher.pretrained_cfg = dict(teacher.pretrained_cfg, mean=mean, std=std)
    task = create_distillation_task(student, teacher, 'logit', mean=mean, std=std, zero_mean_input=True)
    seen = _seen_by_teacher(teacher)
    task(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(seen[0], x)
    # another normalisation: renormalised, then zero-mean again (BC+)
    teacher.pretrained_cfg = dict(teacher.pretrained_cfg, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    task = create_distillation_task(student, teacher, 'logit', mean=mean, std=std, zero_mean_input=True)
    task(x, torch.tensor([0, 1, 2, 3]))
    got = seen[-1]
    assert got.flatten(1).mean(1).abs().max() < 1e-5
    s_mean, s_std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    renorm = (x * s_std + s_mean - 0.5) / 0.25
    assert torch.allclose(got, renorm - renorm.flatten(1).mean(1).view(-1, 1, 1, 1), atol=1e-5)
    # without zero-mean input timm's renormalisation is kept as it is
    task = create_distillation_task(student, teacher, 'logit', mean=mean, std=std, zero_mean_input=False)
    task(x, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(seen[-1], renorm, atol=1e-5)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'kd_imgs', val_per_class=2)


@pytest.fixture(scope='module')
def teacher_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('teacher')
    assert train_script.main(tiny_train_args(data_dir, out, 't', '--mix', 'bcplus', '-b', '16')) == 0
    return out / 't'


def test_train_py_distils_from_a_local_teacher_with_bcplus(data_dir, teacher_run, tmp_path):
    args = tiny_train_args(data_dir, tmp_path, 's', '--mix', 'bcplus', '-b', '16', '--kd-model-name',
                           'resnet20_cifar', '--kd-pretrained-path', str(teacher_run / 'last.safetensors'),
                           '--kd-temperature', '2', '--task-loss-weight', '0.5')
    assert train_script.main(args) == 0
    row = read_rows(tmp_path / 's' / 'summary.csv')[0]
    assert float(row['train_kd_loss']) > 0 and 'train_task_loss' in row
    # the student's weights are plain timm weights of --model (the teacher is not saved)
    from timm_mixplug.utils.checkpoint import load_weights
    assert set(load_weights(str(tmp_path / 's' / 'last.safetensors'))) == set(
        timm.create_model('resnet20_cifar', num_classes=4).state_dict())


@pytest.mark.parametrize('extra,expect', [
    (['--task', 'dml', '--kd-model-name', 'resnet20_cifar'],
     '--kd-model-name is read only with --task classification'),
    (['--kd-temperature', '2'], '--kd-temperature is not read without --kd-model-name'),
    (['--kd-model-name', 'resnet20_cifar', '--kd-student-feature-dim', '8'],
     '--kd-student-feature-dim is not read with --kd-distill-type logit'),
    (['--kd-model-name', 'no_such_teacher'], "unknown --kd-model-name 'no_such_teacher'"),
])
def test_kd_flags_that_are_not_read_are_refused(data_dir, tmp_path, capsys, extra, expect):
    assert train_script.main(tiny_train_args(data_dir, tmp_path / 'out', 'x', *extra)) == 2
    line = one_error_line(capsys)
    assert expect in line, line
    assert not (tmp_path / 'out').exists()


def test_teacher_with_another_class_count_names_the_layer(data_dir, teacher_run, tmp_path, capsys):
    import safetensors.torch
    sd = safetensors.torch.load_file(str(teacher_run / 'last.safetensors'))
    sd = {k: (v[:3] if k.startswith('fc.') else v) for k, v in sd.items()}
    safetensors.torch.save_file(sd, str(tmp_path / 'three.safetensors'))
    args = tiny_train_args(data_dir, tmp_path / 'out', 'x', '--kd-model-name', 'resnet20_cifar',
                           '--kd-pretrained-path', str(tmp_path / 'three.safetensors'))
    assert train_script.main(args) == 2
    line = one_error_line(capsys)
    assert 'fc.weight is (3, 64) in the checkpoint, (4, 64) in the model' in line and '--kd-pretrained-path' in line


def test_teacher_without_cached_weights_is_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), TORCH_HOME=str(tmp_path / 'th'),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, TRAIN_PY, '--dataset', 'mixplug/digits', '--model', 'resnet20_cifar',
                           '--kd-model-name', 'resnet18', '--epochs', '1', '--warmup-epochs', '0', '--workers', '0',
                           '--output', str(tmp_path / 'out')], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith('train.py: error: --kd-model-name: the weights of --kd-model-name resnet18 (timm/')
    assert '--kd-pretrained-path' in lines[0]


# ---- the other upstream flags: --save-images, --drop-connect, --synchronize-step, refused ones ----

def test_save_images_writes_a_png_grid_with_the_mixed_pairs(data_dir, tmp_path):
    from PIL import Image
    args = tiny_train_args(data_dir, tmp_path, 'img', '--mix', 'bcplus', '-b', '16', '--epochs', '2',
                           '--save-images')
    assert train_script.main(args) == 0
    for epoch in (0, 1):
        path = tmp_path / 'img' / f'train-batch-{epoch}.png'
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == 'PNG'
            # 16 tiles of 16 px enlarged 6x to 96 px, in 8 columns and 2 rows, a 2-line label strip under each
            assert im.size == (8 * (96 + 2), 2 * (96 + 26 + 2)), im.size


def test_tile_labels_name_both_classes_and_the_ratio():
    from timm_mixplug.utils.batch_images import tile_labels
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.05, 0.9, 0.05]])
    assert tile_labels(soft, ['cat', 'dog', 'airplane_long_name'], 3) == [
        'cat 0.70\ndog 0.30', 'airplane_', 'dog']  # the last: label smoothing only
    assert tile_labels(torch.tensor([2, 0]), ['a', 'b', 'c'], 2) == ['c', 'a']
    assert tile_labels(torch.tensor([2, 0]), ['a', 'b', 'c'], 4) == ['c', 'a', '', '']  # GLMC: 2 batches, 1 target


def test_drop_connect_is_drop_path():
    from timm_mixplug.errors import UsageError
    from timm_mixplug.train.config import parse_args
    args = parse_args(['--drop-connect', '0.2'])
    assert args.drop_path == 0.2 and args.drop_connect is None
    with pytest.raises(UsageError, match='--drop-connect 0.2 is the old name of --drop-path, which is 0.1'):
        parse_args(['--drop-connect', '0.2', '--drop-path', '0.1'])


def test_synchronize_step_synchronizes_after_every_update(data_dir, tmp_path, monkeypatch):
    from timm_mixplug.train import loop
    calls = []
    monkeypatch.setattr(loop, 'synchronize', lambda device: calls.append(device.type))
    assert train_script.main(tiny_train_args(data_dir, tmp_path, 's', '--synchronize-step')) == 0
    assert calls == ['cpu'] * 4  # 32 images, batch 8: 4 updates


@pytest.mark.parametrize('argv,expect', [
    (['--torchscript'], '--torchscript True: not supported with timm_mixplug (TorchScript is deprecated'),
    (['--fuser', 'te'], '--fuser te: not supported'),
    (['--tta', '2'], '--tta 2: not supported with timm_mixplug (upstream'),
    (['--train-img-sizes', '32', '64'], '--train-img-sizes [32, 64]: not supported'),
    (['--train-batches-per-epoch', '10'], '--train-batches-per-epoch 10: not supported'),
    (['--naflex-loader'], '--naflex-loader True: not supported'),
])
def test_refused_upstream_flags_are_one_line(data_dir, tmp_path, capsys, argv, expect):
    assert train_script.main(tiny_train_args(data_dir, tmp_path / 'out', 'x', *argv)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f'train.py: error: {expect}') and line.endswith('; drop it'), line
    assert not (tmp_path / 'out').exists()


def test_docs_parity_table_is_the_flag_table():
    from timm_mixplug.train.flags import parity_table
    text = open(os.path.join(ROOT, 'docs', 'train.md')).read()
    begin, end = '<!-- parity table: python -m timm_mixplug.train.flags -->\n', '<!-- end of parity table -->'
    assert begin in text and end in text
    assert text.split(begin)[1].split(end)[0] == parity_table()


def test_save_images_with_a_task_that_feeds_two_batches(data_dir, tmp_path, caplog):
    """GLMC's loader gives more images than targets (the batch and its re-sampled twin): the images beyond the
    targets get unlabelled tiles instead of stopping the run. GLMC mixes inside the task: one line says that
    the PNG shows the batch before that."""
    from PIL import Image
    args = tiny_train_args(data_dir, tmp_path, 'g', '--task', 'glmc', '--imb-factor', '2', '--save-images')
    with caplog.at_level(logging.INFO, logger='train'):
        assert train_script.main(args) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith('--save-images:')]
    assert said == ['--save-images: --task glmc mixes or augments inside the task, so the PNGs show each epoch\'s '
                    'first batch as the task receives it, before that'], said
    with Image.open(tmp_path / 'g' / 'train-batch-0.png') as im:
        w, h = im.size
    assert w == 8 * (96 + 2) and h % (96 + 14 + 2) == 0 and h >= 2 * (96 + 14 + 2), (w, h)
