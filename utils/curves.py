"""Training curves: the per-epoch losses of the trainer's `log.txt`, read back and drawn as a PNG.

The trainer writes one line per epoch (`train.py`):

    00000003) perceptual - 41.20193; equivariance_value - 0.31456; warp_loss - 3.01222 | 212.4s, data wait 1.2s

`read_loss_log` turns that file into {loss name: [(epoch, value), ...]}; `plot_curves` draws one
panel per loss with a line per run (e.g. the pretrained model's long run beside a short one).
"""
from __future__ import annotations

import os
import re
from typing import Mapping

LINE = re.compile(r"^(\d+)\)\s+(.*?)(?:\s+\|.*)?$")
TERM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+-\s+([-+0-9.eE]+|nan|inf)\s*$")

Curves = dict[str, list[tuple[int, float]]]


def parse_loss_lines(lines) -> Curves:
    """{loss: [(epoch, value)]} from trainer log lines; lines that are not epoch lines are skipped."""
    curves: Curves = {}
    for line in lines:
        match = LINE.match(line.strip())
        if not match:
            continue
        epoch = int(match.group(1))
        for term in match.group(2).split(";"):
            named = TERM.match(term)
            if named:
                curves.setdefault(named.group(1), []).append((epoch, float(named.group(2))))
    return curves


def read_loss_log(path: str) -> Curves:
    """{loss: [(epoch, value)]} from a trainer `log.txt` (see the module docstring)."""
    with open(path, encoding="utf-8") as handle:
        return parse_loss_lines(handle)


def plot_curves(runs: Mapping[str, Curves], path: str, title: str = "training losses per epoch") -> str:
    """Draw every loss of every run (one panel per loss, one line per run) into the PNG `path`; returns it."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    from utils.io import atomic_write

    names = sorted({name for curves in runs.values() for name in curves})
    if not names:
        raise ValueError("no losses to plot: the logs hold no epoch lines")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, curves in runs.items():
            points = curves.get(name)
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return path


__all__ = ["parse_loss_lines", "read_loss_log", "plot_curves"]
