"""benchmarks/cost_model.py: its log-log fit and its report (synthetic records; the measurements themselves are the
benchmark's business, the engine's equality with a trace per group is tested in test_pruning.py)."""

from __future__ import annotations

import math

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def cost():
    return load_script("benchmarks/cost_model.py")


def test_loglog_slope_recovers_power_law(cost):
    assert cost.loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    assert cost.loglog_slope([10, 100, 1000], [5, 50, 500]) == pytest.approx(1.0)
    assert math.isnan(cost.loglog_slope([4, 4], [1, 2]))


def _record(same: bool) -> dict:
    models = []
    for k, (name, groups, nodes, gflops) in enumerate(
            [("yolo11n", 66, 350, 6.5), ("yolo11s", 67, 350, 21.5), ("yolo11x", 128, 662, 194.9)]):
        prune = {"seconds": 0.3 * (k + 1), "wall_seconds": 0.5 * (k + 1), "peak_rss_mb": 600.0, "groups_pruned": groups,
                 "groups_prunable": groups, "graph_trace_s": 0.03 * (k + 1), "graph_nodes": nodes,
                 "gflops_640": gflops, "params": 1e6 * (k + 1), "state_sha256": "a"}
        retrace = dict(prune, seconds=3.0 * (k + 1), wall_seconds=6.0 * (k + 1),
                       state_sha256="a" if same or k < 2 else "b")
        models.append({"model": name, "prune": prune, "prune_retrace": retrace,
                       "trace": {"seconds": 1.0 * (k + 1), "peak_rss_mb": 1000.0, "images": 8},
                       "push": {"seconds": 0.4 * (k + 1), "peak_rss_mb": 1000.0}})
    return {"date": "today", "machine": {"cpu": "test cpu", "cores": 2, "cores_usable": 1},
            "settings": {"imgsz": 320, "trace_images": 8, "batch": 4, "repeats": 3, "calib_model": "n", "threads": 1},
            "models": models,
            "calibration": [{"images": n, "seconds": 0.1 * n, "peak_rss_mb": 1000.0 + n} for n in (8, 16, 32)]}


def test_section_has_a_row_per_model_the_x_step_and_flags_differing_channels(cost, tmp_path):
    png = cost.ROOT / "benchmarks" / "results" / "cost" / "cost.png"
    body = cost.section(_record(same=True), png)
    rows = [ln for ln in body.splitlines() if ln.startswith("| yolo11")]
    assert len(rows) == 3 and all("| yes |" in r for r in rows)
    assert "YOLO11x, one 50 % prune step on one core: **0.9 s** CPU" in body
    assert "against calibration images: **1.00**" in body
    assert "| **no** |" in cost.section(_record(same=False), png)
    assert cost.plot(_record(same=True), tmp_path / "cost.png").stat().st_size > 1000
