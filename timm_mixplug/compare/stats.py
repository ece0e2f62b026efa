"""The statistics of a method comparison: mean ± std over seeds and the paired per-seed difference to the
baseline with its two-sided 95 % Student-t interval (df = n - 1)."""
import math
import re
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ['t_critical', 't_quantile', 'mean_std', 'paired_delta', 'peer_values', 'metric_value']

# two-sided 95 % quantiles t_{0.975}(df) of Student's t for df = 1..30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t_critical(df: int) -> float:
    """t_{0.975}(df), the half-width factor of a two-sided 95 % interval: a table for df <= 30, beyond it the
    Cornish-Fisher expansion around the normal quantile (error < 1e-4)."""
    if df < 1:
        raise ValueError(f'df must be >= 1, got {df}')
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def _t_cdf_upper_half(t: float, df: int, steps: int = 4000) -> float:
    """P(0 <= T <= t) for Student's t with ``df`` degrees of freedom (Simpson's rule on the density)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = t / steps
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


def t_quantile(q: float, df: int) -> float:
    """The quantile t_q(df) of Student's t for 0.5 <= q < 1 (for example 1 - 0.05 / (2k): a two-sided
    Bonferroni interval over k comparisons), by bisection on the numerically integrated density."""
    if not 0.5 <= q < 1 or df < 1:
        raise ValueError(f'need 0.5 <= q < 1 and df >= 1, got q={q}, df={df}')
    lo, hi = 0.0, 1.0
    while 0.5 + _t_cdf_upper_half(hi, df) < q:
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + _t_cdf_upper_half(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


def mean_std(xs: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample std); std is None for one value, both None for none."""
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def paired_delta(values: Dict[int, float], base: Dict[int, float]) -> dict:
    """Per-seed differences ``values[s] - base[s]`` over the seeds both have: their mean, std, 95 % t-interval
    (df = n - 1) and whether it excludes 0 (``effect``; None below two seeds)."""
    seeds = [s for s in values if s in base]
    d = [values[s] - base[s] for s in seeds]
    mu, sd = mean_std(d)
    ci = t = effect = None
    if sd is not None:
        t = t_critical(len(d) - 1)
        half = t * sd / math.sqrt(len(d))
        ci = [mu - half, mu + half]
        effect = ci[0] > 0 or ci[1] < 0
    return dict(seeds=seeds, values=d, n=len(d), mean=mu, std=sd, t=t, ci95=ci, effect=effect)


def peer_values(row: Dict[str, float], metric: str) -> List[float]:
    """The DML peers' values of ``metric`` in a summary row: ``eval_peer<k>_<m>`` for ``eval_<m>`` (also under
    ``ema_``); empty for other tasks."""
    head, sep, tail = metric.rpartition('eval_')
    if not sep:
        return []
    peer = re.compile(re.escape(head) + r'eval_peer\d+_' + re.escape(tail))
    return [v for k, v in row.items() if peer.fullmatch(k)]


def metric_value(row: Dict[str, float], metric: str) -> Optional[float]:
    """``row[metric]``, except for DML, whose ``eval_<m>`` is the ensemble: the mean of the peers (as in
    the evidence tables). None if absent."""
    peers = peer_values(row, metric)
    return statistics.mean(peers) if peers else row.get(metric)
