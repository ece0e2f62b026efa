"""Every option of timm's upstream ``train.py``, in one table: flag names, type, timm's default, our help
text and whether ``train.py`` implements it.

This table is the parity reference: ``config.create_parser`` builds the timm part of our parser from it (so
every upstream flag is accepted on the command line and as a ``-c`` key) and an upstream ``args.yaml`` is
checked against it in the tests. ``status`` is ``implemented`` (the option does what timm's does) or
``refused`` (accepted at timm's default, so upstream's own ``args.yaml`` loads; any other value is one error
line naming the flag and ``why`` it is not supported with this plugin).

Source: ``train.py`` of huggingface/pytorch-image-models, main branch (commit aa4b5850, 2026-08).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

__all__ = ['TimmFlag', 'TIMM_FLAGS', 'implemented', 'refused', 'refused_settings', 'parity_table']

IMPLEMENTED, REFUSED = 'implemented', 'refused'


@dataclass(frozen=True)
class TimmFlag:
    """One upstream option. ``kwargs`` are argparse's; ``default`` is timm's default (ours may differ, see
    ``our_default``, resolved later by ``config.resolve_args``)."""
    dest: str
    flags: Tuple[str, ...]
    group: str
    status: str
    help: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    our_default: Any = '<timm>'
    why: str = ''  # a refused option: why it is not supported

    @property
    def default(self):
        return self.kwargs.get('default', False if self.kwargs.get('action') == 'store_true' else None)


_FLAGS: List[TimmFlag] = []
_group = ''


def _section(name: str) -> None:
    global _group
    _group = name


def _add(flags, status: str, help: str, our_default: Any, why: str, kw: Dict[str, Any]) -> None:
    flags = (flags,) if isinstance(flags, str) else tuple(flags)
    if 'dest' in kw:
        dest = kw.pop('dest')
    else:
        long = [f for f in flags if f.startswith('--')] or list(flags)
        dest = long[0].lstrip('-').replace('-', '_')
    _FLAGS.append(TimmFlag(dest, flags, _group, status, help, kw, our_default, why))


def _flag(flags, help: str, our_default: Any = '<timm>', **kw) -> None:
    """An upstream option ``train.py`` implements (argparse keywords in ``kw``)."""
    _add(flags, IMPLEMENTED, help, our_default, '', kw)


def _refused(flags, help: str, why: str, **kw) -> None:
    """An upstream option accepted only at timm's default; ``why`` it is not supported with this plugin."""
    _add(flags, REFUSED, help, '<timm>', why, kw)


_TS = 'TorchScript is deprecated in PyTorch; use --torchcompile'
_SIZES = ('scheduled or per-batch training sizes are not supported with this plugin: its mixers and tasks '
          'pair the images of one fixed-size batch')
_NAFLEX = ("timm's NaFlex loader (variable-resolution patch sequences for ViTs) is not supported with this "
           'plugin: its mixers and tasks take image batches')
_SWITCH = dict(action='store_true', default=False)

_section('Dataset (timm)')
_flag('data', 'dataset root as a positional argument (deprecated in timm: use --data-dir)',
   nargs='?', metavar='DIR', default=None)
_flag('--data-dir', 'dataset root folder', metavar='DIR', default=None)
_flag('--dataset', 'dataset "<type>/<name>" for timm.data.create_dataset (torch/cifar10, hfds/..., wds/...; '
   'mixplug/digits and npz are ours); empty = ImageFolder / ImageTar under --data-dir', metavar='NAME', default='')
_flag('--train-split', 'name of the training split', metavar='NAME', default='train')
_flag('--val-split', 'name of the validation split', metavar='NAME', default='validation')
_flag('--train-num-samples', 'number of samples in the training split, for iterable datasets (wds/ without '
   '_info.json, tfds/) that cannot count them', type=int, metavar='N', default=None)
_flag('--val-num-samples', 'number of samples in the validation split, for iterable datasets',
   type=int, metavar='N', default=None)
