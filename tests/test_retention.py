"""benchmarks/retention.py on a tiny model: one-shot points reach their FLOPs ratio and are monotone in it, are read
back instead of redone, and refuse other settings. A few seconds on one CPU core."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import load_script

pytestmark = pytest.mark.slow  # prunes and validates

TINY = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"
RATIOS = (0.1, 0.3, 0.5)


def test_retention_points_monotone_and_resumable(tmp_path):
    from yolo_ldac.data import make_shapes_dataset

    retention = load_script("benchmarks/retention.py")
    data = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=2, imgsz=64, seed=0)
    out = tmp_path / "retention"
    kw = dict(ratios=RATIOS, variants=("mean",), out=out, verbose=False, imgsz=64, calib_batches=1, calib_batch=2)
    torch.manual_seed(0)
    base, recs = retention.retention_curves(TINY, data, ["l2"], **kw)
    assert [r["status"] for r in recs] == ["finished"] * len(RATIOS)
    assert [r["ratio"] for r in recs] == list(RATIOS)
    for r in recs:
        assert abs(r["reached_ratio"] - r["ratio"]) <= 0.011, r
    flops = [base["flops_g"]] + [r["flops_g"] for r in recs]
    params = [base["params_m"]] + [r["params_m"] for r in recs]
    assert all(a > b for a, b in zip(flops, flops[1:])), flops  # more removed, fewer FLOPs: strictly
    assert all(a >= b for a, b in zip(params, params[1:])), params  # one global ranking: each cut contains the last
    assert (out / "retention.md").is_file() and (out / "retention.png").is_file()

    files = sorted(out.glob("l2__mean__r*.json"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    torch.manual_seed(0)
    _, again = retention.retention_curves(TINY, data, ["l2"], **kw)
    assert [f.stat().st_mtime_ns for f in files] == mtimes and again == recs  # read back, not redone

    with pytest.raises(RuntimeError, match="other settings"):
        retention.retention_curves(TINY, data, ["l2"], **dict(kw, calib_batch=4))
