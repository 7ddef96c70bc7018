"""benchmarks/grid.py: every method trains the same epochs (and so the same optimizer steps) from the same base."""

from __future__ import annotations

import argparse

from helpers import load_script


def load_grid():
    return load_script("benchmarks/grid.py")


def test_equal_epochs_and_settings_keys():
    grid = load_grid()
    args = argparse.Namespace(imgsz=160, batch=16, warmup_epochs=1.0, device="cpu", calib=4, epochs=24, rounds=4,
                              epochs_per_round=2, lr_scale=0.25)
    plain = grid.run_settings(args, "group_fisher", 0.5, 0)
    assert plain["lr_scale"] == 0.25 and "lr_scale" not in grid.run_settings(
        argparse.Namespace(**{**vars(args), "lr_scale": 1.0}), "group_fisher", 0.5, 0)  # 1: the keys of older runs
    pushed = grid.run_settings(args, "ldac:push=fade", 0.5, 0)
    dense = grid.run_settings(args, "dense", 0.5, 0)
    assert plain["nbs"] == plain["batch"] == 16  # one optimizer step per batch
    assert plain["finetune_epochs"] + 3 * 2 == pushed["finetune_epochs"] + 4 * 2 == dense["epochs"] == 24
    assert pushed["resolved"]["parts"] == {"criterion": "ldac", "push": "fade", "compensate": "lsq"}
    assert grid.parse_method("ldac:push=fade:fade_end=0.25") == ("ldac", {"push": "fade", "fade_end": 0.25})
    assert grid.run_key(plain, "b.pt", "d.yaml") != grid.run_key(pushed, "b.pt", "d.yaml")


def test_plateau_evidence_on_hand_set_curves():
    """The base's plateau rule (issue 11) on curves whose answers are known: a flat end passes, a lone early spike
    fails the rule's letter but not its moving-average reading, a rising curve is flagged."""
    base = load_script("benchmarks/retention_base.py")

    def curve(maps):
        return [{"epoch": e, "metrics/mAP50-95(B)": m} for e, m in enumerate(maps, 1)]

    flat = base.plateau_evidence(curve([0.10, 0.15, 0.18, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21]))
    assert flat["rule_met"] and flat["plateau_robust"] and not flat["rising"]
    assert flat["mean_last_5"] == 0.206 and flat["best_map50_95"] == 0.21
    spike = base.plateau_evidence(curve([0.10, 0.24, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21, 0.20, 0.21]))
    assert spike["best_epoch"] == 2 and not spike["rule_met"]  # 0.206 < 0.24 - 0.01
    assert spike["rule_met_moving_average"] and spike["plateau_robust"]
    rising = base.plateau_evidence(curve([0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19]))
    assert rising["rising"] and not rising["plateau_robust"] and not rising["rule_met"]


def test_run_key_does_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    """A grid started with a relative --base and one started with the absolute path read the same runs back."""
    grid = load_grid()
    (tmp_path / "b.pt").write_bytes(b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.yaml").write_text("names: [a]\n")
    monkeypatch.chdir(tmp_path)
    rel = grid.parse_args(["--base", "b.pt", "--data", "d/data.yaml", "--lr-scale", "0.25"])
    absolute = grid.parse_args(["--base", str(tmp_path / "b.pt"), "--data", str(tmp_path / "d" / "data.yaml"),
                                "--lr-scale", "0.25"])
    assert rel.base == absolute.base == tmp_path / "b.pt" and rel.out == absolute.out
    assert grid.plan_grid(rel)[0].key == grid.plan_grid(absolute)[0].key


def test_base_record_prefers_the_grids_own_base_over_a_same_named_one(tmp_path):
    """Bases retrained at the same path share a file name: the grid's own record, then the exact path, wins."""
    import json

    grid = load_grid()
    curve = [{"epoch": 1, "metrics/mAP50-95(B)": 0.1}]
    name = "yolo11n-composite400-e50.pt"
    own = tmp_path / "base-composite.json"
    own.write_text(json.dumps({"weights": f"/elsewhere/{name}", "val_curve": curve, "date": "2000-01-01"}))
    path, rec = grid.base_record(f"/work/main/runs/base/{name}", (tmp_path,))
    assert path == own.resolve()
    other = grid.base_record(f"/nowhere/{name}")  # the repository's own records: some record of that name, or none
    assert other is None or other[0] != own.resolve()