_flag('--dataset-download', 'let torch/ and tfds/ datasets download themselves into --data-dir', **_SWITCH)
_flag('--class-map', 'file mapping class names to indices', type=str, metavar='FILENAME', default='')
_flag('--input-img-mode', 'PIL mode the images are converted to (RGB for 3 channels, L for 1)',
   type=str, default=None)
_flag('--input-key', 'column / key holding the image in hfds/, hfids/, wds/ and tfds/ datasets',
   type=str, default=None)
_flag('--target-key', 'column / key holding the label in hfds/, hfids/, wds/ and tfds/ datasets',
   type=str, default=None)
_flag('--dataset-trust-remote-code', "allow a Hugging Face dataset to run the code from its repository", **_SWITCH)

_section('Model (timm)')
_flag('--model', 'timm model name (timm.list_models(); our CIFAR models are registered too)',
   type=str, metavar='MODEL', default='resnet50')
_flag('--pretrained', "start from the model's pretrained weights", **_SWITCH)
_flag('--pretrained-path', 'file to load as the pretrained weights (classifier adapted to --num-classes)',
   type=str, default=None)
_flag('--initial-checkpoint', 'weights file loaded into the model before training (safetensors, .pth, '
   '.pth.tar); nothing else is restored', type=str, metavar='PATH', default='')
_flag('--resume', 'continue a run: model, optimizer, scheduler and RNG from a run folder or its state file',
   type=str, metavar='PATH', default='')
_flag('--no-resume-opt', 'with --resume, do not restore the optimizer state', **_SWITCH)
_flag('--num-classes', 'number of classes (default: taken from the dataset)', type=int, metavar='N', default=None)
_flag('--gp', "global pooling type (fast, avg, max, avgmax, avgmaxc; default: the model's)",
   type=str, metavar='POOL', default=None)
_flag('--img-size', "square input size (default: the model's)", type=int, metavar='N', default=None)
_flag('--in-chans', 'number of input channels (default: 3)', type=int, metavar='N', default=None)
_flag('--input-size', "full input size C H W, e.g. 3 224 224 (default: the model's)",
   nargs=3, type=int, metavar='N', default=None)
_flag('--crop-pct', 'centre-crop fraction for validation images', type=float, metavar='N', default=None)
_flag('--mean', "per-channel mean for normalisation (default: the model's)",
   type=float, nargs='+', metavar='MEAN', default=None)
_flag('--std', "per-channel std for normalisation (default: the model's)",
   type=float, nargs='+', metavar='STD', default=None)
_flag('--interpolation', "resize interpolation for validation (default: the model's)",
   type=str, metavar='NAME', default='')
_flag(('-b', '--batch-size'), 'training batch size per process', type=int, metavar='N', default=128)
_flag(('-vb', '--validation-batch-size'), 'validation batch size per process (default: --batch-size)',
   type=int, metavar='N', default=None)
_flag('--channels-last', 'channels-last memory layout for model and input', **_SWITCH)
_refused('--fuser', "TorchScript fuser ('', te, old, nvfuser)", type=str, default='', why=_TS)
_flag('--grad-accum-steps', 'batches whose gradients are summed before one optimizer step',
   type=int, metavar='N', default=1)
_flag('--grad-checkpointing', 'recompute activations in the backward pass to save memory', **_SWITCH)
_flag('--fast-norm', "timm's experimental fast normalisation layers (timm.layers.set_fast_norm)", **_SWITCH)
_flag('--model-kwargs', 'extra keyword arguments for timm.create_model, as key=value', nargs='*', default={},
   action='parse_kwargs')
_flag('--head-init-scale', "multiply the classifier's initial weight and bias by this factor",
   type=float, default=None)
_flag('--head-init-bias', "set every element of the classifier's initial bias to this value",
   type=float, default=None)
_flag('--torchcompile-mode', 'torch.compile mode (default, reduce-overhead, max-autotune, '
   'max-autotune-no-cudagraphs); used with --torchcompile', type=str, default=None)
