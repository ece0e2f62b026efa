"""train.py's config: timm-style YAML via -c, ignored timm options, typos, resolved defaults."""
import pytest
import yaml

from timm_mixplug.train.config import args_to_yaml, parse_args
from timm_mixplug.errors import UsageError

# A config in timm's train.py format (dests, underscores), as written by timm into args.yaml.
TIMM_YAML = """
aa: rand-m9-mstd0.5-inc1
amp: true
batch_size: 64
bce_loss: false
channels_last: false
checkpoint_hist: 10
color_jitter: 0.4
cooldown_epochs: 0
cutmix: 1.0
data_dir: /data/imagenet
dataset: ''
decay_rate: 0.1
drop: 0.0
drop_path: 0.05
epochs: 200
eval_metric: top1
hflip: 0.5
img_size: null
log_wandb: false
lr: 5e-3
lr_base: 0.1
min_lr: 1.0e-06
mixup: 0.1
mixup_mode: batch
mixup_prob: 1.0
mixup_switch_prob: 0.5
model: resnet50
model_ema: true
model_ema_decay: 0.9998
momentum: 0.9
opt: lamb
opt_eps: 1.0e-08
pin_mem: true
ratio: [0.75, 1.3333333333333333]
recount: 1
remode: pixel
reprob: 0.0
sched: cosine
scale: [0.08, 1.0]
seed: 42
smoothing: 0.1
torchscript: false
train_interpolation: random
warmup_epochs: 5
warmup_lr: 1.0e-06
weight_decay: 0.01
workers: 8
"""


def write(tmp_path, text, name='cfg.yaml'):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_timm_yaml_loads_with_c(tmp_path):
    args = parse_args(['-c', write(tmp_path, TIMM_YAML)])
    assert args.model == 'resnet50' and args.opt == 'lamb' and args.batch_size == 64
    assert args.lr == pytest.approx(5e-3) and isinstance(args.lr, float)  # '5e-3' is a string to YAML 1.1
    assert args.scale == [0.08, 1.0] and args.model_ema and args.amp
    assert args.mix == 'mixup'  # timm semantics: --mixup / --cutmix > 0 enable timm's Mixup
    assert args.smoothing == 0.1
    assert not args.torchscript  # torchscript: false is timm's default, so the refused option is accepted


def test_cli_overrides_config(tmp_path):
    cfg = write(tmp_path, TIMM_YAML)
    with pytest.raises(UsageError, match='--(mixup|cutmix) is read only with --mix cutmix or --mix mixup'):
        parse_args(['-c', cfg, '--mix', 'bcplus'])  # the config's mixup alpha would be dropped silently
    args = parse_args(['-c', cfg, '--mix', 'bcplus', '--mixup', '0', '--cutmix', '0', '-b', '32', '--lr', '0.2'])
    assert args.mix == 'bcplus' and args.batch_size == 32 and args.lr == 0.2


def test_typo_in_config_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="unknown option 'mixup_probb'.*did you mean 'mixup_prob'"):
        parse_args(['-c', write(tmp_path, 'mixup_probb: 0.5\n')])
    with pytest.raises(UsageError, match='unrecognized'):
        parse_args(['--mixup-probb', '0.5'])


@pytest.mark.parametrize('text, match', [
    ('mix: bogus\n', 'invalid mix'),
    ('batch_size: many\n', 'batch_size expects int'),
    ('amp: 3\n', 'true or false'),
    ('superclass_choice_diff: [0.1]\n', 'takes 2 values'),
    ('- a\n- b\n', 'mapping'),
    ('model: [unclosed\n', 'cannot parse'),
])
def test_bad_config_values(tmp_path, text, match):
    with pytest.raises(UsageError, match=match):
        parse_args(['-c', write(tmp_path, text)])


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match='config file not found'):
        parse_args(['-c', str(tmp_path / 'nope.yaml')])


def test_refused_cli_flags_are_errors_only_off_default():
    args = parse_args(['--tta', '0', '--kd-temperature', '2', '--kd-model-name', 'resnet20_cifar',
                       '--checkpoint-hist', '5'])  # tta 0 is timm's default; kd is implemented
    assert args.checkpoint_hist == 5 and args.kd_temperature == 2.0 and args.tta == 0
    with pytest.raises(UsageError, match=r'^--torchscript True: not supported with timm_mixplug \(TorchScript'):
        parse_args(['--torchscript'])


def test_resolved_defaults():
    assert parse_args([]).mix == 'none' and parse_args([]).smoothing == 0.1
    for mix in ('bc', 'bcplus'):
        assert parse_args(['--mix', mix]).smoothing == 0.0
    assert parse_args(['--mix', 'bc', '--smoothing', '0.1']).smoothing == 0.1
    a = parse_args(['--mix', 'superclass', '--dataset', 'torch/cifar100'])
    assert a.superclass_map == 'cifar100'
    with pytest.raises(UsageError, match='superclass-map'):
        parse_args(['--mix', 'superclass', '--dataset', 'torch/cifar10'])
    assert parse_args(['--cutmix', '1.0']).mix == 'mixup'
    assert parse_args(['validate', '--resume', 'x']).evaluate
    with pytest.raises(UsageError, match='needs weights'):
        parse_args(['validate'])
    with pytest.raises(UsageError, match='even'):
        parse_args(['--mix', 'mixup', '-b', '3'])


def test_args_yaml_roundtrip(tmp_path):
    args = parse_args(['-c', write(tmp_path, TIMM_YAML), '--mix', 'bc', '--mixup', '0', '--cutmix', '0',
                       '--resume', 'somewhere'])
    text = args_to_yaml(args)
    saved = yaml.safe_load(text)
    assert 'resume' not in saved and 'local_rank' not in saved and 'config' not in saved
    assert saved['torchscript'] is False and saved['checkpoint_hist'] == 10  # every timm option is saved
    again = parse_args(['-c', write(tmp_path, text, 'args.yaml')])
    for k, v in saved.items():
        assert getattr(again, k) == v, k


def test_task_flags_are_registered():
    from timm_mixplug.train.config import create_parser
    from timm_mixplug.train.specs.base import list_tasks
    parser = create_parser()
    task_action = next(a for a in parser._actions if a.dest == 'task')
    assert 'classification' in task_action.choices
    assert set(task_action.choices) == set(list_tasks())


def test_pad_crop_checks():
    assert parse_args(['--pad-crop', '4']).pad_crop == 4
    with pytest.raises(UsageError, match='no-aug'):
        parse_args(['--pad-crop', '4', '--no-aug'])
    with pytest.raises(UsageError, match='train-crop-mode'):
        parse_args(['--pad-crop', '4', '--train-crop-mode', 'rkrr'])


@pytest.mark.parametrize('text, match', [
    ('epochs: 1.5\n', 'epochs expects int values, got 1.5'),
    ('batch_size: true\n', 'batch_size expects int values, got True'),
    ('lr: true\n', 'lr expects float values, got True'),
    ('img_size: [32]\n', 'img_size takes a single value'),
])
def test_config_values_are_checked_like_command_line_words(tmp_path, text, match):
    """A -c YAML value goes through the command line's conversion (today's `--epochs 1.5` is refused, so is
    `epochs: 1.5`); integral values and numbers for float options still load."""
    with pytest.raises(UsageError, match=match):
        parse_args(['-c', write(tmp_path, text)])
    args = parse_args(['-c', write(tmp_path, 'epochs: 3\nlr: 1\nwarmup_epochs: 0\n', 'ok.yaml')])
    assert args.epochs == 3 and args.lr == 1.0 and isinstance(args.lr, float)
