"""--task classification (default): timm's ``ClassificationTask``, with shot-group evaluation on long-tailed data,
or with ``--kd-model-name`` timm's distillation tasks (upstream train.py's ``--kd-*`` options)."""
from types import MappingProxyType

from timm_mixplug.data.mixing import get_mixer_spec
from timm_mixplug.task.classification import LongTailClassificationTask
from timm_mixplug.task.distill import create_distillation_task
from timm_mixplug.train.build import create_teacher
from timm_mixplug.train.data import is_longtail
from timm_mixplug.train.rules import Rule, choice, existing_file, later, number, parser_choice, with_context
from timm_mixplug.train.specs.base import TaskSpec, register_task

KD_FLAGS = ('kd_model_name', 'kd_distill_type', 'kd_loss_type', 'distill_loss_weight', 'task_loss_weight',
            'kd_temperature', 'kd_student_feature_dim', 'kd_teacher_feature_dim', 'kd_token_distill_type')
# what each distillation type does not read
_NOT_READ = {'logit': ('kd_student_feature_dim', 'kd_teacher_feature_dim', 'kd_token_distill_type'),
             'feature': ('kd_loss_type', 'kd_temperature', 'kd_token_distill_type'),
             'token': ('kd_loss_type', 'kd_student_feature_dim', 'kd_teacher_feature_dim')}

_TEACHER = ('--kd-model-name', 'resnet20_cifar')  # the distillation flags are read with a teacher


@register_task('classification')
class ClassificationSpec(TaskSpec):
    help = "timm's ClassificationTask with the --mix method's loss (default); a teacher with --kd-model-name"
    reads = KD_FLAGS
    ranges = MappingProxyType({
        'kd_model_name': later('creating the teacher', 'no_such_model', expect='--kd-model-name'),
        'kd_pretrained_path': with_context(
            Rule(existing_file, 'must be an existing file', ('missing.safetensors',), io=True), *_TEACHER),
        'kd_distill_type': parser_choice(),
        'kd_loss_type': with_context(choice(('kl',), bad='mse'), *_TEACHER),
        'distill_loss_weight': with_context(number(lo=0), *_TEACHER),
        'task_loss_weight': with_context(number(lo=0), *_TEACHER),
        'kd_temperature': with_context(number(lo=0, lo_open=True), *_TEACHER),
        'kd_student_feature_dim': with_context(number(lo=1, integer=True), *_TEACHER, '--kd-distill-type', 'feature'),
        'kd_teacher_feature_dim': with_context(number(lo=1, integer=True), *_TEACHER, '--kd-distill-type', 'feature'),
        'kd_token_distill_type': parser_choice(),
    })

    def compare_presets(self):
        return {'ce': []}

    def add_args(self, parser):
        g = parser.add_argument_group('Knowledge distillation (--task classification with --kd-model-name)')
        g.add_argument('--kd-pretrained-path', default=None, type=str, metavar='FILE',
                       help="the teacher's weights: a .safetensors file of ours (best.safetensors...) or a timm "
                            "checkpoint; without it the teacher is --kd-model-name's pretrained weights (timm's "
                            "hub cache)")

    def check_args(self, args):
        if args.kd_model_name and is_longtail(args):
            raise ValueError('--kd-model-name with --imb-factor: the distillation tasks have no many / medium / '
                             'few-shot evaluation; drop one of them')
        if args.kd_model_name and args.kd_loss_type != 'kl':
            raise ValueError(f'--kd-loss-type {args.kd_loss_type}: timm supports kl only')

    def unused_flags(self, args):
        if not args.kd_model_name:
            return {d: 'without --kd-model-name' for d in KD_FLAGS[1:] + ('kd_pretrained_path',)}
        return {d: f'with --kd-distill-type {args.kd_distill_type}' for d in _NOT_READ[args.kd_distill_type]}

    def create_task(self, args, model, criterion, mixer, info, device):
        if args.kd_model_name:
            zero_mean = args.mix != 'none' and get_mixer_spec(args.mix).zero_mean_input
            return create_distillation_task(
                model, create_teacher(args, info.num_classes), args.kd_distill_type, criterion=criterion,
                zero_mean_input=zero_mean, loss_type=args.kd_loss_type, distill_loss_weight=args.distill_loss_weight,
                task_loss_weight=args.task_loss_weight, temperature=args.kd_temperature,
                student_feature_dim=args.kd_student_feature_dim, teacher_feature_dim=args.kd_teacher_feature_dim,
                token_distill_type=args.kd_token_distill_type, device=device)
        if is_longtail(args) and info.class_counts:
            return LongTailClassificationTask(model, info.class_counts, criterion=criterion, device=device,
                                              verbose=False)
        return super().create_task(args, model, criterion, mixer, info, device)
