"""The paper recipes in hparams/ (one YAML per seed-table row; REPRODUCE.md maps rows to files).

* every recipe loads through train.py's config loader (unknown or misspelled keys are errors there), with the
  papers' common settings checked;
* REPRODUCE.md and hparams/ agree (every recipe is listed, every listed file exists);
* one training step of every recipe through train.py, in-process, on a tiny generated ImageFolder with the
  recipe's image size and number of classes (``--num-classes``; only two class folders are written), batch 2,
  ``--epochs 1`` and one batch of data (train.py has no step limit, so the data is one batch).

Models too slow for one CPU step in the default run (PyramidNet-110 a270, ResNeXt-29, DenseNet-BC-190,
Shake-Shake-26 2x96d, ResNeXt-101 at 224) are replaced by a small model of the same input size
(``--model resnet20_cifar`` / ``test_resnet``); everything else in the recipe (task, mixing, augmentation,
schedule, image size, classes) stays. ``MIXPLUG_SLOW=1 pytest tests/test_recipes.py -k full_model`` runs
those recipes with their own model as well.
"""
import csv
import math
import os
import re
import shutil

import pytest
import yaml

from timm_mixplug.train.config import parse_args
from timm_mixplug.errors import UsageError
from timm_mixplug.train.yaml_config import load_yaml_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(ROOT, 'hparams')
NOT_RECIPES = {'quickstart.yaml'}  # the offline demo, not a paper row


def _recipes():
    out = []
    for dirpath, _, files in os.walk(HPARAMS):
        for f in files:
            if f.endswith(('.yaml', '.yml')) and f not in NOT_RECIPES:
                out.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    return sorted(out)


RECIPES = _recipes()
HEAVY_MODELS = {'pyramidnet110_a270_cifar', 'resnext29_8x64d_cifar', 'resnext29_16x64d_cifar',
                'densenet_bc_190_40_cifar', 'shakeshake26_2x96d_cifar', 'resnext101_64x4d', 'resnext101_32x4d'}
SMALL_MODEL = {32: 'resnet20_cifar', 224: 'test_resnet'}
SLOW = os.environ.get('MIXPLUG_SLOW', '') not in ('', '0')


def _parse(path, *extra):
    return parse_args(['-c', os.path.join(ROOT, path), *extra])