_refused('--torchscript', 'torch.jit.script the model', dest='torchscript', why=_TS, **_SWITCH)
_flag('--torchcompile', 'torch.compile the task\'s model(s) with this backend (bare flag: inductor)',
   nargs='?', type=str, default=None, const='inductor')

_section('Device (timm)')
_flag('--device', 'device: cuda, cpu, cuda:1, ... (default: cuda if available, else cpu; timm: cuda)',
   type=str, default='cuda', our_default=None)
_flag('--amp', 'automatic mixed precision (autocast) in training and validation', **_SWITCH)
_flag('--amp-dtype', 'autocast dtype with --amp', type=str, default='float16', choices=['float16', 'bfloat16'])
_flag('--model-dtype', 'train the model and feed the input in this dtype, without autocast (default: float32)',
   type=str, default=None, choices=['float32', 'float16', 'bfloat16'])
_flag('--no-ddp-bb', "DistributedDataParallel without broadcast_buffers", **_SWITCH)
_flag('--synchronize-step', "synchronize the accelerator after every optimizer step, as timm (timing); "
   'nothing to wait for on CPU', **_SWITCH)
_flag(('--local_rank', '--local-rank'), 'set by the distributed launcher', type=int, default=0)
_flag('--device-modules', 'python modules imported before the device is set up (device backends)', type=str,
   nargs='+', default=None)

_section('Optimizer (timm)')
_flag('--opt', 'optimizer name for timm.optim.create_optimizer_v2 (sgd, adamw, lamb, ...)',
   type=str, metavar='OPTIMIZER', default='sgd')
_flag('--opt-eps', "optimizer epsilon (default: the optimizer's)", type=float, metavar='EPSILON', default=None)
_flag('--opt-betas', "optimizer betas (default: the optimizer's)", type=float, nargs='+', metavar='BETA',
   default=None)
_flag('--momentum', 'SGD / RMSprop momentum', type=float, metavar='M', default=0.9)
_flag('--weight-decay', 'weight decay', type=float, default=2e-5)
_flag('--clip-grad', 'gradient clipping threshold (default: no clipping)', type=float, metavar='NORM',
   default=None)
_flag('--clip-mode', 'what --clip-grad clips: norm, value or agc (adaptive)', type=str, default='norm',
   choices=['norm', 'value', 'agc'])
_flag('--layer-decay', 'layer-wise learning-rate decay factor (default: off)', type=float, default=None)
_flag('--layer-decay-min-scale', 'lower bound of the layer-wise learning-rate scale', type=float, default=0)
_flag('--layer-decay-no-opt-scale', 'layers whose layer-wise scale falls below this are frozen',
   type=float, default=None)
_flag('--opt-kwargs', 'extra keyword arguments for the optimizer, as key=value', nargs='*', default={},
   action='parse_kwargs')

_section('Learning rate schedule (timm)')
_flag('--sched', 'scheduler for timm.scheduler.create_scheduler_v2 (cosine, step, multistep, plateau, ...)',
   type=str, metavar='SCHEDULER', default='cosine')
_flag('--sched-on-updates', 'step the scheduler every optimizer update instead of every epoch', **_SWITCH)
_flag('--lr', 'learning rate (default: --lr-base scaled by the global batch size / --lr-base-size)',
   type=float, metavar='LR', default=None)
_flag('--lr-base', 'learning rate at a global batch of --lr-base-size', type=float, metavar='LR', default=0.1)
_flag('--lr-base-size', 'batch size at which --lr-base applies', type=int, metavar='DIV', default=256)
_flag('--lr-base-scale', "how --lr-base scales with the batch: linear or sqrt (default: sqrt for ada*/lamb "
   "optimizers, else linear)", type=str, metavar='SCALE', default='')
_flag('--lr-noise', 'epochs (or fractions of --epochs) between which the learning rate is perturbed',
   type=float, nargs='+', metavar='pct, pct', default=None)
