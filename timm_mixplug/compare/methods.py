"""The methods a comparison trains: the built-in presets and a ``--methods-file``, each a name -> the train.py
arguments added to the training setup."""
import re
import shlex
from typing import Dict, List, Sequence

import yaml

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.train.specs import compare_presets

__all__ = ['builtin_methods', 'load_methods_file', 'check_reserved', 'RESERVED']

# train.py flags that compare sets for every run itself
RESERVED = ('--seed', '--output', '--experiment', '--resume', '--overwrite-experiment')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')


def builtin_methods() -> Dict[str, List[str]]:
    """The built-in methods, name -> train.py arguments: each registered method spec's ``compare_presets``."""
    return compare_presets()


class _UniqueKeys(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'{key!r} is given twice (line {key_node.start_mark.line + 1})', key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str):
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.load(f, Loader=_UniqueKeys)
    except yaml.MarkedYAMLError as e:
        where = f' (line {e.problem_mark.line + 1})' if e.problem_mark and 'line' not in str(e.problem) else ''
        raise CompareError(f'--methods-file {path}: not valid YAML: {e.problem}{where}') from None
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: a file that is not UTF-8 text
        raise CompareError(f'--methods-file {path}: {str(e).splitlines()[0]}') from None


def _method_args(path: str, name, val) -> List[str]:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CompareError(f'--methods-file {path}: bad method name {name!r} (letters, digits, _ . + -)')
    if val is None:
        return []
    if isinstance(val, str):
        try:
            return shlex.split(val)
        except ValueError as e:
            raise CompareError(f'--methods-file {path}: method {name}: {e} in {val!r}') from None
    if isinstance(val, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in val):
        return [str(v) for v in val]
    raise CompareError(f'--methods-file {path}: method {name}: expected a list or string of train.py '
                       f'arguments, got {val!r}')


def load_methods_file(path: str) -> Dict[str, List[str]]:
    """``name: [args]`` or ``name: "args"`` from a YAML file; raises CompareError."""
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or not doc:
        raise CompareError(f'--methods-file {path}: expected a mapping of method name -> train.py arguments')
    return {name: _method_args(path, name, val) for name, val in doc.items()}


def check_reserved(args: Sequence[str], where: str) -> None:
    """Raises CompareError when ``args`` set a flag that compare sets for every run."""
    for a in args:
        if a.split('=', 1)[0] in RESERVED:
            raise CompareError(f'{where}: {a.split("=", 1)[0]} is set by compare for every run '
                               f'(use --seeds / --output)')
