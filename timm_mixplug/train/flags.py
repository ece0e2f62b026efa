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


def _g(name: str) -> None:
    global _group
    _group = name


def _f(flags, status: str, help: str, our_default: Any = '<timm>', why: str = '', **kw) -> None:
    flags = (flags,) if isinstance(flags, str) else tuple(flags)
    if 'dest' in kw:
        dest = kw.pop('dest')
    else:
        long = [f for f in flags if f.startswith('--')] or list(flags)
        dest = long[0].lstrip('-').replace('-', '_')
    assert (status == REFUSED) == bool(why), f'{dest}: a refused option needs a reason, only it'
    _FLAGS.append(TimmFlag(dest, flags, _group, status, help, kw, our_default, why))


Y, N = IMPLEMENTED, REFUSED
_TS = 'TorchScript is deprecated in PyTorch; use --torchcompile'
_SIZES = ('scheduled or per-batch training sizes are not supported with this plugin: its mixers and tasks '
          'pair the images of one fixed-size batch')
_NAFLEX = ("timm's NaFlex loader (variable-resolution patch sequences for ViTs) is not supported with this "
           'plugin: its mixers and tasks take image batches')
ST = dict(action='store_true', default=False)

_g('Dataset (timm)')
_f('data', Y, 'dataset root as a positional argument (deprecated in timm: use --data-dir)',
   nargs='?', metavar='DIR', default=None)
_f('--data-dir', Y, 'dataset root folder', metavar='DIR', default=None)
_f('--dataset', Y, 'dataset "<type>/<name>" for timm.data.create_dataset (torch/cifar10, hfds/..., wds/...; '
   'mixplug/digits and npz are ours); empty = ImageFolder / ImageTar under --data-dir', metavar='NAME', default='')
_f('--train-split', Y, 'name of the training split', metavar='NAME', default='train')
_f('--val-split', Y, 'name of the validation split', metavar='NAME', default='validation')
_f('--train-num-samples', Y, 'number of samples in the training split, for iterable datasets (wds/ without '
   '_info.json, tfds/) that cannot count them', type=int, metavar='N', default=None)
_f('--val-num-samples', Y, 'number of samples in the validation split, for iterable datasets',
   type=int, metavar='N', default=None)
_f('--dataset-download', Y, 'let torch/ and tfds/ datasets download themselves into --data-dir', **ST)
_f('--class-map', Y, 'file mapping class names to indices', type=str, metavar='FILENAME', default='')
_f('--input-img-mode', Y, 'PIL mode the images are converted to (RGB for 3 channels, L for 1)',
   type=str, default=None)
_f('--input-key', Y, 'column / key holding the image in hfds/, hfids/, wds/ and tfds/ datasets',
   type=str, default=None)
_f('--target-key', Y, 'column / key holding the label in hfds/, hfids/, wds/ and tfds/ datasets',
   type=str, default=None)
_f('--dataset-trust-remote-code', Y, "allow a Hugging Face dataset to run the code from its repository", **ST)

_g('Model (timm)')
_f('--model', Y, 'timm model name (timm.list_models(); our CIFAR models are registered too)',
   type=str, metavar='MODEL', default='resnet50')
_f('--pretrained', Y, "start from the model's pretrained weights", **ST)
_f('--pretrained-path', Y, 'file to load as the pretrained weights (classifier adapted to --num-classes)',
   type=str, default=None)
_f('--initial-checkpoint', Y, 'weights file loaded into the model before training (safetensors, .pth, '
   '.pth.tar); nothing else is restored', type=str, metavar='PATH', default='')
_f('--resume', Y, 'continue a run: model, optimizer, scheduler and RNG from a run folder or its state file',
   type=str, metavar='PATH', default='')
_f('--no-resume-opt', Y, 'with --resume, do not restore the optimizer state', **ST)
_f('--num-classes', Y, 'number of classes (default: taken from the dataset)', type=int, metavar='N', default=None)
_f('--gp', Y, "global pooling type (fast, avg, max, avgmax, avgmaxc; default: the model's)",
   type=str, metavar='POOL', default=None)