_flag('--lr-noise-pct', 'limit of the learning-rate noise, as a fraction', type=float, default=0.67)
_flag('--lr-noise-std', 'standard deviation of the learning-rate noise', type=float, default=1.0)
_flag('--lr-cycle-mul', 'length multiplier of each new learning-rate cycle', type=float, default=1.0)
_flag('--lr-cycle-decay', 'peak learning-rate factor of each new cycle', type=float, default=0.5)
_flag('--lr-cycle-limit', 'number of learning-rate cycles', type=int, default=1)
_flag('--lr-k-decay', 'k-decay exponent of cosine / poly schedules', type=float, default=1.0)
_flag('--warmup-lr', 'learning rate at the start of warm-up', type=float, default=1e-5)
_flag('--min-lr', 'floor of the learning rate for schedules that decay to 0', type=float, default=0)
_flag('--epochs', 'number of training epochs (cool-down epochs are added)', type=int, default=300)
_flag('--epoch-repeats', 'dataset repeats per epoch, for iterable datasets (wds/, tfds/; 0 = one pass)',
   type=float, default=0.)
_flag('--start-epoch', 'epoch to start from (overrides the resumed epoch)', type=int, default=None)
_flag('--decay-milestones', 'epochs at which the multistep schedule decays', type=int, nargs='+',
   default=[90, 180, 270])
_flag('--decay-epochs', 'epochs between decays of the step schedule', type=float, default=90)
_flag('--warmup-epochs', 'epochs of linear warm-up', type=int, default=5)
_flag('--warmup-prefix', 'warm-up epochs come before the schedule instead of inside it', **_SWITCH)
_flag('--cooldown-epochs', 'epochs at --min-lr after the schedule ends', type=int, default=0)
_flag('--patience-epochs', 'epochs without improvement before the plateau schedule decays', type=int,
   default=10)
_flag(('--decay-rate', '--dr'), 'learning-rate decay factor of step / multistep / plateau', type=float,
   default=0.1)

_section('Augmentation and regularization (timm)')
_flag('--no-aug', 'no training augmentation (the validation transform is used)', **_SWITCH)
_flag('--train-crop-mode', 'training crop: rrc (random-resized crop, default), rkrc, rkrr', type=str,
   default=None)
_flag('--scale', 'area range of the random-resized crop', type=float, nargs='+', metavar='PCT',
   default=[0.08, 1.0])
_flag('--ratio', 'aspect-ratio range of the random-resized crop', type=float, nargs='+', metavar='RATIO',
   default=[3. / 4., 4. / 3.])
_flag('--hflip', 'probability of a horizontal flip', type=float, default=0.5)
_flag('--vflip', 'probability of a vertical flip', type=float, default=0.)
_flag('--color-jitter', 'colour-jitter strength', type=float, metavar='PCT', default=0.4)
_flag('--color-jitter-prob', 'probability of applying colour jitter (default: always)', type=float,
   default=None)
_flag('--grayscale-prob', 'probability of converting to grayscale', type=float, default=None)
_flag('--gaussian-blur-prob', 'probability of a Gaussian blur', type=float, default=None)
_flag('--aa', 'AutoAugment / RandAugment / AugMix policy string, e.g. rand-m9-mstd0.5-inc1, augmix-m5-w4-d2',
   type=str, metavar='NAME', default=None)
_flag('--aug-repeats', "repeated augmentation: each image appears this many times per epoch with different "
   "augmentations, through timm's RepeatAugSampler (0 = off)", type=float, default=0)
_flag('--aug-splits', 'AugMix splits: each image is returned clean plus N-1 augmented copies (0 = off, '
   'else >= 2)', type=int, default=0)
_flag('--jsd-loss', "timm's JsdCrossEntropy (cross-entropy on the clean split + Jensen-Shannon consistency "
   "between splits); needs --aug-splits", **_SWITCH)
_flag('--bce-loss', "timm's BinaryCrossEntropy (one-vs-rest sigmoid loss) instead of cross-entropy, also "
   "with mixing", **_SWITCH)
