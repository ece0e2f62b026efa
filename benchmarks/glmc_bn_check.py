"""Does GLMC + NT-Xent lose its accuracy through the batch-norm statistics of its clean views? (CPU, no training)

    python benchmarks/glmc_bn_check.py --data ../shared/data \
        --state output/evidence/lt_clr/runs/glmc_clr_w01-s0/last-state.safetensors

With ``--glmc-clr`` a training step runs four backbone calls (mixup, CutMix and the two clean first views, each
with its own batch statistics) instead of GLMC's two, so the batch-norm running statistics the evaluation model
uses average over clean images as well. This loads a finished ``--task glmc --glmc-clr`` state of the ``lt``
regime, evaluates it as trained, then re-estimates the running statistics over one epoch of training batches
(cumulative average, no gradient) from the mixup + CutMix calls only (what GLMC alone sees), from all four calls
(what the run saw) and from the clean views only, and evaluates each (top-1 and shot groups on the 3,000 test
images). If the mixup + CutMix statistics recover GLMC's accuracy, the statistics are the cause.
"""
import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

from evidence import REGIMES, make_data  # noqa: E402
from timm_mixplug.task.glmc import glmc_mix, sample_lambda  # noqa: E402
from timm_mixplug.train import engine  # noqa: E402
from timm_mixplug.train.build import build  # noqa: E402
from timm_mixplug.train.config import parse_args  # noqa: E402
from timm_mixplug.utils.checkpoint import load_train_state  # noqa: E402

GROUPS = {
    'mixup + CutMix (GLMC)': lambda mix, cut, a1, b1: (mix, cut),
    'mixup + CutMix + clean (the run)': lambda mix, cut, a1, b1: (mix, cut, a1, b1),
    'clean views only': lambda mix, cut, a1, b1: (a1, b1),
}


@torch.no_grad()
def evaluate(task, loader) -> dict:
    model = task.get_eval_model().eval()
    ev = task.create_evaluator()
    for x, y in loader:
        ev.update(model(x.float()), y)
    out = ev.compute()
    return {k: out[k] for k in ('top1', 'many', 'medium', 'few')}


@torch.no_grad()
def recalibrate(task, loader, groups) -> None:
    """Running statistics = the cumulative average over one epoch of the chosen backbone calls."""
    m = task.get_trainable_module()
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
    m.train()
    for x, _ in loader:
        a1, a2, b1, b2 = x.float().chunk(4)
        mix, cut, _ = glmc_mix(a1, a2, b1, b2, sample_lambda(1.0))
        for g in groups(mix, cut, a1, b1):
            m.features(g)
    for b in bns:
        b.momentum = 0.1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='folder with cifar10_train_subset10k.npz and cifar10_test.npz')
    p.add_argument('--state', required=True, help='last-state.safetensors of a --task glmc --glmc-clr lt run')
    a = p.parse_args()
    torch.set_num_threads(1)
    data = Path(os.path.relpath(REPO / 'output' / 'evidence' / 'data', Path.cwd()))
    make_data(Path(a.data), data)
    flags = [f.replace('{data}', str(data)) for f in REGIMES['lt'][3]]
    args = parse_args(flags + ['--task', 'glmc', '--glmc-clr', '--seed', '0', '--device', 'cpu',
                               '--output', str(REPO / 'output' / 'bn_check')])
    b = build(args, engine._init_distributed(args), training=True)
    sections, _ = load_train_state(a.state)
    b.task.get_trainable_module().load_state_dict(sections['model'])
    rows = [('as trained', evaluate(b.task, b.loader_eval))]
    for name, groups in GROUPS.items():
        recalibrate(b.task, b.loader_train, groups)
        rows.append((f'statistics from {name}', evaluate(b.task, b.loader_eval)))
    print(f'state: {a.state}\n\n| batch-norm statistics | top-1 | many | medium | few |\n|---|---|---|---|---|')
    for name, r in rows:
        print(f'| {name} | {r["top1"]:.2f} | {r["many"]:.2f} | {r["medium"]:.2f} | {r["few"]:.2f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
