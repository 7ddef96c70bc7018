"""LDAC plots: J per pyramid level per round, and a 2-D LDA projection of the neck samples before/after the push.

Uses matplotlib's Agg canvas directly (no pyplot), so it never changes the process-wide backend.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolo_ldac.ldac.stats import DiscriminantStats

LEVELS = ("P3", "P4", "P5")


def plot_objective(rounds: list[dict], path: str | Path) -> Path | None:
    """Line plot of ``J_per_level`` over the rounds of a report; None when the rounds carry no J."""
    rows = [r for r in rounds if r.get("J_per_level")]
    if not rows:
        return None
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for lvl in range(len(rows[0]["J_per_level"])):
        ax.plot([r["round"] for r in rows], [r["J_per_level"][lvl] for r in rows], marker="o",
                label=LEVELS[lvl] if lvl < len(LEVELS) else f"level {lvl}")
    ax.set_xlabel("round (traced before its prune step)")
    ax.set_ylabel("J = tr((Sw + rho I)^-1 Sb)")
    ax.set_title("Discriminant objective per pyramid level")
    ax.legend()
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return Path(path)


def project_2d(x: torch.Tensor, y: torch.Tensor, num_classes: int, rho: float = 0.1) -> torch.Tensor:
    """The samples projected on their two leading discriminant directions (one direction: second axis 0)."""
    st = DiscriminantStats(num_classes, x.shape[1])
    st.update(x.double(), y)
    _, w = st.directions(q=2, rho=rho)
    p = x.double() @ w
    if p.shape[1] < 2:
        p = torch.cat([p, torch.zeros(len(p), 2 - p.shape[1], dtype=p.dtype)], 1)
    return p.float()


def plot_projection(snapshots: list[tuple[str, torch.Tensor, torch.Tensor]], num_classes: int, path: str | Path,
                    names: dict | None = None) -> Path | None:
    """Scatter of the P3 samples of each snapshot ("before push", "after push") on their 2-D LDA projection."""
    snaps = [s for s in snapshots if len(s[2]) and int(torch.unique(s[2]).numel()) >= 2]
    if not snaps:
        return None
    fig = Figure(figsize=(4.5 * len(snaps), 4))
    for i, (label, x, y) in enumerate(snaps):
        ax = fig.add_subplot(1, len(snaps), i + 1)
        p = project_2d(x, y, num_classes)
        for c in torch.unique(y).tolist():
            m = y == c
            name = (names or {}).get(c, "background" if c == num_classes - 1 and names and c not in names else c)
            ax.scatter(p[m, 0], p[m, 1], s=8, alpha=0.7, label=str(name))
        ax.set_title(f"P3 samples, {label}")
        ax.set_xlabel("LD 1")
        ax.set_ylabel("LD 2")
        ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return Path(path)
