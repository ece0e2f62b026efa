"""The vocabulary of ``train.py``'s range table: a ``Rule`` per flag and the factories that build the common ones.

A rule's ``check(value, args)`` returns what is wrong (or None) and its ``text`` states the valid range (the fix in
the error line); ``bad`` are invalid example values that tests/test_flag_contract.py feeds to ``train.py``. The
table itself is assembled by ``ranges.all_ranges``: timm's and the application's flags there, each method's in its
spec (``MethodSpec.ranges``).
"""
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from timm_mixplug.data.hierarchy import BUILTIN_HIERARCHIES

__all__ = ['Rule', 'number', 'choice', 'parser_choice', 'later', 'with_context', 'existing_file', 'superclass_map',
           'SEED', 'PROB', 'FRACTION']

SEED = dict(lo=0, hi=2 ** 32 - 1, integer=True)
PROB = dict(lo=0, hi=1)
FRACTION = dict(lo=0, hi=1, hi_open=True)


@dataclass(frozen=True)
class Rule:
    """``check(value, args) -> None | problem``; ``text``: the valid range; ``bad``: invalid CLI values;
    ``context``: extra argv the bad values need to be reached (e.g. the task that reads the flag);
    ``expect``: text the error line contains (default: the flag); ``io``: the check looks at this machine
    (files, devices), so it runs when training / evaluation starts, not when a config is parsed."""
    check: Optional[Callable[[Any, Any], Optional[str]]]
    text: str
    bad: Tuple[str, ...] = ()
    context: Tuple[str, ...] = ()
    expect: str = ''
    io: bool = False


def number(lo=None, hi=None, lo_open=False, hi_open=False, integer=False, n=None, ordered=False,
           counted=False) -> Rule:
    """A number (or ``n`` numbers, ``n='+'`` for one or more) in [lo, hi] (open ends as asked); ``counted``:
    the parser takes any count (nargs '+'), so a wrong count is a bad value too."""
    kind = 'an integer' if integer else 'a number'
    if lo is not None and hi is not None:
        rng = f'in {"(" if lo_open else "["}{lo}, {hi}{")" if hi_open else "]"}'
    elif lo is not None:
        rng = f'{">" if lo_open else ">="} {lo}'
    elif hi is not None:
        rng = f'{"<" if hi_open else "<="} {hi}'
    else:
        rng = 'finite'
    text = f'must be {kind} {rng}' if n is None else \
        f'takes {"one or more" if n == "+" else n} values, each {rng}' + (' in ascending order' if ordered else '')

    def ok(v) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return not ((lo is not None and (v <= lo if lo_open else v < lo))
                    or (hi is not None and (v >= hi if hi_open else v > hi)))

    def check(value, args):
        vals = [value] if n is None else list(value)
        if n not in (None, '+') and len(vals) != n:
            return text
        if not all(ok(v) for v in vals) or (ordered and vals != sorted(vals)):
            return text
        return None

    bad = []
    step = 1 if integer else (0.5 if (hi is None or lo is None) else (hi - lo) / 2)
    if lo is not None:
        bad.append(str(lo if lo_open else lo - step))
    if hi is not None:
        bad.append(str(hi if hi_open else hi + step))
    if not integer:
        bad.append('nan')
    if n not in (None, '+'):  # out-of-range values with the right count (and a wrong count)
        good = lo + step if lo is not None else (hi - step if hi is not None else 0)
        good = int(good) if integer else good
        bad = [' '.join([b] + [str(good)] * (n - 1)) for b in bad]
        if counted:
            bad.append(' '.join([str(good)] * (n + 1)))
    return Rule(check, text, tuple(bad))


def choice(options: Sequence[str], bad: str = 'bogus') -> Rule:
    opts = list(options)
    text = 'must be one of ' + ', '.join(repr(o) if o == '' else o for o in opts)
    return Rule(lambda v, a: None if v in opts else text, text, (bad,))


def parser_choice(bad: str = 'bogus') -> Rule:
    """The parser's ``choices`` (from a registry for --mix / --task) reject anything else."""
    return Rule(None, 'must be one of the choices --help lists', (bad,))


def later(where: str, bad: str, context: Sequence[str] = (), expect: str = '') -> Rule:
    return Rule(None, f'checked when {where}', (bad,), tuple(context), expect)



def with_context(rule: Rule, *context: str) -> Rule:
    """``rule`` whose invalid examples need ``context`` on the command line to be read."""
    return dataclasses.replace(rule, context=tuple(context))



def existing_file(v, a):
    return None if os.path.isfile(v) else 'must be an existing file'



def superclass_map(v, a):
    if v in BUILTIN_HIERARCHIES or os.path.isfile(v):
        return None
    return f'must be {", ".join(BUILTIN_HIERARCHIES)} or an existing YAML/JSON/CSV file'