_f('--img-size', Y, "square input size (default: the model's)", type=int, metavar='N', default=None)
_f('--in-chans', Y, 'number of input channels (default: 3)', type=int, metavar='N', default=None)
_f('--input-size', Y, "full input size C H W, e.g. 3 224 224 (default: the model's)",
   nargs=3, type=int, metavar='N', default=None)
_f('--crop-pct', Y, 'centre-crop fraction for validation images', type=float, metavar='N', default=None)
_f('--mean', Y, "per-channel mean for normalisation (default: the model's)",
   type=float, nargs='+', metavar='MEAN', default=None)
_f('--std', Y, "per-channel std for normalisation (default: the model's)",
   type=float, nargs='+', metavar='STD', default=None)
_f('--interpolation', Y, "resize interpolation for validation (default: the model's)",
   type=str, metavar='NAME', default='')
_f(('-b', '--batch-size'), Y, 'training batch size per process', type=int, metavar='N', default=128)
_f(('-vb', '--validation-batch-size'), Y, 'validation batch size per process (default: --batch-size)',
   type=int, metavar='N', default=None)
_f('--channels-last', Y, 'channels-last memory layout for model and input', **ST)
_f('--fuser', N, "TorchScript fuser ('', te, old, nvfuser)", type=str, default='', why=_TS)
_f('--grad-accum-steps', Y, 'batches whose gradients are summed before one optimizer step',
   type=int, metavar='N', default=1)
_f('--grad-checkpointing', Y, 'recompute activations in the backward pass to save memory', **ST)
_f('--fast-norm', Y, "timm's experimental fast normalisation layers (timm.layers.set_fast_norm)", **ST)
_f('--model-kwargs', Y, 'extra keyword arguments for timm.create_model, as key=value', nargs='*', default={},
   action='parse_kwargs')
_f('--head-init-scale', Y, "multiply the classifier's initial weight and bias by this factor",
   type=float, default=None)
_f('--head-init-bias', Y, "set every element of the classifier's initial bias to this value",
   type=float, default=None)
_f('--torchcompile-mode', Y, 'torch.compile mode (default, reduce-overhead, max-autotune, '
   'max-autotune-no-cudagraphs); used with --torchcompile', type=str, default=None)
_f('--torchscript', N, 'torch.jit.script the model', dest='torchscript', why=_TS, **ST)
_f('--torchcompile', Y, 'torch.compile the task\'s model(s) with this backend (bare flag: inductor)',
   nargs='?', type=str, default=None, const='inductor')

_g('Device (timm)')
_f('--device', Y, 'device: cuda, cpu, cuda:1, ... (default: cuda if available, else cpu; timm: cuda)',
   type=str, default='cuda', our_default=None)
_f('--amp', Y, 'automatic mixed precision (autocast) in training and validation', **ST)
_f('--amp-dtype', Y, 'autocast dtype with --amp', type=str, default='float16', choices=['float16', 'bfloat16'])
_f('--model-dtype', Y, 'train the model and feed the input in this dtype, without autocast (default: float32)',
   type=str, default=None, choices=['float32', 'float16', 'bfloat16'])
_f('--no-ddp-bb', Y, "DistributedDataParallel without broadcast_buffers", **ST)
_f('--synchronize-step', Y, "synchronize the accelerator after every optimizer step, as timm (timing); "
   'nothing to wait for on CPU', **ST)
_f(('--local_rank', '--local-rank'), Y, 'set by the distributed launcher', type=int, default=0)
_f('--device-modules', Y, 'python modules imported before the device is set up (device backends)', type=str,
   nargs='+', default=None)

_g('Optimizer (timm)')
_f('--opt', Y, 'optimizer name for timm.optim.create_optimizer_v2 (sgd, adamw, lamb, ...)',
   type=str, metavar='OPTIMIZER', default='sgd')
_f('--opt-eps', Y, "optimizer epsilon (default: the optimizer's)", type=float, metavar='EPSILON', default=None)
_f('--opt-betas', Y, "optimizer betas (default: the optimizer's)", type=float, nargs='+', metavar='BETA',
   default=None)