_flag('--bce-sum', 'with --bce-loss, sum the loss over classes instead of averaging', **_SWITCH)
_flag('--bce-target-thresh', 'with --bce-loss, binarise soft targets at this threshold', type=float,
   default=None)
_flag('--bce-pos-weight', 'with --bce-loss, weight of the positive class term', type=float, default=None)
_flag('--reprob', 'random-erasing probability', type=float, metavar='PCT', default=0.)
_flag('--remode', 'random-erasing fill: const, rand or pixel', type=str, default='pixel')
_flag('--recount', 'number of random-erasing boxes', type=int, default=1)
_flag('--resplit', 'with --aug-splits, do not random-erase the clean split', **_SWITCH)
_flag('--mixup', "mixup alpha; > 0 enables timm's Mixup (--mix mixup)", type=float, default=0.0)
_flag('--cutmix', "cutmix alpha; > 0 enables timm's Mixup with cutmix (--mix mixup)", type=float, default=0.0)
_flag('--cutmix-minmax', 'cutmix box area range; set = cutmix on, alpha unused', type=float, nargs='+',
   default=None)
_flag('--mixup-prob', 'probability of mixing a batch', type=float, default=1.0)
_flag('--mixup-switch-prob', 'probability of cutmix instead of mixup when both are on', type=float,
   default=0.5)
_flag('--mixup-mode', 'mixing granularity: batch, pair or elem', type=str, default='batch')
_flag('--mixup-off-epoch', 'stop mixing from this epoch (0 = never)', type=int, metavar='N', default=0)
_flag('--smoothing', 'label smoothing (default: 0.1, or 0 for --mix bc, bcplus and superclass; timm: 0.1)',
   type=float, default=0.1, our_default=None)
_flag('--train-interpolation', 'resize interpolation in training (random = a random choice per image)',
   type=str, default='random')
_flag('--drop', 'dropout rate before the classifier', type=float, metavar='PCT', default=0.0)
_flag('--drop-connect', 'old name of --drop-path (the EfficientNet papers\' name): sets --drop-path',
   type=float, metavar='PCT', default=None)
_flag('--drop-path', 'stochastic-depth rate', type=float, metavar='PCT', default=None)
_flag('--drop-block', 'DropBlock rate', type=float, metavar='PCT', default=None)

_section('Batch norm (timm)')
_flag('--bn-momentum', 'BatchNorm momentum override', type=float, default=None)
_flag('--bn-eps', 'BatchNorm epsilon override', type=float, default=None)
_flag('--sync-bn', 'synchronised BatchNorm across processes (CUDA)', **_SWITCH)
_flag('--dist-bn', "after each epoch, make BatchNorm statistics equal across processes: reduce (average), "
   "broadcast (rank 0's) or '' (leave)", type=str, default='reduce', choices=['broadcast', 'reduce', ''])
_flag('--split-bn', "separate BatchNorm statistics per augmentation split (timm's convert_splitbn_model)",
   action='store_true', default=False)

_section('Model EMA (timm)')
_flag('--model-ema', 'keep an exponential moving average of the weights (validated and saved too)', **_SWITCH)
_flag('--model-ema-force-cpu', 'keep the EMA on the CPU (then it is not validated on other devices)', **_SWITCH)
_flag('--model-ema-decay', 'EMA decay per update', type=float, default=0.9998)
_flag('--model-ema-warmup', 'ramp the EMA decay up over the first updates', action='store_true', default=False)

_section('Miscellaneous (timm)')
_flag('--seed', 'random seed', type=int, metavar='S', default=42)
_flag('--worker-seeding', 'how loader workers are seeded: all (python, numpy, torch) or part (torch only)',
   type=str, default='all')
_flag('--log-interval', 'batches between training log lines', type=int, metavar='N', default=50)
_flag('--val-interval', 'epochs between validations (and best / history checkpoints); the last epoch is '
   'always validated', type=int, metavar='N', default=1)
