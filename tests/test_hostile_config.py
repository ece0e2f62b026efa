"""Hostile configurations (issue 30, part B): several -c files, duplicate and empty YAML keys, settings that cannot
mean anything, a run folder that must describe its weights, and a new user's first hour (short runs with timm's
default warm-up, --pretrained without the network, torch/cifar10 without its files)."""
import os
import time

import numpy as np
import pytest
from conftest import make_tiny_images, tiny_train_args

from timm_mixplug.errors import UsageError
from timm_mixplug.train import engine
from timm_mixplug.train.config import parse_args


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: '), err
    return err[0]


# ---- several -c files ---------------------------------------------------------------------------------------------

def test_several_configs_apply_in_order_and_the_command_line_wins(tmp_path):
    a = write(tmp_path, 'a.yaml', 'model: resnet20_cifar\nepochs: 7\nlr: 0.3\nwarmup_epochs: 0\n')
    b = write(tmp_path, 'b.yaml', 'epochs: 9\nbatch_size: 32\n')
    args = parse_args(['-c', a, '-c', b])
    assert (args.model, args.epochs, args.lr, args.batch_size) == ('resnet20_cifar', 9, 0.3, 32)  # b over a
    args = parse_args(['-c', b, '--config', a])
    assert (args.epochs, args.batch_size) == (7, 32)  # the order given decides, not the file names
    args = parse_args(['-c', a, f'--config={b}', '--epochs', '11', '-b', '16'])
    assert (args.epochs, args.batch_size, args.lr) == (11, 16, 0.3)


def test_an_error_in_the_second_config_names_that_file(tmp_path):
    a = write(tmp_path, 'a.yaml', 'epochs: 7\n')
    b = write(tmp_path, 'b.yaml', 'epochs: seven\n')
    with pytest.raises(UsageError, match=r'config .*b\.yaml: epochs expects int'):
        parse_args(['-c', a, '-c', b])
    with pytest.raises(UsageError, match=r"unknown option 'epoch' in config .*b\.yaml; did you mean 'epochs'"):
        parse_args(['-c', a, '-c', write(tmp_path, 'b.yaml', 'epoch: 3\n')])


# ---- a key given twice --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, match', [
    ('epochs: 3\nlr: 0.1\nepochs: 4\n', r"key 'epochs' is given twice \(lines 1 and 3\); keep one"),
    ('batch-size: 8\nbatch_size: 16\n', r"'batch-size' and 'batch_size' are the same option; keep one"),
    ('model_kwargs: {a: 1, a: 2}\n', r"key 'a' is given twice"),
])
def test_a_key_given_twice_is_refused_naming_key_and_file(tmp_path, text, match):
    path = write(tmp_path, 'dup.yaml', text)
    with pytest.raises(UsageError, match=match) as e:
        parse_args(['-c', path])
    assert path in str(e.value)


def test_yaml_merge_keys_still_override_what_they_merge(tmp_path):
    """`<<: *base` then `lr:` is YAML's own override, not a duplicate."""
    from timm_mixplug.train.yaml_config import load_yaml_config
    text = 'x: &b {lr: 0.1, epochs: 3}\ny:\n  <<: *b\n  lr: 0.2\n'
    path = write(tmp_path, 'merge.yaml', text)
    assert load_yaml_config(path)['y'] == {'lr': 0.2, 'epochs': 3}


def test_main_prints_one_line_exit_2_for_a_duplicate_key(tmp_path, capsys):
    path = write(tmp_path, 'dup.yaml', 'epochs: 3\nepochs: 4\n')
    out = tmp_path / 'out'
    assert engine.main(['-c', path, '--dataset', 'mixplug/digits', '--output', str(out)]) == 2
    assert "key 'epochs' is given twice" in one_error_line(capsys)
    assert not out.exists()


