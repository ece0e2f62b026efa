"""Every command and code block of README.md and docs/*.md runs as written; so does the library snippet of
each method card (docs/methods/*.md), given a model and a batch, and each card's train.py line (one epoch on
the tiny data).

How a block runs (in a scratch folder that holds what a user's checkout holds: ``train.py``, ``hparams/``,
``benchmarks/``, linked from this one):

* ``python`` blocks run as a script; ``yaml`` blocks must parse.
* ``bash`` blocks, and unmarked blocks of ``python`` / ``torchrun`` lines, run with ``bash -e``, one command
  line after the other (shell variables carry over), after the stand-ins below. ``python3 -m venv``,
  ``. .venv/bin/activate``, ``pip install`` and the pytest line are ``.ci/run``'s (it runs them on a fresh
  clone) and are left out here.
* Stand-ins, for what the docs tell the user to substitute: ``/data/imagenet`` is a tiny ImageFolder, the
  torchvision CIFAR data (``--dataset torch/cifar100 --data-dir DATA``, the CIFAR recipes'
  ``--dataset-download``) a tiny npz of CIFAR-100's classes (one batch of 8 of them; a long-tailed one of all 100
  where the line asks for a long tail), ``<run>`` the newest run folder, ``<recipe>`` a
  CIFAR recipe, a trailing ``...`` the tiny data. A command with a stand-in, and every recipe but the
  quickstart, gets a one-epoch schedule on that data (later words win in argparse), as does ``python -m
  timm_mixplug -c hparams/quickstart.yaml`` (the same entry as ``train.py``, whose full quickstart run is
  checked once); the others run exactly as written. Commands that need many processes, large models or the development data (``../shared``) run
  with ``MIXPLUG_SLOW=1``.
* Blocks that are not code (a folder tree, a JSON schema with "..." holes) are listed in ``NOT_CODE``.

The quickstart's printed best top-1 is checked against the number README.md states.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
SLOW = os.environ.get('MIXPLUG_SLOW') == '1'
SHARED = ROOT.parent / 'shared' / 'data'
NOT_CODE = {  # (file, first line) -> why it is not run
    ('architecture.md', 'timm_mixplug/'): 'a folder tree',
    ('hierarchies.md', '{"name": "...", "source": "...", "rule": "...",'): 'the JSON schema, with "..." holes',
}
# python blocks that are edits of upstream timm's train.py: what train.py has defined at that point
PRELUDE = {
    ('README.md', '# 1. in "setup mixup / cutmix", instead of the FastCollateMixup / Mixup lines:'):
        "import argparse, timm, torch\nimport timm_mixplug  # README: 'plus import timm_mixplug at its top'\n"
        "model = timm.create_model('resnet20_cifar', num_classes=10)\n"
        "args = argparse.Namespace(num_classes=10, prefetcher=False)\n"
        "data_config = timm.data.resolve_data_config({}, model=model)\n"
        "device = torch.device('cpu')\n",
}
# lines run only with MIXPLUG_SLOW=1: (pattern, why)
SLOW_LINES = [
    (r'^torchrun ', 'several processes'),
    (r'resnext101|imagenet', 'an ImageNet-size model'),
    (r'\bcompare --methods', 'nine training runs'),
    (r'\.\./shared', "the development data (../shared/data)"),
    (r'benchmarks/bench_', 'a benchmark'),
    (r'benchmarks/evidence\.py', 'rewrites the committed evidence (tests/test_evidence_report.py checks --report)'),
]
SETUP_WORDS = ('python3 -m venv', '. .venv/bin/activate', 'pip install', 'python -m pytest')
SMOKE = '--epochs 1 --warmup-epochs 0 --workers 0 --log-interval 1000 -b 32 --img-size 32'


def blocks(paths=DOCS):
    """(file, line, language, text) of every fenced block of ``paths``."""
    out = []
    for path in paths:
        text = path.read_text()
        for m in re.finditer(r'^```(\w*)\n(.*?)^```', text, re.S | re.M):
            out.append((path.name, text[:m.start()].count('\n') + 1, m.group(1), m.group(2)))
    return out


def command_lines(text):
    """The block's lines with backslash continuations joined and comments dropped."""
    lines = []
    for line in text.replace('\\\n', ' ').splitlines():
        line = re.sub(r'\s+#.*$', '', line).strip()
        if line and not line.startswith('#'):
            lines.append(line)
    return lines


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A user's folder: the checkout's entry points linked, and the stand-in data."""
    from timm_mixplug.data.datasets import make_image_folder
    ws = tmp_path_factory.mktemp('docs')
    for name in ('train.py', 'hparams', 'benchmarks'):
        (ws / name).symlink_to(ROOT / name)
    make_image_folder(str(ws / 'stand-in' / 'imagenet'), num_classes=4, per_class=8, val_per_class=2, size=32,
                      splits=('train', 'val', 'validation'))
    names = __import__('json').loads((ROOT / 'timm_mixplug/data/hierarchies/cifar100.json').read_text())
    rng = np.random.RandomState(0)
    # cifar100lt: CIFAR-100's classes, class 0 with 10 images and 1-12 with 2 each (--imb-factor 100 keeps
    # int(10 * 100^(-c/99)) >= 1 of class c <= 49, so each class present keeps some: one batch of 32 in all)
    counts100lt = np.array([10] + [2] * 12 + [0] * 87)
    # cifar100s: CIFAR-100's classes, 4 images each of the first 8 only (one batch; the superclass map still applies)
    counts100s = np.array([4] * 8 + [0] * 92)
    for name, classes, counts in (('cifar100lt', names['class_names'], counts100lt),
                                  ('cifar100s', names['class_names'], counts100s),
                                  ('tiny10', [str(c) for c in range(10)], np.full(10, 4))):
        d = ws / 'stand-in' / name
        d.mkdir(parents=True)
        for split in ('train', 'validation', 'test'):
            n = counts if split == 'train' else np.minimum(counts, 1)
            np.savez(d / f'{split}.npz', x=rng.randint(0, 256, (n.sum(), 32, 32, 3), dtype=np.uint8),
                     y=np.repeat(np.arange(len(classes)), n), classes=np.array(classes))
    return ws


def stand_in(line: str, ws: Path):
    """The command a test runs for a docs line."""
    s = str(ws / 'stand-in')
    before = line
    line = line.replace('<recipe>', 'cifar10/cnn11_bcplus')
    # CIFAR-100's classes: the long-tailed stand-in where a line asks for a long tail, else the one-batch one
    cifar = f'{s}/cifar100lt' if re.search(r'--imb-factor|hparams/cifar100lt/', line) else f'{s}/cifar100s'
    line = re.sub(r'--dataset torch/cifar10+( --data-dir DATA)?', f'--dataset npz --data-dir {cifar}', line)
    line = line.replace('/data/imagenet', f'{s}/imagenet --num-classes 4')
    if re.search(r'-c hparams/cifar100', line):
        line = line.replace('--dataset-download', f'--dataset npz --data-dir {cifar} --val-split test')
    if '<run>' in line:
        line = line.replace('output/train/<run>', '"$(ls -d output/train/*/ | tail -n 1)"')
        return line
    if line.endswith(' ...') or ' ... ' in line:
        data = '' if f'{s}/' in line else f'--dataset npz --data-dir {s}/tiny10'
        line = line.replace(' ...', f' {data}', 1).replace(' ...', '')
    line = re.sub(r' \[(--[^]]*)\]', '', line)  # optional words
    # a recipe line runs one epoch; so does the module entry on the quickstart recipe, whose full run (and
    # printed top-1) README's first block already checks
    recipe = re.search(r'-c hparams/(?!quickstart)', line) or line.startswith('python -m timm_mixplug -c ')
    if line != before or recipe:
        sep = ' ' if ' compare ' not in line or ' -- ' in line else ' -- '
        line = line + sep + SMOKE
        return line
    return line


def _normal(cmd: str) -> str:
    return ' '.join(cmd.replace('python -m timm_mixplug', 'python train.py').split())


def _runnable(line: str) -> str:
    """The line without .ci/run's set-up commands ('' when nothing is left)."""
    return ' && '.join(p for p in line.split(' && ') if not p.strip().startswith(SETUP_WORDS))


