"""The comparison's report: its numbers (``compare.json``), the table (``compare.md``) and the figure
(``compare.png``)."""
import math
import shlex
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from timm_mixplug.compare.runs import SHOT_GROUPS
from timm_mixplug.compare.stats import mean_std, paired_delta

__all__ = ['summarize', 'markdown', 'figure']


def _known_mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _stats(xs: Sequence[float]) -> dict:
    mu, sd = mean_std(xs)
    return dict(mean=mu, std=sd)


def summarize(results: Dict[str, Dict[int, dict]], methods: Dict[str, List[str]], seeds: List[int],
              baseline: str, metric: str, setup: List[str]) -> dict:
    """The report's numbers (compare.json): per method (in order) its per-seed values, mean ± std, the paired
    delta to ``baseline``, mean wall / CPU seconds per run, shot-group and DML-ensemble means."""
    base = {s: r['final'] for s, r in results[baseline].items()}
    out = dict(metric=metric, baseline=baseline, seeds=seeds, setup=setup, methods={})
    for m, margs in methods.items():
        rs = [results[m][s] for s in seeds if s in results[m]]
        vals = {r['seed']: r['final'] for r in rs}
        e = dict(args=margs, seeds=list(vals), values=list(vals.values()), n=len(vals),
                 **_stats(list(vals.values())),
                 delta=None if m == baseline else paired_delta(vals, base),
                 wall_s=_known_mean(r.get('wall_s') for r in rs), cpu_s=_known_mean(r.get('cpu_s') for r in rs),
                 resumed_seeds=[r['seed'] for r in rs if r.get('resumed_from_epoch')],
                 missing_seeds=[s for s in seeds if s not in vals])
        if rs and all('shots' in r for r in rs):
            e['shots'] = {g: _stats([r['shots'][g] for r in rs]) for g in SHOT_GROUPS}
        if rs and all('ensemble' in r for r in rs):
            e['ensemble'] = _stats([r['ensemble'] for r in rs])
        out['methods'][m] = e
    return out


def _ms(s: dict) -> str:
    if s['mean'] is None:
        return 'n/a'
    return f'{s["mean"]:.2f}' + (f' ± {s["std"]:.2f}' if s['std'] is not None else '')


