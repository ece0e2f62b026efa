"""Per-term gradient norms of GLMC + NT-Xent over its first steps, on the ``lt`` evidence setup (CPU, no files but
the report).

    python benchmarks/glmc_grad_norms.py --data ../shared/data --steps 38

Builds the ``lt`` regime's run exactly as train.py does (``benchmarks/evidence.py``'s flags, ``--task glmc
--glmc-clr``, CIFAR-10-LT at one fifth scale, ResNet-20, batch 64), then trains ``--steps`` SGD steps (lr 0.01,
momentum 0.9, weight decay 5e-3, fp32, no warm-up) on the paper's loss. At every step, from the same batch, lam and
CutMix box, it takes the gradient of each weighted term (``GLMCTask.loss_terms``) with respect to the encoder (the
backbone without its classifier): the instance-balanced CE a * L_ib, the re-balanced CE (1 - a) * L_cb, GLMC's
consistency 4 * S, the paper's NT-Xent 1 * L_CLR and, beside it, the NT-Xent without same-class negatives
(``clr_exclude_same_class``, ours). Reported: mean L2 norms over step windows, the cosine of each contrastive
gradient with the CE gradient (a * L_ib + (1 - a) * L_cb), the NT-Xent values against chance (ln(2N - 1)) and the
share of same-class negatives in a denominator (head-class anchors and all anchors).
"""
import argparse
import math
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

from evidence import REGIMES, make_data  # noqa: E402
from timm_mixplug.loss.contrastive import shares_class  # noqa: E402
from timm_mixplug.train import engine  # noqa: E402
from timm_mixplug.train.build import build  # noqa: E402
from timm_mixplug.train.config import parse_args  # noqa: E402
from timm_mixplug.train.options import set_loader_epoch  # noqa: E402
from timm_mixplug.utils.checkpoint import load_train_state  # noqa: E402

TERMS = ('ib', 'cb', 'consistency', 'clr', 'clr_excl')


def _encoder_params(task):
    m = task.get_trainable_module()
    head = {id(p) for p in m.fc_cb.parameters()}
    return [p for p in m.backbone.parameters() if id(p) not in head]


def _terms(task, x, y, rng, exclude):
    torch.set_rng_state(rng)  # the same lam and CutMix box for both NT-Xent variants
    task.clr_exclude_same_class = exclude
    terms, weights, _ = task.loss_terms(x, y)
    return {k: weights[k] * v for k, v in terms.items()}, {k: v.item() for k, v in terms.items()}


def _grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])


def _same_class_share(y: torch.Tensor, head: int = 0) -> tuple:
    """Share of an anchor's 2N - 2 negatives in L(z1, z_mix) that share its class: (head-class anchors, all)."""
    B = y.shape[0] // 2
    y_a, y_b = y[:B], y[B:]
    lab = torch.cat([torch.stack([y_a, y_a], 1), torch.stack([y_a, y_b], 1)])
    same = shares_class(lab).float()
    same.fill_diagonal_(0)
    idx = torch.arange(2 * B)
    same[idx, idx.roll(B)] = 0
    share = same.sum(1) / (2 * B - 2)
    is_head = torch.cat([y_a == head, y_a == head])
    return share[is_head].mean().item(), share.mean().item()


def _batches(loader, task, epoch: int = 0):
    """The training batches, epoch after epoch from ``epoch``, with GLMC's epoch schedule set as train.py does."""
    while True:
        set_loader_epoch(loader, epoch)
        task.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(b, steps: int, first_epoch: int = 0):
    task = b.task.train()
    params = _encoder_params(task)
    opt = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.01, momentum=0.9, weight_decay=5e-3)
    rows = []
    for step, (x, y) in zip(range(steps), _batches(b.loader_train, task, first_epoch)):
        rng = torch.get_rng_state()
        excl, excl_val = _terms(task, x, y, rng, True)
        g_excl = _grad(excl['clr'], params)
        del excl
        terms, values = _terms(task, x, y, rng, False)
        g = {k: _grad(terms[k], params) for k in ('ib', 'cb', 'consistency', 'clr')}
        g['clr_excl'] = g_excl
        ce = g['ib'] + g['cb']
        cos = {k: torch.nn.functional.cosine_similarity(g[k], ce, dim=0).item() for k in ('consistency', 'clr',
                                                                                         'clr_excl')}
        head_share, all_share = _same_class_share(y)
        rows.append(dict(norm={k: g[k].norm().item() for k in TERMS}, ce=ce.norm().item(), cos=cos,
                         clr=values['clr'], clr_excl=excl_val['clr'], head_share=head_share, all_share=all_share))
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    return rows


