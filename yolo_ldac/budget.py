"""Compress to an accuracy budget: the largest ratio whose mAP stays within ``max_drop`` of the base.

Pure search logic (no torch, no Ultralytics): a :class:`Budget` says which mAP50-95 is good enough, and
:func:`search_ratio` finds the largest ratio on a monotone-ish curve ``point(ratio) -> mAP`` that meets it:

1. **bracket**: the ratios of the grid (``ratios=``) in increasing order, until the first that misses the budget
   (a curve that falls with the ratio misses at every larger one too, so they are not measured);
2. **bisect**: between the last grid ratio within the budget and the first beyond it, halve the bracket until it
   is at most ``tol`` wide; the chosen ratio is its lower end, the largest ratio measured within the budget.

The first grid ratio missing the budget means nothing searched meets it (``chosen`` is None); the last one
meeting it means the grid's end is chosen (the search does not extrapolate past what the user allowed).
The compressor (``max_drop=`` in compress and prune) feeds it one-step retention points
(:meth:`yolo_ldac.schedule.compressor.Compressor.retention_point`, ``compensate=lsq``, no training).

Example:
    >>> curve = {0.1: 0.50, 0.2: 0.50, 0.3: 0.49, 0.4: 0.46, 0.35: 0.485, 0.375: 0.47}
    >>> res = search_ratio(lambda r: curve[round(r, 4)], floor=0.48, grid=[0.1, 0.2, 0.3, 0.4], tol=0.03)
    >>> res.chosen, [p["ratio"] for p in res.points]
    (0.35, [0.1, 0.2, 0.3, 0.4, 0.35, 0.375])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

EPS = 1e-9


@dataclass(frozen=True)
class Budget:
    """How much val mAP50-95 a compressed model may lose: ``max_drop`` (a fraction of mAP: 0.01 = 1 point) and/or
    ``max_drop_rel`` (a fraction of the base's mAP); with both, the stricter.

    Example:
        >>> b = Budget(max_drop=0.01)
        >>> round(b.floor(0.30), 4), b.met(0.30, 0.2905), b.met(0.30, 0.289)
        (0.29, True, False)
        >>> round(Budget(max_drop=0.02, max_drop_rel=0.05).floor(0.30), 4)
        0.285
    """

    max_drop: float | None = None
    max_drop_rel: float | None = None

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.max_drop_rel is not None

    def floor(self, base: float) -> float:
        """The lowest mAP50-95 within the budget."""
        floors = []
        if self.max_drop is not None:
            floors.append(base - float(self.max_drop))
        if self.max_drop_rel is not None:
            floors.append(base * (1.0 - float(self.max_drop_rel)))
        return max(floors) if floors else float("-inf")

    def met(self, base: float, value: float | None) -> bool:
        return value is not None and float(value) >= self.floor(base) - EPS

    def describe(self) -> str:
        """``max_drop=0.01`` / ``max_drop_rel=0.05`` / both, as the user wrote them."""
        parts = [f"{k}={v:g}" for k, v in (("max_drop", self.max_drop), ("max_drop_rel", self.max_drop_rel))
                 if v is not None]
        return " ".join(parts) or "no budget"

    def floor_text(self, base: float) -> str:
        """``mAP50-95 >= 0.2960 (base 0.3060 - 1.00 points)``."""
        return f"mAP50-95 >= {self.floor(base):.4f} (base {base:.4f} - {100 * (base - self.floor(base)):.2f} points)"


@dataclass
class SearchResult:
    """The points measured (in order), the chosen ratio (None: nothing meets the budget) and why."""

    points: list[dict] = field(default_factory=list)  # {"ratio", "map50_95", "within", "stage", ...}
    chosen: float | None = None
    bracket: tuple[float | None, float | None] = (None, None)  # (largest within, smallest beyond) measured
    reason: str = ""

    @property
    def best(self) -> dict | None:
        """The chosen point, or when nothing meets the budget the point with the highest mAP (the least loss)."""
        if not self.points:
            return None
        if self.chosen is not None:
            return next(p for p in self.points if p["ratio"] == self.chosen)
        return max(self.points, key=lambda p: (p["map50_95"], -p["ratio"]))

    def as_dict(self) -> dict:
        return {"points": self.points, "chosen": self.chosen, "bracket": list(self.bracket), "reason": self.reason}


def _map_of(value) -> tuple[float, dict]:
    """A point's mAP50-95 and its extra fields, from a number or a dict with ``map50_95``."""
    if isinstance(value, dict):
        extra = {k: v for k, v in value.items() if k not in ("ratio", "map50_95", "model")}
        return float(value["map50_95"]), extra
    return float(value), {}


def search_ratio(point: Callable[[float], object], floor: float, grid: list[float], tol: float = 0.02,
                 max_bisect: int = 12) -> SearchResult:
    """The largest ratio with ``point(ratio) >= floor`` (module docstring): scan ``grid`` upwards to the first
    miss, then bisect the bracket to ``tol``. ``point`` returns a mAP or a dict with ``map50_95`` (kept in the
    points). Ratios are rounded to 4 decimals. At most ``max_bisect`` bisection points are measured.
    """
    grid = sorted({round(float(r), 4) for r in grid})
    if not grid:
        raise ValueError("search_ratio needs at least one ratio in the grid")
    res = SearchResult()

    def measure(r: float, stage: str) -> bool:
        m, extra = _map_of(point(r))
        ok = m >= floor - EPS
        res.points.append({"ratio": r, "map50_95": m, "within": ok, "stage": stage, **extra})
        return ok

    good, bad = None, None
    for r in grid:
        if measure(r, "bracket"):
            good = r
        else:
            bad = r
            break
    if good is None:
        res.bracket = (None, grid[0])
        res.reason = (f"the smallest ratio searched ({grid[0]:g}) already misses the budget "
                      f"(mAP50-95 {res.points[0]['map50_95']:.4f} < {floor:.4f})")
        return res
    if bad is None:
        res.chosen, res.bracket = good, (good, None)
        res.reason = (f"every ratio searched is within the budget: the largest, {good:g}, is chosen (the search "
                      "stops at the last of ratios=; give larger ones to search further)")
        return res
    n = 0
    while bad - good > tol + EPS and n < max_bisect:
        mid = round((good + bad) / 2, 4)
        if mid in (good, bad):
            break
        if measure(mid, "bisect"):
            good = mid
        else:
            bad = mid
        n += 1
    res.chosen, res.bracket = good, (good, bad)
    res.reason = (f"{good:g} is the largest ratio measured within the budget; {bad:g} misses it "
                  f"(bracket {bad - good:.4f} wide, search_tol {tol:g})")
    return res


def nothing_meets_message(budget: Budget, base: float, best: dict | None, target: str = "flops",
                          what: str = "one-step retention points (lsq, no training)",
                          lead: str = "nothing searched meets the budget") -> str:
    """The one line a run ends with when no point meets the budget, naming the best point found.

    Example:
        >>> nothing_meets_message(Budget(max_drop=0.0), 0.306, {"ratio": 0.5, "reached_ratio": 0.502,
        ...                       "map50_95": 0.281})  # doctest: +NORMALIZE_WHITESPACE
        'max_drop=0: nothing searched meets the budget (mAP50-95 >= 0.3060 (base 0.3060 - 0.00 points)); the best
        point found is ratio 0.5 (50.2 % of flops removed) with mAP50-95 0.2810 (-2.50 points), by one-step
        retention points (lsq, no training); allow a larger drop, or give smaller ratios in ratios='
    """
    line = f"{budget.describe()}: {lead} ({budget.floor_text(base)})"
    if best is not None:
        reached = best.get("reached_ratio", best["ratio"])
        line += (f"; the best point found is ratio {best['ratio']:g} ({100 * reached:.1f} % of {target} removed) "
                 f"with mAP50-95 {best['map50_95']:.4f} ({100 * (best['map50_95'] - base):+.2f} points), by {what}")
    return line + "; allow a larger drop, or give smaller ratios in ratios="


__all__ = ["Budget", "SearchResult", "nothing_meets_message", "search_ratio"]