def _sec(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{x:.0f}'


def _delta_cells(d: Optional[dict]):
    if d is None:
        return '(baseline)', ''
    if d['n'] == 0:
        return 'n/a', 'n/a'
    if d['ci95'] is None:
        return f'{d["mean"]:+.2f} (1 seed)', 'n/a'
    return (f'{d["mean"]:+.2f} [{d["ci95"][0]:+.2f}, {d["ci95"][1]:+.2f}]',
            'effect' if d['effect'] else 'no effect shown')


def _notes(e: dict) -> str:
    notes = []
    if 'ensemble' in e:
        notes.append(f'mean of the DML peers; ensemble {_ms(e["ensemble"])}')
    if e['resumed_seeds']:
        notes.append(f'resumed (seed {",".join(map(str, e["resumed_seeds"]))}): times of the resumed part')
    if e['missing_seeds']:
        notes.append(f'no result for seed {",".join(map(str, e["missing_seeds"]))}')
    return '; '.join(notes)


def markdown(summary: dict, failed: Sequence[dict] = ()) -> str:
    """compare.md: the method table (mean ± std, paired delta with its 95 % t-interval, times), shot groups
    when the runs report them, the method arguments and any missing or failed runs."""
    metric, base, ms = summary['metric'], summary['baseline'], summary['methods']
    lines = [f'# Method comparison: final `{metric}`', '',
             f'Training setup of every run: `{shlex.join(summary["setup"])}`; seeds '
             f'{", ".join(map(str, summary["seeds"]))}. Δ: the per-seed difference to the baseline `{base}` (same '
             f'seed), its mean and 95 % t-interval (df = n - 1); "effect" when the interval excludes 0.', '',
             f'| method | {metric} (mean ± std) | n | Δ vs {base}: mean [95 % CI] | effect | wall / run (s) | '
             f'CPU / run (s) | notes |', '|---|---|---|---|---|---|---|---|']
    for m, e in ms.items():
        delta, effect = _delta_cells(e['delta'])
        lines.append(f'| {m} | {_ms(e)} | {e["n"]} | {delta} | {effect} | {_sec(e["wall_s"])} | '
                     f'{_sec(e["cpu_s"])} | {_notes(e)} |')
    shots = {m: e['shots'] for m, e in ms.items() if 'shots' in e}
    if shots:
        lines += ['', 'Final top-1 (%) per shot group (training images per class: many > 100, medium, few <= 20):',
                  '', '| method | many | medium | few |', '|---|---|---|---|']
        lines += [f'| {m} | {" | ".join(_ms(s[g]) for g in SHOT_GROUPS)} |' for m, s in shots.items()]
    lines += ['', 'Method arguments: ' + '; '.join(f'`{m}`: ' + (f'`{shlex.join(e["args"])}`' if e['args'] else
                                                                  'none') for m, e in ms.items()) + '.']
    if failed:
        lines += ['', 'Failed runs (not kept; run the command again to retry them):', '']
        lines += [f'* {f["run"]}: {f["why"]}; log `{f["log"]}`; command `{f["command"]}`' for f in failed]
    return '\n'.join(lines) + '\n'


def _bars(ax, summary: dict, names: List[str]) -> None:
    """Final metric per method: bar = mean, error bar = std, dots = seeds; the baseline grey."""
    lo, hi = math.inf, -math.inf
    for i, m in enumerate(names):
        e = summary['methods'][m]
        ax.bar(i, e['mean'], yerr=e['std'] or 0, capsize=4, color='0.6' if m == summary['baseline'] else f'C{i}')
        ax.plot([i] * e['n'], e['values'], 'k.', ms=5)
        lo = min(lo, min(e['values']), e['mean'] - (e['std'] or 0))
        hi = max(hi, max(e['values']), e['mean'] + (e['std'] or 0))
    pad = 0.3 * (hi - lo) + 1
    ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=25, ha='right')
    ax.set_ylabel(f'final {summary["metric"]}: mean ± std, dots: seeds')
    ax.grid(axis='y', alpha=0.3)


def _curves(ax, summary: dict, results: Dict[str, Dict[int, dict]], names: List[str]) -> None:
    """The metric per epoch, averaged over seeds (epochs every seed evaluated)."""
    for i, m in enumerate(names):
        base = m == summary['baseline']
        seeds = [results[m][s]['curve'] for s in summary['methods'][m]['seeds']]
        epochs = [j for j in range(min(map(len, seeds))) if all(c[j] is not None for c in seeds)]
        ax.plot([j + 1 for j in epochs], [statistics.mean(c[j] for c in seeds) for j in epochs],
                color='0.6' if base else f'C{i}', ls='--' if base else '-', marker='.', label=m)
    ax.set_xlabel('epoch')
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f'{summary["metric"]}, mean over seeds')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def figure(summary: dict, results: Dict[str, Dict[int, dict]], path: Path) -> bool:
    """compare.png: final metric per method (bar: mean, error bar: std, dots: seeds; the baseline grey) and
    the metric per epoch averaged over seeds. False (one printed line) without matplotlib."""
    try:  # here, not at the top: matplotlib is optional (the `plot` extra) and only the figure needs it
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('compare: matplotlib is not installed, so no compare.png (pip install -e ".[plot]")', flush=True)
        return False
    names = [m for m, e in summary['methods'].items() if e['n']]
    if not names:
        return False
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(5 + 0.5 * len(names) + 5, 4))
    _bars(bars, summary, names)
    _curves(curves, summary, results, names)
    fig.suptitle(f'{len(summary["seeds"])} seed(s); grey: baseline {summary["baseline"]}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