# ---- a key left empty ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, match', [
    ('batch_size:\n', r'batch_size is empty; give it an integer or drop the key \(its default is 128\)'),
    ('epochs:\n', r'epochs is empty; give it an integer or drop the key \(its default is 300\)'),
    ('amp:\n', 'amp is empty; give it true or false'),
    ('sched:\n', "sched is empty; give it a value or drop the key \\(its default is 'cosine'\\)"),
    ('task:\n', 'task is empty; give it one of aux, classification, '),
    ('scale: [0.08, null]\n', 'scale has an empty item'),
])
def test_an_empty_value_is_checked_like_every_other_value(tmp_path, text, match):
    with pytest.raises(UsageError, match=match):
        parse_args(['-c', write(tmp_path, 'empty.yaml', text)])


def test_an_empty_value_is_the_default_where_the_default_is_none(tmp_path):
    """timm's args.yaml writes `lr: null`: an option whose default is None takes it."""
    args = parse_args(['-c', write(tmp_path, 'ok.yaml', 'lr:\nsmoothing:\nepochs: 10\n')])
    assert args.epochs == 10 and args.lr is None and args.smoothing == 0.1  # resolved as without the key


def test_main_prints_one_line_for_an_empty_batch_size(tmp_path, capsys):
    out = tmp_path / 'out'
    path = write(tmp_path, 'empty.yaml', 'batch_size:\n')
    assert engine.main(['-c', path, '--dataset', 'mixplug/digits', '--output', str(out)]) == 2
    line = one_error_line(capsys)
    assert 'batch_size is empty' in line and path in line
    assert not out.exists()


# ---- first hour: short runs and timm's default warm-up -------------------------------------------------------------

@pytest.mark.parametrize('epochs, warmup', [(1, 0), (2, 1), (5, 2), (6, 5)])
def test_the_default_warmup_is_shortened_to_fit_a_short_run(epochs, warmup):
    args = parse_args(['--epochs', str(epochs)])
    assert args.warmup_epochs == warmup
    if epochs <= 5:
        assert args.notes == [f'--epochs {epochs} is not longer than the default 5 warm-up epochs: warm-up '
                              + ('off' if not warmup else f'shortened to {warmup} epoch' + ('s' if warmup > 1 else ''))
                              + ' (set --warmup-epochs to choose)']
    else:
        assert args.notes == []


@pytest.mark.parametrize('argv', [
    ['--epochs', '3', '--warmup-epochs', '5'],
    ['--epochs', '3', '--warmup-epochs=3'],
    ['-c', 'WARM', '--epochs', '2'],
])
def test_a_warmup_the_user_set_that_does_not_fit_is_refused(tmp_path, argv):
    argv = [write(tmp_path, 'warm.yaml', 'warmup_epochs: 5\n') if a == 'WARM' else a for a in argv]
    with pytest.raises(UsageError, match=r'--warmup-epochs \d is not shorter than --epochs \d'):
        parse_args(argv)


def test_a_one_epoch_run_trains_and_says_the_warmup_was_shortened(tmp_path, caplog):
    out = tmp_path / 'out'
    assert engine.main(['--dataset', 'mixplug/digits', '--model', 'resnet20_cifar', '--img-size', '8',
                        '--epochs', '1', '-b', '128', '--workers', '0', '--output', str(out),
                        '--experiment', 'e']) == 0
    assert '--epochs 1 is not longer than the default 5 warm-up epochs: warm-up off' in caplog.text
    assert 'warmup_epochs: 0' in (out / 'e' / 'args.yaml').read_text()  # the run folder describes the run


# ---- settings that cannot mean anything ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    return make_tiny_images(tmp_path_factory, 'hostile_imgs', val_per_class=2, superclass_map=True)


def test_aux_superclass_head_with_a_one_superclass_map_is_refused(image_dir, tmp_path, capsys):
    one = write(tmp_path, 'one.yaml', ''.join(f'class_{c}: everything\n' for c in range(4)))
    out = tmp_path / 'out'
    argv = tiny_train_args(image_dir, out, 'aux', '--task', 'aux', '--aux-tasks', 'superclass',
                           '--aux-hierarchy', one)
    assert engine.main(argv) == 2
    line = one_error_line(capsys)
    assert 'needs classes in 2 or more superclasses' in line and 'puts all 4 classes in one' in line
    assert '--aux-hierarchy' in line and not out.exists()


