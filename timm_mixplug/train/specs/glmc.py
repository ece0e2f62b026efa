"""--task glmc: GLMC (Du et al., CVPR 2023) and the mix-ratio NT-Xent on top of it, from train.py's flags."""
from types import MappingProxyType

from timm_mixplug.task.glmc import GLMCDataset, GLMCTask, glmc_collate
from timm_mixplug.train.rules import number
from timm_mixplug.train.specs.base import TaskSpec, register_task

__all__ = ['GLMCSpec']


@register_task('glmc')
class GLMCSpec(TaskSpec):
    help = "GLMC (Du et al. 2023) for long-tailed data; --glmc-clr adds the mix-ratio-weighted NT-Xent"
    mixes_itself = True  # GLMC mixes its own two batches; --mix must be none
    ranges = MappingProxyType({
        'glmc_contrast_weight': number(lo=0),
        'glmc_beta': number(lo=0, lo_open=True),
        'glmc_reweight_power': number(lo=0),
        'glmc_resample_power': number(lo=0),
        'glmc_proj_dim': number(lo=1, integer=True),
        'glmc_clr_weight': number(lo=0),
        'glmc_clr_tau': number(lo=0, lo_open=True),
    })
    switches = ('glmc_joint_forward', 'glmc_clr', 'glmc_clr_exclude_same_class', 'glmc_clr_own_projector')
    weight_settings = ('glmc_proj_dim', 'glmc_clr', 'glmc_clr_own_projector')

    def compare_presets(self):
        return {'glmc': ['--task', 'glmc'], 'glmc_clr': ['--task', 'glmc', '--glmc-clr']}

    def add_args(self, parser):
        g = parser.add_argument_group('GLMC (--task glmc) and the mix-ratio NT-Xent (--glmc-clr)')
        g.add_argument('--glmc-contrast-weight', type=float, default=4.0,
                       help='weight of the global-local mixture consistency loss (4 CIFAR-100-LT IF100, 6 IF50)')
        g.add_argument('--glmc-beta', type=float, default=1.0, help='lam ~ Beta(a, a) for mixup and CutMix')
        g.add_argument('--glmc-reweight-power', type=float, default=1.2,
                       help='class-balanced targets weighted by n_c^-q (q)')
        g.add_argument('--glmc-resample-power', type=float, default=0.0,
                       help='re-sampled batch drawn with probability n_c^-r (0.0 CIFAR-100-LT IF100, 0.2 IF50)')
        g.add_argument('--glmc-proj-dim', type=int, default=128, help='projection / predictor width')
        g.add_argument('--glmc-joint-forward', action='store_true', default=False,
                       help='one network call over mixup + CutMix (+ clean) batches (shared BN statistics)')
        g.add_argument('--glmc-clr', action='store_true', default=False,
                       help='add the NT-Xent between features before and after mixup / CutMix, weighted by lam')
        g.add_argument('--glmc-clr-weight', type=float, default=1.0, help='--glmc-clr: weight of the NT-Xent loss')
        g.add_argument('--glmc-clr-tau', type=float, default=0.5, help='--glmc-clr: NT-Xent temperature tau')
        g.add_argument('--glmc-clr-exclude-same-class', action='store_true', default=False,
                       help='--glmc-clr: leave negatives of the anchor\'s class (a mixed image: either source class) '
                            'out of the NT-Xent denominator (ours, not the paper\'s)')
        g.add_argument('--glmc-clr-own-projector', action='store_true', default=False,
                       help='--glmc-clr: the NT-Xent gets its own linear projection instead of sharing GLMC\'s '
                            'with the consistency loss (ours, not the paper\'s)')

    def check_args(self, args):
        if args.mix not in (None, 'none'):
            raise ValueError(f'GLMC mixes itself (global mixup + local CutMix); drop --mix {args.mix} '
                             f'(and --mixup / --cutmix).')

    def unused_flags(self, args):
        if args.glmc_clr:
            return {}
        return {d: 'without --glmc-clr' for d in ('glmc_clr_weight', 'glmc_clr_tau', 'glmc_clr_exclude_same_class',
                                                  'glmc_clr_own_projector')}

    def wrap_dataset(self, dataset, args, info, is_training):
        return GLMCDataset(dataset, resample_power=args.glmc_resample_power) if is_training else dataset

    def create_collate(self, args, info, collate):
        return glmc_collate

    def create_task(self, args, model, criterion, mixer, info, device):
        if info.class_counts is None:
            raise ValueError('GLMC needs the per-class training counts (a dataset with readable labels).')
        return GLMCTask(
            model, info.class_counts, contrast_weight=args.glmc_contrast_weight, beta_alpha=args.glmc_beta,
            reweight_power=args.glmc_reweight_power, clr_weight=args.glmc_clr_weight if args.glmc_clr else 0.0,
            clr_tau=args.glmc_clr_tau, clr_exclude_same_class=args.glmc_clr_exclude_same_class,
            clr_own_projector=args.glmc_clr_own_projector,
            proj_dim=args.glmc_proj_dim, num_epochs=args.epochs,
            joint_forward=args.glmc_joint_forward, device=device, verbose=False)
