"""``-c`` YAML configs of ``train.py``: read them (a key given twice is refused), convert every value as the
command line converts its word, and merge several files in the order given (a later file overrides an
earlier one; the command line overrides them all, as argparse defaults).

A key left empty (``batch_size:``) is YAML's null: it is accepted only where the option's own default is
None (timm's ``args.yaml`` writes ``lr: null``); anywhere else it is refused in one line naming the key.
"""
import argparse
import difflib
import os
from typing import Any, Dict, List, Sequence, Set

import yaml

from timm_mixplug.errors import UsageError
from timm_mixplug.train.ranges import KwargsAction

__all__ = ['load_yaml_config', 'coerce_value', 'config_paths', 'config_defaults', 'given_options']


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a key given twice (PyYAML keeps the last silently).
    Merge keys (``<<: *base``) still override what they merge, as YAML defines."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == 'tag:yaml.org,2002:merge':
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise _DuplicateKeyError(None, None, f'key {key!r} is given twice (lines {seen[key] + 1} '
                                                         f'and {key_node.start_mark.line + 1})')
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor('tag:yaml.org,2002:map', _UniqueKeyLoader.construct_yaml_map)


def load_yaml_config(path: str) -> Dict[str, Any]:
    """Read a flat YAML mapping; keys may use ``-`` or ``_`` (``batch-size`` and ``batch_size`` are one key).
    Raises ``UsageError`` for a missing or unparsable file, a non-mapping, or a key given twice."""
    if not os.path.isfile(path):
        raise UsageError(f'-c/--config file not found: {path}')
    try:
        with open(path) as f:
            cfg = yaml.load(f, Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as e:
        raise UsageError(f'config {path}: {e.problem}; keep one') from None
    except yaml.YAMLError as e:
        raise UsageError(f'cannot parse config {path}: {str(e).splitlines()[0]}') from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise UsageError(f'config {path} must be a mapping of option names to values, got {type(cfg).__name__}')
    out, spelled = {}, {}
    for k, v in cfg.items():
        key = str(k).replace('-', '_')
        if key in out:
            raise UsageError(f'config {path}: {spelled[key]!r} and {k!r} are the same option; keep one')
        out[key], spelled[key] = v, k
    return out


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return 'true or false'
    if isinstance(action, KwargsAction):
        return 'a mapping'
    if action.choices is not None:
        return 'one of ' + ', '.join(map(str, action.choices))
    return {int: 'an integer', float: 'a number'}.get(action.type, 'a value')


def coerce_value(action: argparse.Action, key: str, value, source: str, default=None):
    """Convert a YAML value exactly as the command line converts its text: the option's type applied to the value
    written as a command-line word (``epochs: 1.5`` fails as ``--epochs 1.5`` does; ``batch_size: true`` fails as
    ``--batch-size True`` does); then the choices. An empty value (null) is the option's ``default`` when that
    default is None, else refused."""
    if value is None:
        if default is None and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return None
        raise UsageError(f'{source}: {key} is empty; give it {_type_name(action)} or drop the key '
                         f'(its default is {default!r})')
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UsageError(f'{source}: {key} must be true or false, got {value!r}')
        return value
    typ = action.type

    def one(v):
        if isinstance(v, (dict, list, tuple)):
            raise UsageError(f'{source}: {key} takes a single value, got {v!r}')
        if v is None:
            raise UsageError(f'{source}: {key} has an empty item; give each {_type_name(action)}')
        try:
            v = (typ or str)(str(v))
        except (TypeError, ValueError):
            raise UsageError(f'{source}: {key} expects {getattr(typ, "__name__", typ)} values, got {v!r}') from None
        if action.choices is not None and v not in action.choices:
            raise UsageError(f'{source}: invalid {key} {v!r} (choose from {", ".join(map(str, action.choices))})')
        return v

    if isinstance(action, argparse._StoreAction) and action.nargs not in (None, '?'):
        vals = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(action.nargs, int) and len(vals) != action.nargs:
            raise UsageError(f'{source}: {key} takes {action.nargs} values, got {value!r}')
        return [one(v) for v in vals]
    if isinstance(action, argparse._StoreAction):
        return one(value)
    if isinstance(action, KwargsAction):
        if not isinstance(value, dict):
            raise UsageError(f'{source}: {key} must be a mapping, got {value!r}')
    return value


def config_paths(argv: Sequence[str]) -> List[str]:
    """Every ``-c`` / ``--config`` file of ``argv``, in the order given."""
    pre = _Parser(add_help=False, allow_abbrev=False)
    pre.add_argument('-c', '--config', action='append', default=[])
    return [p for p in pre.parse_known_args(list(argv))[0].config if p]


def config_defaults(argv: Sequence[str], actions: Dict[str, argparse.Action],
                    defaults_before: Dict[str, Any]) -> Dict[str, Any]:
    """The parser defaults the ``-c`` files of ``argv`` set: each file's values converted (``coerce_value``,
    an empty value allowed where ``defaults_before[key]`` is None) and the files applied in order; ``actions``
    maps each option's dest to its parser action."""
    defaults = {}
    for path in config_paths(argv):
        for key, value in load_yaml_config(path).items():
            if key == 'local_rank':  # set by the launcher, never by a config
                continue
            if key not in actions or key == 'config':
                options = [d for d, a in actions.items() if a.help is not argparse.SUPPRESS]
                close = difflib.get_close_matches(key, options, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                raise UsageError(f"unknown option '{key}' in config {path}{hint}")
            defaults[key] = coerce_value(actions[key], key, value, f'config {path}', defaults_before.get(key))
    return defaults


def given_options(argv: Sequence[str], actions: Dict[str, argparse.Action], config: Dict[str, Any]) -> Set[str]:
    """The dests the user set: an option string in ``argv`` (``--flag value`` or ``--flag=value``) or a key of
    the ``-c`` files (``config``, as ``config_defaults`` returns it). Everything else is at its default."""
    words = {w.split('=', 1)[0] for w in argv if w.startswith('-')}
    words |= {w[:2] for w in argv if len(w) > 2 and w[0] == '-' and w[1] != '-'}  # -b8
    return {d for d, a in actions.items() if words & set(a.option_strings)} | set(config)