_f('--momentum', Y, 'SGD / RMSprop momentum', type=float, metavar='M', default=0.9)
_f('--weight-decay', Y, 'weight decay', type=float, default=2e-5)
_f('--clip-grad', Y, 'gradient clipping threshold (default: no clipping)', type=float, metavar='NORM',
   default=None)
_f('--clip-mode', Y, 'what --clip-grad clips: norm, value or agc (adaptive)', type=str, default='norm',
   choices=['norm', 'value', 'agc'])
_f('--layer-decay', Y, 'layer-wise learning-rate decay factor (default: off)', type=float, default=None)
_f('--layer-decay-min-scale', Y, 'lower bound of the layer-wise learning-rate scale', type=float, default=0)
_f('--layer-decay-no-opt-scale', Y, 'layers whose layer-wise scale falls below this are frozen',
   type=float, default=None)
_f('--opt-kwargs', Y, 'extra keyword arguments for the optimizer, as key=value', nargs='*', default={},
   action='parse_kwargs')

_g('Learning rate schedule (timm)')
_f('--sched', Y, 'scheduler for timm.scheduler.create_scheduler_v2 (cosine, step, multistep, plateau, ...)',
   type=str, metavar='SCHEDULER', default='cosine')
_f('--sched-on-updates', Y, 'step the scheduler every optimizer update instead of every epoch', **ST)
_f('--lr', Y, 'learning rate (default: --lr-base scaled by the global batch size / --lr-base-size)',
   type=float, metavar='LR', default=None)
_f('--lr-base', Y, 'learning rate at a global batch of --lr-base-size', type=float, metavar='LR', default=0.1)
_f('--lr-base-size', Y, 'batch size at which --lr-base applies', type=int, metavar='DIV', default=256)
_f('--lr-base-scale', Y, "how --lr-base scales with the batch: linear or sqrt (default: sqrt for ada*/lamb "
   "optimizers, else linear)", type=str, metavar='SCALE', default='')
_f('--lr-noise', Y, 'epochs (or fractions of --epochs) between which the learning rate is perturbed',
   type=float, nargs='+', metavar='pct, pct', default=None)
_f('--lr-noise-pct', Y, 'limit of the learning-rate noise, as a fraction', type=float, default=0.67)
_f('--lr-noise-std', Y, 'standard deviation of the learning-rate noise', type=float, default=1.0)
_f('--lr-cycle-mul', Y, 'length multiplier of each new learning-rate cycle', type=float, default=1.0)
_f('--lr-cycle-decay', Y, 'peak learning-rate factor of each new cycle', type=float, default=0.5)
_f('--lr-cycle-limit', Y, 'number of learning-rate cycles', type=int, default=1)
_f('--lr-k-decay', Y, 'k-decay exponent of cosine / poly schedules', type=float, default=1.0)
_f('--warmup-lr', Y, 'learning rate at the start of warm-up', type=float, default=1e-5)
_f('--min-lr', Y, 'floor of the learning rate for schedules that decay to 0', type=float, default=0)
_f('--epochs', Y, 'number of training epochs (cool-down epochs are added)', type=int, default=300)
_f('--epoch-repeats', Y, 'dataset repeats per epoch, for iterable datasets (wds/, tfds/; 0 = one pass)',
   type=float, default=0.)
_f('--start-epoch', Y, 'epoch to start from (overrides the resumed epoch)', type=int, default=None)
_f('--decay-milestones', Y, 'epochs at which the multistep schedule decays', type=int, nargs='+',
   default=[90, 180, 270])
_f('--decay-epochs', Y, 'epochs between decays of the step schedule', type=float, default=90)
_f('--warmup-epochs', Y, 'epochs of linear warm-up', type=int, default=5)
_f('--warmup-prefix', Y, 'warm-up epochs come before the schedule instead of inside it', **ST)
_f('--cooldown-epochs', Y, 'epochs at --min-lr after the schedule ends', type=int, default=0)
_f('--patience-epochs', Y, 'epochs without improvement before the plateau schedule decays', type=int,
   default=10)
