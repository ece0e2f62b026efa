#!/usr/bin/env python3
"""Which timm release first has every timm name the package imports: writes tests/fixtures/timm_names.json.

    python scripts/check_timm_minimum.py --versions 1.0.20,1.0.24,1.0.29,1.0.30,1.0.31

Downloads each timm wheel (``pip download --no-deps``; pure Python, imported from the wheel file with the
installed torch) and records, per imported name, the oldest checked release that has it. tests/test_layout.py
then checks that pyproject's ``timm>=`` minimum is at least the newest of those releases and that the table
lists exactly the names the package imports, so a new import of a newer timm name fails until this is rerun.
"""
import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'timm_names.json')
_PROBE = '''
import importlib, json, sys
found = []
for full in json.loads(sys.argv[1]):
    mod, _, name = full.rpartition('.')
    try:
        m = importlib.import_module(mod)
        if hasattr(m, name):
            found.append(full)
            continue
        importlib.import_module(full)
        found.append(full)
    except Exception:
        pass
print(json.dumps(found))
'''


def imported_timm_names(pkg: str = os.path.join(ROOT, 'timm_mixplug')):
    """``module.name`` for every ``from timm... import name`` in the package."""
    names = set()
    for d, _, files in os.walk(pkg):
        for f in files:
            if f.endswith('.py'):
                for n in ast.walk(ast.parse(open(os.path.join(d, f)).read())):
                    if isinstance(n, ast.ImportFrom) and n.module and n.module.split('.')[0] == 'timm':
                        names.update(f'{n.module}.{a.name}' for a in n.names)
    return sorted(names)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--versions', default='1.0.20,1.0.24,1.0.29,1.0.30,1.0.31',
                   help='timm releases to check, oldest first')
    a = p.parse_args()
    names = imported_timm_names()
    first = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in a.versions.split(','):
            subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', f'timm=={v}', '-d', tmp],
                           check=True)
            wheel = os.path.join(tmp, f'timm-{v}-py3-none-any.whl')
            out = subprocess.run([sys.executable, '-c', _PROBE, json.dumps(names)], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=wheel), check=True).stdout
            for n in json.loads(out):
                first.setdefault(n, v)
            print(f'timm {v}: {len(json.loads(out))} of {len(names)} names')
    missing = [n for n in names if n not in first]
    if missing:
        print(f'not in any checked release: {missing}', file=sys.stderr)
        return 1
    with open(OUT, 'w') as f:
        json.dump(dict(checked=a.versions.split(','), first_release=first), f, indent=1, sort_keys=True)
    print(f'wrote {OUT}; newest needed: {max(first.values(), key=lambda s: tuple(map(int, s.split("."))))}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