def _mean(rows, f):
    return sum(f(r) for r in rows) / len(rows)


def report(rows, batch: int) -> str:
    windows = [(0, 5), (5, 20), (20, 38), (38, len(rows))]
    windows = [(a, b) for a, b in windows if a < min(b, len(rows))]
    head = ('| steps | ' + ' | '.join(f'‖∇ {k}‖' for k in TERMS)
            + ' | ‖∇ CE‖ | cos(clr, CE) | cos(clr_excl, CE) | '
            'cos(consistency, CE) | L_CLR | L_CLR excl |')
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for a, b in windows:
        w = rows[a:min(b, len(rows))]
        cells = [f'{_mean(w, lambda r, k=k: r["norm"][k]):.3f}' for k in TERMS]
        cells.append(f'{_mean(w, lambda r: r["ce"]):.3f}')
        cells += [f'{_mean(w, lambda r, k=k: r["cos"][k]):+.3f}' for k in ('clr', 'clr_excl', 'consistency')]
        cells += [f'{_mean(w, lambda r, k=k: r[k]):.3f}' for k in ('clr', 'clr_excl')]
        lines.append(f'| {a + 1}-{min(b, len(rows))} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    head_share, all_share = (100 * _mean(rows, lambda r, k=k: r[k]) for k in ('head_share', 'all_share'))
    lines.append(f'NT-Xent at chance: ln(2N - 1) = {math.log(2 * batch - 1):.3f}. Same-class negatives in a '
                 f'denominator of L(z1, z_mix): {head_share:.1f} % of the {2 * batch - 2} for a head-class (class 0) '
                 f'anchor, {all_share:.1f} % over all anchors.')
    return '\n'.join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', required=True, help='folder with cifar10_train_subset10k.npz and cifar10_test.npz')
    p.add_argument('--steps', type=int, default=38, help='SGD steps (38: one epoch of the lt regime)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--state', help="a GLMC run's last-state.safetensors: measure from its weights and epoch instead "
                                   "of a fresh model")
    p.add_argument('--out', default=str(REPO / 'benchmarks' / 'evidence' / 'lt_clr' / 'grad_norms.md'))
    a = p.parse_args()
    torch.set_num_threads(1)
    data = Path(os.path.relpath(REPO / 'output' / 'evidence' / 'data', Path.cwd()))
    make_data(Path(a.data), data)
    flags = [f.replace('{data}', str(data)) for f in REGIMES['lt'][3]]
    flags = [f for f in flags if f not in ('--amp',)]
    flags = flags[:flags.index('--amp-dtype')] + flags[flags.index('--amp-dtype') + 2:]
    args = parse_args(flags + ['--task', 'glmc', '--glmc-clr', '--seed', str(a.seed), '--device', 'cpu',
                               '--output', str(REPO / 'output' / 'grad_norms')])
    b = build(args, engine._init_distributed(args), training=True)
    first_epoch = 0
    if a.state:
        sections, meta = load_train_state(a.state)
        b.task.get_trainable_module().load_state_dict(sections['model'])
        first_epoch = int(meta['epoch']) + 1
    rows = measure(b, a.steps, first_epoch)
    start = (f'from `{a.state}` (after epoch {first_epoch - 1}; a = {1 - (first_epoch / args.epochs) ** 2:.3f})'
             if a.state else 'from a fresh model (a = 1 in epoch 0: the re-balanced CE has weight 0)')
    cmd = f'python benchmarks/glmc_grad_norms.py --data ../shared/data --steps {a.steps} --seed {a.seed}'
    text = (f'# GLMC + NT-Xent: gradient norms of each weighted term on the encoder, {len(rows)} steps\n\n'
            f'`{cmd}{" --state " + a.state if a.state else ""}`: the `lt` regime, `--task glmc --glmc-clr`, fp32, '
            f'SGD lr 0.01 without warm-up, {start}. Each column is the L2 norm of the gradient of the weighted '
            f'term with respect to the encoder\'s parameters, averaged over the steps of the row; clr_excl is the '
            f'NT-Xent without same-class negatives on the same batch (ours).\n\n' + report(rows, args.batch_size)
            + '\n')
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