def first_runs(lines, seen: set):
    """The runnable lines whose command no earlier block or line of the plan has (the quickstart is in four
    blocks): decided here, in document order, so each test runs the same commands whatever subset or order of
    tests pytest runs. ``seen`` collects the commands (stood in for a placeholder workspace)."""
    out = []
    for ln in filter(None, map(_runnable, lines)):
        key = _normal(stand_in(ln, Path('/workspace')))
        if key not in seen:
            seen.add(key)
            out.append(ln)
    return out


def run_plan():
    """(test id, file, language, text, slow) for every block; a block with slow lines has a slow part. A bash
    part lists the lines it runs (slow and fast lines never share a command: slowness is read from the line)."""
    plan, seen = [], set()
    for name, line, lang, text in blocks():
        first = text.splitlines()[0] if text.strip() else ''
        if (name, first) in NOT_CODE:
            continue
        shell = lang in ('bash', 'sh', '') and all(
            ln.startswith(('python', 'torchrun', 'run=', '.', 'pip')) for ln in command_lines(text))
        if lang in ('bash', 'sh') or (lang == '' and shell):
            lines = first_runs(command_lines(text), seen)
            slow = [ln for ln in lines if any(re.search(p, ln) for p, _ in SLOW_LINES)]
            fast = [ln for ln in lines if ln not in slow]
            if fast or not slow:  # a block whose commands all ran earlier keeps its (empty) test
                plan.append((f'{name}:{line}', name, 'bash', fast, False))
            if slow:
                plan.append((f'{name}:{line}:slow', name, 'bash', slow, True))
        elif lang in ('python', 'yaml'):
            plan.append((f'{name}:{line}', name, lang, PRELUDE.get((name, first), '') + text, False))
        elif lang != 'json':
            raise AssertionError(f'{name}:{line}: a ```{lang} block that is neither run nor in NOT_CODE')
    return plan