_f(('--decay-rate', '--dr'), Y, 'learning-rate decay factor of step / multistep / plateau', type=float,
   default=0.1)

_g('Augmentation and regularization (timm)')
_f('--no-aug', Y, 'no training augmentation (the validation transform is used)', **ST)
_f('--train-crop-mode', Y, 'training crop: rrc (random-resized crop, default), rkrc, rkrr', type=str,
   default=None)
_f('--scale', Y, 'area range of the random-resized crop', type=float, nargs='+', metavar='PCT',
   default=[0.08, 1.0])
_f('--ratio', Y, 'aspect-ratio range of the random-resized crop', type=float, nargs='+', metavar='RATIO',
   default=[3. / 4., 4. / 3.])
_f('--hflip', Y, 'probability of a horizontal flip', type=float, default=0.5)
_f('--vflip', Y, 'probability of a vertical flip', type=float, default=0.)
_f('--color-jitter', Y, 'colour-jitter strength', type=float, metavar='PCT', default=0.4)
_f('--color-jitter-prob', Y, 'probability of applying colour jitter (default: always)', type=float,
   default=None)
_f('--grayscale-prob', Y, 'probability of converting to grayscale', type=float, default=None)
_f('--gaussian-blur-prob', Y, 'probability of a Gaussian blur', type=float, default=None)
_f('--aa', Y, 'AutoAugment / RandAugment / AugMix policy string, e.g. rand-m9-mstd0.5-inc1, augmix-m5-w4-d2',
   type=str, metavar='NAME', default=None)
_f('--aug-repeats', Y, "repeated augmentation: each image appears this many times per epoch with different "
   "augmentations, through timm's RepeatAugSampler (0 = off)", type=float, default=0)
_f('--aug-splits', Y, 'AugMix splits: each image is returned clean plus N-1 augmented copies (0 = off, '
   'else >= 2)', type=int, default=0)
_f('--jsd-loss', Y, "timm's JsdCrossEntropy (cross-entropy on the clean split + Jensen-Shannon consistency "
   "between splits); needs --aug-splits", **ST)
_f('--bce-loss', Y, "timm's BinaryCrossEntropy (one-vs-rest sigmoid loss) instead of cross-entropy, also "
   "with mixing", **ST)
_f('--bce-sum', Y, 'with --bce-loss, sum the loss over classes instead of averaging', **ST)
_f('--bce-target-thresh', Y, 'with --bce-loss, binarise soft targets at this threshold', type=float,
   default=None)
_f('--bce-pos-weight', Y, 'with --bce-loss, weight of the positive class term', type=float, default=None)
_f('--reprob', Y, 'random-erasing probability', type=float, metavar='PCT', default=0.)
_f('--remode', Y, 'random-erasing fill: const, rand or pixel', type=str, default='pixel')
_f('--recount', Y, 'number of random-erasing boxes', type=int, default=1)
_f('--resplit', Y, 'with --aug-splits, do not random-erase the clean split', **ST)
_f('--mixup', Y, "mixup alpha; > 0 enables timm's Mixup (--mix mixup)", type=float, default=0.0)
_f('--cutmix', Y, "cutmix alpha; > 0 enables timm's Mixup with cutmix (--mix mixup)", type=float, default=0.0)
_f('--cutmix-minmax', Y, 'cutmix box area range; set = cutmix on, alpha unused', type=float, nargs='+',
   default=None)
_f('--mixup-prob', Y, 'probability of mixing a batch', type=float, default=1.0)
_f('--mixup-switch-prob', Y, 'probability of cutmix instead of mixup when both are on', type=float,
   default=0.5)
_f('--mixup-mode', Y, 'mixing granularity: batch, pair or elem', type=str, default='batch')
_f('--mixup-off-epoch', Y, 'stop mixing from this epoch (0 = never)', type=int, metavar='N', default=0)
_f('--smoothing', Y, 'label smoothing (default: 0.1, or 0 for --mix bc, bcplus and superclass; timm: 0.1)',
   type=float, default=0.1, our_default=None)
_f('--train-interpolation', Y, 'resize interpolation in training (random = a random choice per image)',
   type=str, default='random')