def test_aux_task_refuses_a_one_superclass_hierarchy_as_a_library_piece():
    import timm
    from timm_mixplug import load_hierarchy
    from timm_mixplug.task.aux import AuxTask
    model = timm.create_model('resnet20_cifar', num_classes=4)
    with pytest.raises(ValueError, match='2 or more superclasses'):
        AuxTask(model, 'superclass', 4, hierarchy=load_hierarchy([0, 0, 0, 0], num_classes=4))
    AuxTask(model, 'superclass', 4, hierarchy=load_hierarchy([0, 0, 1, 1], num_classes=4))  # two: defined


@pytest.mark.parametrize('counts, metric, match', [
    ([180, 150, 120, 90], 'few', r'no class has 20 or fewer training images \(they have 90 to 180\).*'
                                 r'use one of top1, many, medium$'),
    ([500, 50, 10], 'medium', None),
    ([15, 12, 3], 'many', r'no class has more than 100 training images.*use one of top1, few$'),
    ([60, 40, 30], 'medium', None),
    ([60, 40, 30], 'top1', None),
])
def test_eval_metric_on_an_empty_shot_group_is_refused(counts, metric, match):
    from timm_mixplug.train.sense_checks import check_eval_metric_group
    if match is None:
        check_eval_metric_group(metric, counts)
    else:
        with pytest.raises(UsageError, match='--eval-metric ' + metric + ': ' + match):
            check_eval_metric_group(metric, counts)


def test_eval_metric_on_a_shot_group_absent_from_validation_is_refused():
    from timm_mixplug.train.sense_checks import check_eval_metric_group

    class Val:
        targets = [0, 0, 1, 1]  # no image of class 2, the only few-shot class
    with pytest.raises(UsageError, match='the validation split holds no image of the 1 few-shot class,'):
        check_eval_metric_group('few', [500, 50, 10], Val())
    Val.targets = [0, 2]
    check_eval_metric_group('few', [500, 50, 10], Val())


def test_train_py_refuses_eval_metric_few_when_no_class_is_few_shot(tmp_path, capsys):
    """--imb-factor 2 on the digits keeps 90..180 images per class: no few-shot class, NaN at every epoch."""
    out = tmp_path / 'out'
    assert engine.main(['--dataset', 'mixplug/digits', '--model', 'resnet20_cifar', '--img-size', '8',
                        '--imb-factor', '2', '--eval-metric', 'few', '--epochs', '1', '--workers', '0',
                        '--output', str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith('train.py: error: --eval-metric few: no class has 20 or fewer training images')
    assert not out.exists()


def test_pad_crop_fits_a_larger_image_as_evaluation_does():
    from PIL import Image
    from torchvision import transforms as T
    from timm_mixplug.data.pad_crop import PadCrop
    from timm_mixplug.train.sense_checks import eval_geometry
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 48, 3), dtype=np.uint8))
    fit = eval_geometry(dict(input_size=(3, 16, 16), crop_pct=1.0, crop_mode='center', interpolation='bilinear'))
    crop = PadCrop(0, (16, 16), fit=fit)  # no padding: the crop is the fitted image itself
    assert np.array_equal(np.asarray(crop(img)), np.asarray(T.Compose([T.Resize(16), T.CenterCrop(16)])(img)))
    assert crop.first_fitted == (48, 40)
    small = Image.fromarray(np.full((16, 16, 3), 7, np.uint8))
    crop = PadCrop(4, (16, 16), fill=(0, 0, 0), fit=fit)
    out = np.asarray(crop(small))
    assert out.shape == (16, 16, 3) and crop.first_fitted is None  # an image of the input size is not resized
    assert set(np.unique(out)) <= {0, 7}  # shifted by up to 4 pixels, padded with the fill


