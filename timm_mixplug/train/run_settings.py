"""``validate --resume RUN``: the run's own settings as the defaults of the command line.

The weights get the model, classes and preprocessing they were trained with; a ``-c`` config and the command
line still win, except where a value contradicts what the weights need (``resume.WEIGHT_SETTINGS`` and each
method's ``weight_settings``): that is refused.
"""
import argparse
from typing import Sequence

from timm_mixplug.data.mixing import get_mixer_spec
from timm_mixplug.errors import UsageError
from timm_mixplug.train.config import create_parser, parse_args, split_argv
from timm_mixplug.train.eval_weights import settings_source
from timm_mixplug.train.resume import LOCAL_SETTINGS, WEIGHT_SETTINGS, saved_args
from timm_mixplug.train.specs import weight_settings
from timm_mixplug.train.timm_checkpoint import load_resume_meta, resolve_resume_path
from timm_mixplug.train.yaml_config import coerce_value

__all__ = ['parse_train_args', 'apply_run_settings']


def parse_train_args(argv: Sequence[str]) -> argparse.Namespace:
    """train.py's arguments; an evaluation of a run (``validate --resume RUN``, also with ``--resume`` from a
    ``-c`` file) is parsed with the run's settings as defaults, so its method's flags are known before they are
    checked."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument('--resume', default='')
    pre.add_argument('--evaluate', action='store_true')
    known, _ = pre.parse_known_args(split_argv(argv))
    if known.evaluate and known.resume:
        return apply_run_settings(argv, known.resume)
    args = parse_args(argv)
    return apply_run_settings(argv, args.resume) if args.evaluate and args.resume else args


def apply_run_settings(argv: Sequence[str], resume: str) -> argparse.Namespace:
    """For ``validate --resume RUN``: parse ``argv`` with the run's settings as defaults (a ``-c`` config and the
    command line still win) and refuse values that contradict what the weights need."""
    state_path = resolve_resume_path(settings_source(resume))  # RUN/best.safetensors: RUN's settings
    meta = load_resume_meta(state_path)
    run = saved_args(state_path, meta)
    parser = create_parser()
    actions = {a.dest: a for a in parser._actions}
    defaults = {k: coerce_value(actions[k], k, v, state_path) for k, v in run.items()
                if k in actions and k not in LOCAL_SETTINGS and actions[k].help is not argparse.SUPPRESS}
    parser.set_defaults(**defaults)
    new = parse_args(argv, parser=parser)
    for k in WEIGHT_SETTINGS + weight_settings() + ('mix',):
        if k not in run or not hasattr(new, k):
            continue
        mine, theirs = getattr(new, k), run[k]
        mine = list(mine) if isinstance(mine, tuple) else mine
        if k == 'mix':  # only BC+'s zero-mean input changes what the weights see
            mine, theirs = (mix != 'none' and get_mixer_spec(mix).zero_mean_input for mix in (mine, theirs))
            if mine != theirs:
                raise UsageError(f'--mix {new.mix}: the weights in {state_path} were trained with --mix {run["mix"]}'
                                 f', which {"" if theirs else "does not "}zero-means the input; drop --mix')
        elif mine != theirs:
            raise UsageError(f'--{k.replace("_", "-")} {mine}: the weights in {state_path} were trained with '
                             f'{theirs}; drop the flag')
    return new