_flag('--recovery-interval', 'optimizer updates between mid-epoch recovery states (0 = none)', type=int,
   metavar='N', default=0)
_flag('--checkpoint-hist', 'number of best epochs whose weights are kept as checkpoint-<epoch>.safetensors',
   type=int, metavar='N', default=10)
_flag(('-j', '--workers'), 'data-loading worker processes per training process', type=int, metavar='N',
   default=4)
_flag('--save-images', "write each epoch's first training batch, after mixing, as RUN/train-batch-EPOCH.png: "
   'de-normalised tiles labelled with their classes and mixing weights (timm: a JPEG per log line)', **_SWITCH)
_flag('--pin-mem', 'pinned host memory in the data loader', **_SWITCH)
_flag('--no-prefetcher', "plain loader instead of timm's prefetcher (which normalises on the device)", **_SWITCH)
_flag('--output', 'folder in which the run folder is created (default: ./output/train)', type=str,
   metavar='PATH', default='')
_flag('--experiment', 'run folder name (default: <date>-<model>-<size>)', type=str, metavar='NAME', default='')
_flag('--eval-metric', 'validation metric that selects the best epoch', type=str, metavar='EVAL_METRIC',
   default='top1')
_refused('--tta', 'test-time augmentation factor', type=int, metavar='N', default=0,
   why="upstream's train.py averages each N consecutive evaluation outputs, which are N different images (its "
       'loader makes no test-time copies)')
_flag('--use-multi-epochs-loader', "timm's MultiEpochsDataLoader: workers live across epochs (faster epoch "
   "start; loader workers are then not re-seeded per epoch)", **_SWITCH)
_flag('--log-wandb', 'log metrics to Weights & Biases (pip install "timm_mixplug[wandb]")', **_SWITCH)
_flag('--wandb-project', 'W&B project name', type=str, default=None)
_flag('--wandb-tags', 'W&B run tags', type=str, nargs='+', default=[])
_flag('--wandb-resume-id', 'W&B run id to continue (needs --resume)', type=str, metavar='ID', default='')

_section('Scheduled resolution (timm; refused: set away from the default, each is an error)')
_refused('--train-img-sizes', 'per-batch square training sizes', type=int, nargs='+', default=None, why=_SIZES)
_refused('--train-batch-sizes', 'batch size for each --train-img-sizes entry', type=int, nargs='+', default=None, why=_SIZES)
_refused('--train-size-probs', 'sampling weights of --train-img-sizes', type=float, nargs='+', default=None, why=_SIZES)
_refused('--train-size-schedule', 'constant or progressive choice of training size', type=str,
   default='constant', choices=('constant', 'progressive'), why=_SIZES)
_refused('--train-size-schedule-spread', 'spread of the progressive size schedule', type=float, default=0.65, why=_SIZES)
_refused('--train-size-random-mix', 'uniform share mixed into the progressive size schedule', type=float,
   default=0.1, why=_SIZES)
_refused(('--train-batches-per-epoch', '--train-steps-per-epoch'), 'fixed number of loader batches per epoch',
   type=int, default=None, why='fixed-length epochs are not supported with this plugin: an epoch is one pass '
                               'over the training split (schedules, resume and the evidence count them so)')
_refused('--variable-batch-loss-scale', 'loss scaling for variable batch sizes: none, sqrt or linear', type=str,
   default='none', choices=('none', 'sqrt', 'linear'), why=_SIZES)

_section('NaFlex (timm; refused: set away from the default, each is an error)')
_refused('--naflex-loader', "timm's NaFlex variable-resolution patch loader", **_SWITCH, why=_NAFLEX)
_refused('--naflex-train-seq-lens', 'NaFlex training sequence lengths', type=int, nargs='+',
   default=[128, 256, 576, 784, 1024], why=_NAFLEX)