def test_train_py_pad_crop_on_larger_images_says_it_fits_them(tmp_path, caplog):
    from timm_mixplug.data.datasets import make_image_folder
    data = make_image_folder(str(tmp_path / 'big'), num_classes=2, per_class=8, val_per_class=2, size=32)
    out = tmp_path / 'out'
    argv = tiny_train_args(data, out, 'pc', '--pad-crop', '2')  # --img-size 16 on 32x32 images
    assert engine.main(argv) == 0
    assert ('--pad-crop: the training images (the first is 32x32) are larger than the input size 16x16; each larger '
            'image is first resized and centre-cropped as evaluation does (Resize(16) + CenterCrop((16, 16)))'
            in caplog.text)


# ---- a run folder that describes its weights ----------------------------------------------------------------------

def _eval_top1(caplog) -> float:
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Eval: ')][-1]
    return float(line.split('top1: ')[1].split()[0])


def _without_experiment(argv):
    i = argv.index('--experiment')
    return argv[:i] + argv[i + 2:]


def test_an_ema_run_continued_without_model_ema_keeps_its_ema(image_dir, tmp_path, caplog):
    from conftest import read_rows
    out = tmp_path / 'out'
    first = tiny_train_args(image_dir, out, 'ema', '--model-ema', '--model-ema-decay', '0.5')
    first[first.index('--epochs') + 1] = '2'
    assert engine.main(first + ['--max-epochs-this-run', '1']) == 0
    run = out / 'ema'
    ema_before = (run / 'last-ema.safetensors').read_bytes()
    caplog.clear()
    resumed = _without_experiment([a for a in first if a not in ('--model-ema',)])
    i = resumed.index('--model-ema-decay')
    resumed = resumed[:i] + resumed[i + 2:]  # neither --model-ema nor its decay: the run's are kept
    assert engine.main(resumed + ['--resume', str(run)]) == 0
    assert '--model-ema stays on as in the run (decay 0.5)' in caplog.text
    assert (run / 'last-ema.safetensors').read_bytes() != ema_before  # the EMA went on with the weights
    rows = read_rows(run / 'summary.csv')
    assert [r['epoch'] for r in rows] == ['0', '1'] and rows[1]['ema_eval_top1']
    text = (run / 'args.yaml').read_text()
    assert 'model_ema: true' in text and 'model_ema_decay: 0.5' in text


def test_an_ema_run_continued_into_a_new_folder_follows_the_command_line(image_dir, tmp_path, caplog):
    out = tmp_path / 'out'
    first = tiny_train_args(image_dir, out, 'ema', '--model-ema')
    first[first.index('--epochs') + 1] = '2'
    assert engine.main(first + ['--max-epochs-this-run', '1']) == 0
    caplog.clear()
    again = [a for a in first if a != '--model-ema']
    again[again.index('--experiment') + 1] = 'plain'
    assert engine.main(again + ['--resume', str(out / 'ema')]) == 0
    assert 'stays on' not in caplog.text
    assert not (out / 'plain' / 'last-ema.safetensors').exists() and (out / 'plain' / 'last.safetensors').exists()


def test_validate_evaluates_a_weights_file_of_a_run_with_the_runs_settings(image_dir, tmp_path, caplog):
    import torch
    from conftest import read_rows
    from safetensors.torch import load_file, save_file
    out = tmp_path / 'out'
    assert engine.main(tiny_train_args(image_dir, out, 'run')) == 0
    run = out / 'run'
    logged = float(read_rows(run / 'summary.csv')[0]['eval_top1'])
    caplog.clear()
    assert engine.main(['validate', '--resume', str(run / 'best.safetensors'), '--workers', '0']) == 0
    assert _eval_top1(caplog) == pytest.approx(logged)
    assert f'Evaluating the weights of {run / "best.safetensors"}' in caplog.text
    sd = load_file(str(run / 'best.safetensors'))
    sd['fc.weight'] = torch.zeros_like(sd['fc.weight'])
    sd['fc.bias'] = torch.tensor([0., 0., 1., 0.])  # every image predicted as class 2: 2 of the 8 images
    save_file(sd, str(run / 'class2.safetensors'))
    caplog.clear()
    assert engine.main(['validate', '--resume', str(run / 'class2.safetensors'), '--workers', '0']) == 0
    assert _eval_top1(caplog) == pytest.approx(25.0)  # these weights, not the state's