_f('--drop', Y, 'dropout rate before the classifier', type=float, metavar='PCT', default=0.0)
_f('--drop-connect', Y, 'old name of --drop-path (the EfficientNet papers\' name): sets --drop-path',
   type=float, metavar='PCT', default=None)
_f('--drop-path', Y, 'stochastic-depth rate', type=float, metavar='PCT', default=None)
_f('--drop-block', Y, 'DropBlock rate', type=float, metavar='PCT', default=None)

_g('Batch norm (timm)')
_f('--bn-momentum', Y, 'BatchNorm momentum override', type=float, default=None)
_f('--bn-eps', Y, 'BatchNorm epsilon override', type=float, default=None)
_f('--sync-bn', Y, 'synchronised BatchNorm across processes (CUDA)', **ST)
_f('--dist-bn', Y, "after each epoch, make BatchNorm statistics equal across processes: reduce (average), "
   "broadcast (rank 0's) or '' (leave)", type=str, default='reduce', choices=['broadcast', 'reduce', ''])
_f('--split-bn', Y, "separate BatchNorm statistics per augmentation split (timm's convert_splitbn_model)",
   action='store_true', default=False)

_g('Model EMA (timm)')
_f('--model-ema', Y, 'keep an exponential moving average of the weights (validated and saved too)', **ST)
_f('--model-ema-force-cpu', Y, 'keep the EMA on the CPU (then it is not validated on other devices)', **ST)
_f('--model-ema-decay', Y, 'EMA decay per update', type=float, default=0.9998)
_f('--model-ema-warmup', Y, 'ramp the EMA decay up over the first updates', action='store_true', default=False)

_g('Miscellaneous (timm)')
_f('--seed', Y, 'random seed', type=int, metavar='S', default=42)
_f('--worker-seeding', Y, 'how loader workers are seeded: all (python, numpy, torch) or part (torch only)',
   type=str, default='all')
_f('--log-interval', Y, 'batches between training log lines', type=int, metavar='N', default=50)
_f('--val-interval', Y, 'epochs between validations (and best / history checkpoints); the last epoch is '
   'always validated', type=int, metavar='N', default=1)
_f('--recovery-interval', Y, 'optimizer updates between mid-epoch recovery states (0 = none)', type=int,
   metavar='N', default=0)
_f('--checkpoint-hist', Y, 'number of best epochs whose weights are kept as checkpoint-<epoch>.safetensors',
   type=int, metavar='N', default=10)
_f(('-j', '--workers'), Y, 'data-loading worker processes per training process', type=int, metavar='N',
   default=4)
_f('--save-images', Y, "write each epoch's first training batch, after mixing, as RUN/train-batch-EPOCH.png: "
   'de-normalised tiles labelled with their classes and mixing weights (timm: a JPEG per log line)', **ST)
_f('--pin-mem', Y, 'pinned host memory in the data loader', **ST)
_f('--no-prefetcher', Y, "plain loader instead of timm's prefetcher (which normalises on the device)", **ST)
_f('--output', Y, 'folder in which the run folder is created (default: ./output/train)', type=str,
   metavar='PATH', default='')
_f('--experiment', Y, 'run folder name (default: <date>-<model>-<size>)', type=str, metavar='NAME', default='')
_f('--eval-metric', Y, 'validation metric that selects the best epoch', type=str, metavar='EVAL_METRIC',
   default='top1')
_f('--tta', N, 'test-time augmentation factor', type=int, metavar='N', default=0,
   why="upstream's train.py averages each N consecutive evaluation outputs, which are N different images (its "
       'loader makes no test-time copies)')
_f('--use-multi-epochs-loader', Y, "timm's MultiEpochsDataLoader: workers live across epochs (faster epoch "
   "start; loader workers are then not re-seeded per epoch)", **ST)
_f('--log-wandb', Y, 'log metrics to Weights & Biases (pip install "timm_mixplug[wandb]")', **ST)
_f('--wandb-project', Y, 'W&B project name', type=str, default=None)
_f('--wandb-tags', Y, 'W&B run tags', type=str, nargs='+', default=[])
_f('--wandb-resume-id', Y, 'W&B run id to continue (needs --resume)', type=str, metavar='ID', default='')