_refused('--naflex-max-seq-len', 'NaFlex validation sequence length', type=int, default=576, why=_NAFLEX)
_refused('--naflex-patch-sizes', 'NaFlex patch sizes', type=int, nargs='+', default=None, why=_NAFLEX)
_refused('--naflex-patch-size-probs', 'NaFlex patch-size probabilities', type=float, nargs='+', default=None, why=_NAFLEX)
_refused('--naflex-loss-scale', 'NaFlex loss scaling: none, sqrt or linear', type=str, default='linear',
   choices=('none', 'sqrt', 'linear'), why=_NAFLEX)
_refused('--naflex-patchify-channels-first', 'NaFlex patches in C-P-P layout', **_SWITCH, why=_NAFLEX)

_section('Knowledge distillation (timm; --task classification, teacher weights with --kd-pretrained-path)')
_flag('--kd-model-name', 'teacher model for distillation', type=str, default=None)
_flag('--kd-distill-type', 'distillation type: logit, feature or token', type=str, default='logit',
   choices=['logit', 'feature', 'token'])
_flag('--kd-loss-type', 'logit-distillation loss', type=str, default='kl')
_flag('--distill-loss-weight', 'weight of the distillation loss', type=float, default=None)
_flag('--task-loss-weight', 'weight of the classification loss under distillation', type=float, default=None)
_flag('--kd-temperature', 'distillation softmax temperature', type=float, default=4.0)
_flag('--kd-student-feature-dim', 'student feature size for feature distillation', type=int, default=None)
_flag('--kd-teacher-feature-dim', 'teacher feature size for feature distillation', type=int, default=None)
_flag('--kd-token-distill-type', 'token distillation: soft or hard', type=str, default='soft',
   choices=['soft', 'hard'])

TIMM_FLAGS: Tuple[TimmFlag, ...] = tuple(_FLAGS)
_BY_DEST = {f.dest: f for f in TIMM_FLAGS}
assert len(_BY_DEST) == len(TIMM_FLAGS), 'duplicate dest in TIMM_FLAGS'
del _FLAGS, _add, _flag, _refused, _section, _SWITCH, _TS, _SIZES, _NAFLEX


def implemented() -> Tuple[str, ...]:
    return tuple(f.dest for f in TIMM_FLAGS if f.status == IMPLEMENTED)


def refused() -> Tuple[str, ...]:
    return tuple(f.dest for f in TIMM_FLAGS if f.status == REFUSED)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):  # True is not 1
        return a is b
    return a == b


def refused_settings(values: Dict[str, Any]) -> Dict[str, str]:
    """The refused options in ``values`` set away from timm's default: dest -> why."""
    return {d: _BY_DEST[d].why for d, v in values.items()
            if d in _BY_DEST and _BY_DEST[d].status == REFUSED and not _same(v, _BY_DEST[d].default)}


def parity_table() -> str:
    """Markdown: per group of upstream train.py's options, those implemented and those refused (with why);
    docs/train.md holds this table (``python -m timm_mixplug.train.flags`` prints it; a test keeps them equal)."""
    rows = ['| group | implemented | refused (when set away from timm\'s default) |', '|---|---|---|']
    groups = list(dict.fromkeys(f.group for f in TIMM_FLAGS))
    for g in groups:
        flags = [f for f in TIMM_FLAGS if f.group == g]
        name = lambda f: '`' + (f.flags[0] if f.flags[0].startswith('--') else f.flags[-1]) + '`'  # noqa: E731
        yes = ', '.join(name(f) for f in flags if f.status == IMPLEMENTED)
        whys = list(dict.fromkeys(f.why for f in flags if f.status == REFUSED))
        no = '; '.join(', '.join(name(f) for f in flags if f.why == w) + f': {w}' for w in whys)
        rows.append(f'| {g.replace(" (timm)", "").split(" (timm;")[0]} | {yes or "-"} | {no or "-"} |')
    n_yes, n_no = len(implemented()), len(refused())
    return '\n'.join(rows) + f'\n\n{len(TIMM_FLAGS)} options: {n_yes} implemented, {n_no} refused.\n'


if __name__ == '__main__':
    print(parity_table(), end='')
