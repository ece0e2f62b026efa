"""The run's ``summary.csv`` (one row per epoch, columns may grow on resume) and its ``summary.png`` plot."""
import csv
import io
import os
from collections import OrderedDict
from typing import Any, Dict

from timm_mixplug.utils.checkpoint import atomic_write_bytes

__all__ = ['write_summary_row', 'plot_summary']


def write_summary_row(path: str, row: Dict[str, Any]) -> None:
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    header = None
    if not new:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
    if header is not None and header != list(row.keys()):  # columns changed (e.g. resumed with --model-ema)
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
        rows.append(row)
        keys = list(OrderedDict.fromkeys([k for r in rows for k in r.keys()]))
        buf = io.StringIO(newline='')
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(path, buf.getvalue().encode())
        return
    with open(path, 'a', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(row.keys()))
        if new:
            w.writeheader()
        w.writerow(row)


def plot_summary(csv_path: str, png_path: str) -> bool:
    """Loss / accuracy / lr curves from summary.csv as a PNG; False if matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(csv_path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False

    def col(k):
        return [float(r[k]) if r.get(k) not in (None, '') else float('nan') for r in rows]

    ep = col('epoch')
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k in ('train_loss', 'eval_loss', 'ema_eval_loss'):
        if k in rows[0]:
            axes[0].plot(ep, col(k), marker='.', label=k)
    axes[0].set_title('loss')
    for k in ('eval_top1', 'eval_top5', 'ema_eval_top1'):
        if k in rows[0]:
            axes[1].plot(ep, col(k), marker='.', label=k)
    axes[1].set_title('accuracy (%)')
    if 'lr' in rows[0]:
        axes[2].plot(ep, col('lr'), marker='.', label='lr')
    axes[2].set_title('learning rate')
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format='png')
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
    return True