_g('Scheduled resolution (timm; refused: set away from the default, each is an error)')
_f('--train-img-sizes', N, 'per-batch square training sizes', type=int, nargs='+', default=None, why=_SIZES)
_f('--train-batch-sizes', N, 'batch size for each --train-img-sizes entry', type=int, nargs='+', default=None, why=_SIZES)
_f('--train-size-probs', N, 'sampling weights of --train-img-sizes', type=float, nargs='+', default=None, why=_SIZES)
_f('--train-size-schedule', N, 'constant or progressive choice of training size', type=str,
   default='constant', choices=('constant', 'progressive'), why=_SIZES)
_f('--train-size-schedule-spread', N, 'spread of the progressive size schedule', type=float, default=0.65, why=_SIZES)
_f('--train-size-random-mix', N, 'uniform share mixed into the progressive size schedule', type=float,
   default=0.1, why=_SIZES)
_f(('--train-batches-per-epoch', '--train-steps-per-epoch'), N, 'fixed number of loader batches per epoch',
   type=int, default=None, why='fixed-length epochs are not supported with this plugin: an epoch is one pass '
                               'over the training split (schedules, resume and the evidence count them so)')
_f('--variable-batch-loss-scale', N, 'loss scaling for variable batch sizes: none, sqrt or linear', type=str,
   default='none', choices=('none', 'sqrt', 'linear'), why=_SIZES)

_g('NaFlex (timm; refused: set away from the default, each is an error)')
_f('--naflex-loader', N, "timm's NaFlex variable-resolution patch loader", **ST, why=_NAFLEX)
_f('--naflex-train-seq-lens', N, 'NaFlex training sequence lengths', type=int, nargs='+',
   default=[128, 256, 576, 784, 1024], why=_NAFLEX)
_f('--naflex-max-seq-len', N, 'NaFlex validation sequence length', type=int, default=576, why=_NAFLEX)
_f('--naflex-patch-sizes', N, 'NaFlex patch sizes', type=int, nargs='+', default=None, why=_NAFLEX)
_f('--naflex-patch-size-probs', N, 'NaFlex patch-size probabilities', type=float, nargs='+', default=None, why=_NAFLEX)
_f('--naflex-loss-scale', N, 'NaFlex loss scaling: none, sqrt or linear', type=str, default='linear',
   choices=('none', 'sqrt', 'linear'), why=_NAFLEX)
_f('--naflex-patchify-channels-first', N, 'NaFlex patches in C-P-P layout', **ST, why=_NAFLEX)

_g('Knowledge distillation (timm; --task classification, teacher weights with --kd-pretrained-path)')
_f('--kd-model-name', Y, 'teacher model for distillation', type=str, default=None)
_f('--kd-distill-type', Y, 'distillation type: logit, feature or token', type=str, default='logit',
   choices=['logit', 'feature', 'token'])
_f('--kd-loss-type', Y, 'logit-distillation loss', type=str, default='kl')
_f('--distill-loss-weight', Y, 'weight of the distillation loss', type=float, default=None)
_f('--task-loss-weight', Y, 'weight of the classification loss under distillation', type=float, default=None)
_f('--kd-temperature', Y, 'distillation softmax temperature', type=float, default=4.0)
_f('--kd-student-feature-dim', Y, 'student feature size for feature distillation', type=int, default=None)
_f('--kd-teacher-feature-dim', Y, 'teacher feature size for feature distillation', type=int, default=None)
_f('--kd-token-distill-type', Y, 'token distillation: soft or hard', type=str, default='soft',
   choices=['soft', 'hard'])

TIMM_FLAGS: Tuple[TimmFlag, ...] = tuple(_FLAGS)
_BY_DEST = {f.dest: f for f in TIMM_FLAGS}
assert len(_BY_DEST) == len(TIMM_FLAGS), 'duplicate dest in TIMM_FLAGS'
del _FLAGS, _f, _g, Y, N, ST, _TS, _SIZES, _NAFLEX


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