PLAN = run_plan()


def _env():
    bindir = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=bindir + os.pathsep + os.environ.get('PATH', ''), PYTHONUNBUFFERED='1')


@pytest.mark.parametrize('tid,name,lang,body,slow', PLAN, ids=[p[0] for p in PLAN])
def test_docs_block_runs(tid, name, lang, body, slow, workspace):
    if slow and not SLOW:
        pytest.skip(f'{tid}: {", ".join(sorted({w for p, w in SLOW_LINES if any(re.search(p, b) for b in body)}))}'
                    ' (MIXPLUG_SLOW=1 runs it)')
    if slow and any('../shared' in b for b in body) and not SHARED.is_dir():
        pytest.skip(f'{tid}: needs ../shared/data')
    if lang == 'yaml':
        assert isinstance(yaml.safe_load(body), dict), tid
        return
    if lang == 'python':
        res = subprocess.run([sys.executable, '-c', body], cwd=workspace, env=_env(), capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f'{tid} failed:\n{body}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
        return
    cmds = [stand_in(ln, workspace) for ln in body]
    if not cmds:
        return
    script = 'set -e\n' + '\n'.join(f'echo "+ {c.replace(chr(34), chr(39))}"\n{c}' for c in cmds)
    res = subprocess.run(['bash', '-c', script], cwd=workspace, env=_env(), capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, f'{tid} failed:\n{script}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}'
    if any(_normal(c) == 'python train.py -c hparams/quickstart.yaml' for c in cmds):
        check_quickstart_claim(res.stdout + res.stderr)


def check_quickstart_claim(output: str):
    """README states the quickstart's top-1 as **X % top-1**: the run prints it (within README's stated spread)."""
    readme = (ROOT / 'README.md').read_text()
    claim = re.search(r'\*\*(\d+\.\d) % top-1', readme)
    spread = re.search(r'within (\d+(?:\.\d+)?) point', readme)
    assert claim and spread, 'README.md states the quickstart top-1 as "**X % top-1" and its spread "within N point"'
    got = re.findall(r'\*\*\* Best top1: (\d+\.\d+)', output)
    assert got, output[-2000:]
    top1 = float(got[-1])
    if abs(top1 - float(claim.group(1))) > float(spread.group(1)):
        raise AssertionError(f'quickstart printed best top-1 {top1:.4f}; README.md says {claim.group(1)} % '
                             f'(within {spread.group(1)} point): update README.md or find the regression')


def test_plan_covers_every_block():
    """Each block is run or listed with a reason; the quickstart and the Mixing API block always run."""
    ids = {p[0] for p in PLAN if not p[4]}
    n_blocks = len(blocks())
    assert len({p[0].rsplit(':slow', 1)[0] for p in PLAN}) + len(NOT_CODE) == n_blocks
    readme = (ROOT / 'README.md').read_text()
    mixing = readme[:readme.index('## Mixing API')].count('\n') + 1
    assert any(i.startswith('README.md:') and int(i.split(':')[1]) > mixing for i in ids)
    assert any(_normal(c) == 'python train.py -c hparams/quickstart.yaml'
               for p in PLAN if not p[4] and p[2] == 'bash' for ln in p[3] for c in ln.split(' && '))


# what a method card's library snippet takes as given: a model, a batch, a long-tailed count, an epoch
CARD_PRELUDE = ("import timm, torch, timm_mixplug\ntorch.manual_seed(0)\n"
                "model = timm.create_model('resnet20_cifar', num_classes=10)\n"
                "x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10\n"
                "class_counts = [100, 50, 25, 12, 6, 3, 2, 1, 1, 1]\nepoch, num_epochs = 0, 10\n")
CARDS = [(f'{p.name}:{i}', body) for p in sorted((ROOT / 'docs' / 'methods').glob('*.md'))
         for i, body in enumerate(re.findall(r'```python\n(.*?)```', p.read_text(), re.S))]


@pytest.mark.parametrize('tid,body', CARDS, ids=[c[0] for c in CARDS])
def test_method_card_library_snippet_runs(tid, body):
    """Each card's python block runs as written, given a model and a batch (its train.py lines: below)."""
    exec(compile(CARD_PRELUDE + body, tid, 'exec'), {})


def test_every_method_card_has_a_library_snippet():
    cards = sorted(p.name for p in (ROOT / 'docs' / 'methods').glob('*.md'))
    assert len(cards) >= 10 and sorted({c[0].split(':')[0] for c in CARDS}) == cards


def _card_train_lines():
    """(card:line, command) for every ``python train.py`` line of the cards' bash blocks but recipes (``-c
    hparams/...``: tests/test_recipes.py runs a step of each) and ``compare`` lines (nine runs each; compare's
    own tests run it)."""
    cards = sorted((ROOT / 'docs' / 'methods').glob('*.md'))
    return [(f'{name}:{line}', ln) for name, line, lang, text in blocks(cards) if lang == 'bash'
            for ln in command_lines(text) if ln.startswith('python train.py ') and ' -c hparams/' not in ln]


CARD_LINES = _card_train_lines()


@pytest.mark.parametrize('tid,line', CARD_LINES, ids=[f'{t}:{i}' for i, (t, _) in enumerate(CARD_LINES)])
def test_method_card_train_line_runs(tid, line, workspace, tmp_path):
    """Each card's train.py line runs one epoch in-process: ``...`` is the tiny data (CIFAR-100's classes for a
    CIFAR-100 superclass map or a long tail), ``my_map.yaml`` a map of its classes, a teacher path weights of
    the teacher it names."""
    import shlex
    from safetensors.torch import save_file
    import timm
    from timm_mixplug.train import engine
    teacher = re.search(r'--kd-model-name (\S+)', line)
    if teacher:
        weights = tmp_path / 'teacher.safetensors'
        save_file(timm.create_model(teacher.group(1), num_classes=10).state_dict(), str(weights))
        line = re.sub(r'--kd-pretrained-path \S+', f'--kd-pretrained-path {weights}', line)
    cmd = stand_in(line, workspace)
    assert cmd != line, f'{tid}: {line} has no "..." for the data'
    tiny = str(workspace / 'stand-in' / 'tiny10')
    if '--imb-factor' in line:
        cmd = cmd.replace(tiny, str(workspace / 'stand-in' / 'cifar100lt'))
    elif '--superclass-map cifar100' in line:
        cmd = cmd.replace(tiny, str(workspace / 'stand-in' / 'cifar100s'))
    if 'my_map.yaml' in line:
        (tmp_path / 'my_map.yaml').write_text(''.join(f"'{c}': {'ab'[c % 2]}\n" for c in range(10)))
        cmd = cmd.replace('my_map.yaml', str(tmp_path / 'my_map.yaml'))
    argv = shlex.split(cmd)[2:]
    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        assert engine.main(argv + ['--output', str(tmp_path), '--experiment', 'card']) == 0, f'{tid}: {line}'
    finally:
        os.chdir(cwd)


def test_every_method_card_has_a_train_line():
    assert sorted({t.split(':')[0] for t, _ in CARD_LINES}) == sorted(
        p.name for p in (ROOT / 'docs' / 'methods').glob('*.md'))