def _raw(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def _heavy(path):
    return _raw(path)['model'] in HEAVY_MODELS


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_recipe_set():
    names = set(RECIPES)
    assert len(names) >= 58
    for ds in ('cifar10', 'cifar100'):
        for arch in ('cnn11', 'resnet29', 'resnext29', 'densenet190', 'shakeshake26'):
            for method in ('standard', 'bc', 'bcplus'):
                assert f'hparams/{ds}/{arch}_{method}.yaml' in names
        for setting in 'AB':
            assert f'hparams/{ds}/preactresnet18_setting{setting}.yaml' in names
            assert f'hparams/{ds}/preactresnet18_nh_setting{setting}.yaml' in names
    for method in ('standard', 'bc', 'bcplus'):
        assert f'hparams/imagenet1k/resnext101_{method}.yaml' in names
    for key in ('nomix', 'mixup', 'choice', 'beta'):
        assert f'hparams/cifar100/resnet32_dml_superclass_{key}.yaml' in names
    for key in ('groundtruth', 'aux_superclass', 'aux_random_labels'):
        assert f'hparams/cifar100/pyramidnet110_{key}.yaml' in names
    for aug in ('crop', 'cutout', 'ricap'):
        assert f'hparams/cifar100/resnet110_{aug}.yaml' in names
        assert f'hparams/cifar100/resnet110_aux_{aug}.yaml' in names
    for rho in (100, 50):
        assert f'hparams/cifar100lt/resnet32_glmc_rho{rho}.yaml' in names
        assert f'hparams/cifar100lt/resnet32_glmc_clr_rho{rho}.yaml' in names


@pytest.mark.parametrize('path', RECIPES)
def test_recipe_loads(path):
    """Parses with train.py's loader; every key is an implemented option; the task accepts the combination."""
    import timm
    from timm_mixplug.train.specs.base import get_task_spec
    import timm_mixplug.models  # noqa: F401  (registers the CIFAR models)

    cfg = load_yaml_config(os.path.join(ROOT, path))
    args = _parse(path)
    for key in cfg:
        assert hasattr(args, key), key
    get_task_spec(args.task).check_args(args)
    assert timm.is_model(args.model)
    for peer in filter(None, (getattr(args, 'dml_peers', '') or '').split(',')):
        assert peer.isdigit() or timm.is_model(peer)

    # settings every reproduction recipe states explicitly (timm's defaults differ)
    assert args.smoothing == 0.0, 'none of the papers uses label smoothing'
    assert args.warmup_epochs == 0, 'none of the papers warms up'
    assert args.opt in ('sgd', 'momentum') and args.momentum == 0.9
    assert args.lr is not None and args.seed == 0 and args.num_classes
    if args.dataset.startswith('torch/cifar'):
        assert args.img_size == 32 and args.crop_pct == 1.0
        assert args.num_classes == (10 if args.dataset == 'torch/cifar10' else 100)
        assert args.val_split == 'test'
        if args.no_aug:  # the task crops / flips on the device
            assert args.task in ('aux', 'nonharmonic')
            assert 'pad_crop' not in cfg
        else:  # zero-pad 4 + random crop + flip and nothing else, as in every CIFAR paper here
            assert args.pad_crop == 4 and args.hflip == 0.5 and args.color_jitter == 0.0
            assert not args.aa and args.reprob == 0
    else:
        assert args.dataset == '' and args.img_size == 224 and args.num_classes == 1000


def test_recipe_details():
    """Spot checks of values that are easy to get wrong."""
    # the 11-layer CNN's FC dropout: train.py passes --drop (default 0) to the model, overriding its 0.5
    for ds in ('cifar10', 'cifar100'):
        for m in ('standard', 'bc', 'bcplus'):
            assert _parse(f'hparams/{ds}/cnn11_{m}.yaml').drop == 0.5
    # BC reference schedule
    a = _parse('hparams/cifar10/cnn11_bc.yaml')
    assert (a.epochs, a.batch_size, a.lr, a.weight_decay, a.decay_milestones, a.mix) == (
        250, 128, 0.1, 5e-4, [100, 150, 200], 'bc')
    # ResNet-29 = ResNeXt-29 template with cardinality 1
    assert _parse('hparams/cifar100/resnet29_standard.yaml').model_kwargs == {'cardinality': 1}
    # seed 001 mixing ratios
    b = _parse('hparams/cifar100/resnet32_dml_superclass_beta.yaml')
    assert (b.task, b.mix, b.superclass_mode, b.superclass_alpha_same, b.superclass_alpha_diff) == (
        'dml', 'superclass', 'beta', 8.0, 0.2)
    c = _parse('hparams/cifar100/resnet32_dml_superclass_choice.yaml')
    assert (c.superclass_mode, c.superclass_choice_same, c.superclass_choice_diff) == ('choice', 0.5, [0.1, 0.9])
    assert _parse('hparams/cifar100/resnet32_dml_superclass_mixup.yaml').mixup == 1.0
    # seed 002: each table-5 pair differs only in the auxiliary loss weight
    for aug in ('crop', 'cutout', 'ricap'):
        base, aux = _raw(f'hparams/cifar100/resnet110_{aug}.yaml'), _raw(f'hparams/cifar100/resnet110_aux_{aug}.yaml')
        assert {k for k in set(base) | set(aux) if base.get(k) != aux.get(k)} == {'aux_weights'}
        assert (str(base['aux_weights']), str(aux['aux_weights'])) == ('0', '1')
        s = _parse(f'hparams/cifar100/resnet110_aux_{aug}.yaml')
        assert (s.epochs, s.decay_milestones, s.weight_decay, s.batch_size) == (300, [150, 225], 1e-4, 128)
    # seed 003: proposed vs conventional
    for ds, cut in (('cifar10', 16), ('cifar100', 8)):
        p = _parse(f'hparams/{ds}/preactresnet18_nh_settingB.yaml')
        q = _parse(f'hparams/{ds}/preactresnet18_settingB.yaml')
        assert (p.nh_views, p.nh_view_cutout, q.nh_views, q.nh_view_cutout) == (4, cut, 1, cut)
        assert _parse(f'hparams/{ds}/preactresnet18_nh_settingA.yaml').nh_view_cutout == 0
    # seed 004: GLMC per imbalance factor
    for rho, cw, rp in ((100, 4.0, 0.0), (50, 6.0, 0.2)):
        for clr in (False, True):
            g = _parse(f'hparams/cifar100lt/resnet32_glmc{"_clr" if clr else ""}_rho{rho}.yaml')
            assert (g.task, g.imb_factor, g.glmc_contrast_weight, g.glmc_resample_power, g.glmc_clr) == (
                'glmc', rho, cw, rp, clr)
            assert (g.batch_size, g.epochs, g.lr, g.weight_decay, g.model) == (
                128, 200, 0.01, 5e-3, 'resnet32_glmc_cifar')


def test_misspelled_key_is_an_error(tmp_path):
    src = os.path.join(ROOT, 'hparams/cifar10/cnn11_bcplus.yaml')
    with open(src) as f:
        text = f.read()
    for good, bad in (('weight_decay:', 'weight_decya:'), ('pad_crop:', 'pad_corp:'), ('mix: bcplus', 'mix: bcplsu')):
        path = tmp_path / 'bad.yaml'
        path.write_text(text.replace(good, bad, 1))
        with pytest.raises(UsageError):
            parse_args(['-c', str(path)])


def test_reproduce_md_lists_every_recipe():
    with open(os.path.join(ROOT, 'REPRODUCE.md')) as f:
        text = f.read()
    listed = set(re.findall(r'hparams/[\w./-]+?\.yaml', text))
    missing = [p for p in listed if not os.path.isfile(os.path.join(ROOT, p))]
    assert not missing, f'REPRODUCE.md names files that do not exist: {missing}'
    unlisted = [p for p in RECIPES if p not in listed]
    assert not unlisted, f'recipes missing from REPRODUCE.md: {unlisted}'


# ---------------------------------------------------------------------------------------------------------
# one training step per recipe
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """Tiny ImageFolders by (image size, images per class): two classes only (--num-classes sets the head)."""
    from timm_mixplug.data.datasets import make_image_folder
    base = tmp_path_factory.mktemp('recipe_data')
    cache = {}

    def get(size, per_class):
        key = (size, per_class)
        if key not in cache:
            root = str(base / f'{size}_{per_class}')
            make_image_folder(root, num_classes=2, per_class=per_class, size=size, splits=('train',))
            cache[key] = root
        return cache[key]
    return get


@pytest.fixture
def no_plot(monkeypatch):
    """summary.png costs ~0.5 s per run with matplotlib installed; plotting is not what these tests check."""
    from timm_mixplug.train import epochs
    monkeypatch.setattr(epochs, 'plot_summary', lambda *a, **k: None)


def _one_step(path, folders, out, model=None):
    """One step of ``path`` on generated data through train.py's entry; returns (summary row, saved args)."""
    from timm_mixplug.train import engine
    args = _parse(path)
    size = args.img_size or args.input_size[-1]
    # one batch of 2 after the long-tailed subset: 2 + 2 images -> 2 + 1 kept (class 0 is the head)
    per_class = 2 if (args.imb_factor or 0) > 1 else 1
    argv = ['-c', os.path.join(ROOT, path), '--dataset', '', '--data-dir', folders(size, per_class),
            '--train-split', 'train', '--val-split', 'train', '--num-classes', str(args.num_classes),
            '--allow-extra-classes',  # the recipe's full head on 2 generated classes
            '-b', '2', '--epochs', '1', '--workers', '0', '--device', 'cpu', '--log-interval', '1',
            '--output', str(out), '--experiment', 'run']
    if model:
        argv += ['--model', model]
        if args.model_kwargs:
            argv += ['--model-kwargs']  # no values: {}
    assert engine.main(argv) == 0
    with open(os.path.join(out, 'run', 'summary.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    assert math.isfinite(float(row['train_loss'])) and float(row['train_loss']) > 0
    assert os.path.isfile(os.path.join(out, 'run', 'last.safetensors'))
    with open(os.path.join(out, 'run', 'args.yaml')) as f:
        saved = yaml.safe_load(f)
    for key in ('task', 'mix', 'epochs', 'batch_size'):
        assert key in saved
    return row, saved


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")  # ImageNet recipes on a CPU
@pytest.mark.parametrize('path', RECIPES)
def test_recipe_one_step(path, folders, tmp_path, no_plot):
    small = SMALL_MODEL[_parse(path).img_size] if _heavy(path) else None
    row, saved = _one_step(path, folders, tmp_path, model=small)
    raw = _raw(path)
    assert saved['model'] == (small or raw['model'])
    for key in ('task', 'mix'):
        if key in raw:
            assert saved[key] == raw[key]
    if raw.get('task') == 'aux':
        assert f'train_aux_{raw["aux_tasks"]}_loss' in row
    if raw.get('task') == 'glmc':
        assert 'eval_few' in row and ('train_clr_loss' in row) == bool(raw['glmc_clr'])
    if raw.get('task') == 'dml':
        assert 'eval_peer1_top1' in row
    shutil.rmtree(tmp_path / 'run', ignore_errors=True)


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
@pytest.mark.skipif(not SLOW, reason='one CPU step of the large models takes minutes; set MIXPLUG_SLOW=1')
@pytest.mark.parametrize('path', [p for p in RECIPES if _heavy(p)])
def test_recipe_one_step_full_model(path, folders, tmp_path, no_plot):
    row, saved = _one_step(path, folders, tmp_path)
    assert saved['model'] == _raw(path)['model']
    shutil.rmtree(tmp_path / 'run', ignore_errors=True)