def test_resume_training_from_a_weights_file_says_what_to_pass(image_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    argv = tiny_train_args(image_dir, out, 'run')
    assert engine.main(argv) == 0
    capsys.readouterr()
    best = out / 'run' / 'best.safetensors'
    assert engine.main(_without_experiment(argv) + ['--resume', str(best)]) == 2
    line = one_error_line(capsys)
    assert (f'a file of weights only (the run\'s training state is {out / "run" / "last-state.safetensors"}); '
            f'continue the run with --resume {out / "run"}, start from these weights with --initial-checkpoint '
            f'{best}, or evaluate them with validate --resume {best}') in line


# ---- first hour: --pretrained without the network, torch/cifar10 without its files --------------------------------

@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Hub / torch cache, and any connection attempt fails at once (the tests never touch the network)."""
    import socket
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'HTTP_PROXY', 'http_proxy', 'HF_ENDPOINT'):
        monkeypatch.delenv(k, raising=False)
    tried = []

    def refuse(address, *a, **kw):
        tried.append(address)
        raise OSError('network unreachable (test)')
    monkeypatch.setattr(socket, 'create_connection', refuse)
    return tried


def test_pretrained_weights_unavailable_offline_without_trying_the_network(no_network, monkeypatch):
    from timm_mixplug.train.pretrained_cache import weights_unavailable
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert weights_unavailable('resnet18') == 'offline mode (HF_HUB_OFFLINE is set)'
    assert no_network == []  # decided from the cache and the environment alone


def test_pretrained_weights_unavailable_when_the_host_does_not_answer(no_network):
    from timm_mixplug.train.pretrained_cache import weights_unavailable
    assert weights_unavailable('resnet18') == 'huggingface.co cannot be reached'
    assert no_network == [('huggingface.co', 443)]


def test_pretrained_behind_a_proxy_is_left_to_the_download_client(no_network, monkeypatch):
    from timm_mixplug.train.pretrained_cache import weights_unavailable
    monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.invalid:3128')
    assert weights_unavailable('resnet18') is None and no_network == []  # a direct probe would say nothing


def test_pretrained_weights_in_the_hub_cache_or_a_file_are_available(no_network, tmp_path, monkeypatch):
    from timm_mixplug.train.pretrained_cache import weights_unavailable
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    snap = tmp_path / 'hf' / 'hub' / 'models--timm--resnet18.a1_in1k' / 'snapshots' / 'abc123'
    snap.mkdir(parents=True)
    (snap / 'model.safetensors').write_bytes(b'')
    assert weights_unavailable('resnet18') is None  # cached: timm loads it without the network
    assert weights_unavailable('resnet34') == 'offline mode (HF_HUB_OFFLINE is set)'  # another model's is not
    assert weights_unavailable('resnet34', {'file': str(tmp_path / 'w.safetensors')}) is None  # --pretrained-path
    assert no_network == []


def test_train_py_pretrained_fails_before_timm_tries_to_download(no_network, tmp_path, capsys, monkeypatch):
    import timm.models._builder as builder

    def download(*a, **kw):
        raise AssertionError('timm was asked to load pretrained weights')
    monkeypatch.setattr(builder, 'load_pretrained', download)
    out = tmp_path / 'out'
    assert engine.main(['--dataset', 'mixplug/digits', '--model', 'resnet18', '--pretrained', '--epochs', '1',
                        '--workers', '0', '--output', str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith('train.py: error: --pretrained: the weights of --model resnet18 (timm/resnet18.a1_in1k) '
                           'are not in the local cache and could not be downloaded (huggingface.co cannot be reached)')
    assert '--pretrained-path' in line and not out.exists()


def test_torchvision_dataset_without_its_files_names_dataset_download(tmp_path, capsys):
    out = tmp_path / 'out'
    assert engine.main(['--dataset', 'torch/cifar10', '--data-dir', str(tmp_path), '--epochs', '1',
                        '--output', str(out)]) == 2
    line = one_error_line(capsys)
    assert 'download=True' not in line
    assert line.endswith('Dataset not found or corrupted; add --dataset-download to download it there (internet '
                         'needed once)')
    assert not out.exists()
