"""max_drop= / max_drop_rel=: the bracket-and-bisect search on hand-made curves (exact, milliseconds), the run's
search on a tiny model, the step back to an earlier phase checkpoint, and the one-line messages.

The tiny model's random weights score mAP 0 on the shapes data, so the runs below replace the validator by a
curve of the parameters removed (``mAP = 0.5 - 0.2 x removed``), in these tests only; with ``validate_final``
forced to miss, the step back is exercised."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (at collection: its log handler binds sys.stdout first)

from yolo_ldac.budget import Budget, nothing_meets_message, search_ratio
from yolo_ldac.cfg import get_cfg
from yolo_ldac.errors import LDACError

TINY = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"
GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def linear(slope: float, base: float = 0.5):
    calls = []

    def point(r):
        calls.append(r)
        return base - slope * r

    return point, calls


# ----------------------------------------------------------------------------------------------- the search
def test_threshold_on_a_grid_ratio():
    point, calls = linear(0.1)  # floor 0.47: the curve crosses it at 0.3 exactly
    res = search_ratio(point, floor=0.47, grid=GRID, tol=0.02)
    assert res.chosen == 0.3 and res.bracket == (0.3, 0.3125)
    assert calls == [0.1, 0.2, 0.3, 0.4, 0.35, 0.325, 0.3125]  # the grid up to the first miss, then halving
    assert [p["stage"] for p in res.points] == ["bracket"] * 4 + ["bisect"] * 3
    assert [p["within"] for p in res.points] == [True, True, True, False, False, False, False]


def test_threshold_between_grid_ratios():
    point, calls = linear(0.1)  # crosses 0.465 at 0.35
    res = search_ratio(point, floor=0.465, grid=GRID, tol=0.02)
    assert res.chosen == 0.35 and res.bracket == (0.35, 0.3625)
    assert calls == [0.1, 0.2, 0.3, 0.4, 0.35, 0.375, 0.3625]
    assert "0.35 is the largest ratio measured within the budget; 0.3625 misses it" in res.reason


def test_nothing_meets_the_budget():
    point, calls = linear(0.1)
    res = search_ratio(point, floor=0.5, grid=[0.5, 0.6], tol=0.02)  # max_drop=0 at a large minimum ratio
    assert res.chosen is None and calls == [0.5] and res.bracket == (None, 0.5)
    assert res.best["ratio"] == 0.5 and "the smallest ratio searched (0.5) already misses" in res.reason


def test_everything_meets_the_budget():
    point, calls = linear(0.0)
    res = search_ratio(point, floor=0.4, grid=GRID, tol=0.02)
    assert res.chosen == 0.6 and calls == GRID and res.bracket == (0.6, None)


def test_non_monotone_curve_stops_at_the_first_miss():
    values = {0.1: 0.50, 0.2: 0.40, 0.3: 0.50, 0.15: 0.49, 0.175: 0.45, 0.1625: 0.48}
    res = search_ratio(lambda r: values[r], floor=0.48, grid=[0.1, 0.2, 0.3], tol=0.02)
    assert res.chosen == 0.1625 and [p["ratio"] for p in res.points] == [0.1, 0.2, 0.15, 0.175, 0.1625]


def test_dict_points_keep_their_fields():
    res = search_ratio(lambda r: {"ratio": r, "map50_95": 0.5 - r, "reached_ratio": r + 0.001, "model": object()},
                       floor=0.25, grid=[0.1, 0.2, 0.3], tol=0.05)
    assert res.chosen == 0.25
    assert all("model" not in p and p["reached_ratio"] == round(p["ratio"] + 0.001, 6) for p in res.points)


def test_chosen_within_one_step_of_the_largest_within_on_random_monotone_curves():
    rng = random.Random(0)
    for _ in range(200):
        knots = sorted((rng.random() for _ in range(5)), reverse=True)

        def curve(r, knots=knots):  # piecewise linear, non-increasing on [0, 1]
            x = r * 4
            i = min(int(x), 3)
            return knots[i] + (knots[i + 1] - knots[i]) * (x - i)

        floor = rng.uniform(knots[-1], knots[0])
        tol = rng.choice([0.01, 0.02, 0.05])
        res = search_ratio(curve, floor=floor, grid=GRID, tol=tol)
        fine = [r / 1000 for r in range(100, 601)]
        largest = max((r for r in fine if curve(r) >= floor), default=None)
        if largest is None:
            assert res.chosen is None
            continue
        assert res.chosen is not None and curve(res.chosen) >= floor - 1e-9
        assert res.chosen >= largest - tol - 1e-3, (res.chosen, largest, tol)
        assert len(res.points) <= len(GRID) + 12


def test_budget_floor_and_message():
    assert Budget(max_drop=0.01).floor(0.3) == pytest.approx(0.29)
    assert Budget(max_drop_rel=0.1).floor(0.3) == pytest.approx(0.27)
    assert Budget(max_drop=0.05, max_drop_rel=0.1).floor(0.3) == pytest.approx(0.27)  # the stricter
    assert not Budget().active and Budget(max_drop=0.0).active
    msg = nothing_meets_message(Budget(max_drop=0.0), 0.306, {"ratio": 0.5, "reached_ratio": 0.502, "map50_95": 0.281})
    assert msg == ("max_drop=0: nothing searched meets the budget (mAP50-95 >= 0.3060 (base 0.3060 - 0.00 points)); "
                   "the best point found is ratio 0.5 (50.2 % of flops removed) with mAP50-95 0.2810 (-2.50 points), "
                   "by one-step retention points (lsq, no training); allow a larger drop, or give smaller ratios in "
                   "ratios=")
    assert "\n" not in msg


@pytest.mark.parametrize("overrides, fragment", [
    ({"max_drop": -0.1}, "max_drop must be a fraction in [0, 1)"),
    ({"max_drop": 1}, "max_drop must be a fraction in [0, 1)"),
    ({"max_drop_rel": "x"}, "max_drop_rel must be a fraction"),
    ({"max_drop": 0.01, "speedup": 2.0}, "speedup= and latency_ms= set it"),
    ({"max_drop": 0.01, "ratios": "0.2,x"}, "'x' is not a number"),
    ({"search_tol": 0}, "search_tol must be in (0, 0.5]"),
])
def test_bad_budget_keys(overrides, fragment):
    with pytest.raises(LDACError) as e:
        get_cfg({"data": "d.yaml", **overrides}, mode="compress")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_budget_needs_data_and_a_compression_mode():
    with pytest.raises(LDACError, match="max_drop= needs data="):
        get_cfg({"max_drop": 0.01}, mode="prune")
    with pytest.raises(LDACError, match="apply to compress and prune, not to finetune"):
        get_cfg({"max_drop": 0.01, "data": "d.yaml"}, mode="finetune")


# ----------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from yolo_ldac.data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("budget-shapes"), n_train=4, n_val=2, imgsz=64, seed=0)


def fake_curve(monkeypatch, missing_phases=()):
    """Compressor.validate -> mAP 0.5 - 0.2 x (fraction of the dense parameters removed); 0 in ``missing_phases``."""
    from yolo_ldac.schedule.compressor import Compressor

    calls = []

    def validate(self, model):
        dense = self.state.record["dense_complexity"]["params"] if self.state is not None else None
        n = sum(p.numel() for p in model.parameters())
        removed = 0.0 if dense is None else 1.0 - n / dense
        m = 0.0 if self.phase in missing_phases else round(0.5 - 0.2 * removed, 6)
        calls.append((self.phase, round(removed, 4), m))
        return {"map50_95": m, "map50": m}

    monkeypatch.setattr(Compressor, "validate", validate)
    return calls


FAST = dict(imgsz=64, batch=2, calib_batches=1, plots=False, method="l2", ratios="0.1,0.3,0.5,0.7")


@pytest.mark.slow
def test_prune_to_a_budget(tiny_data, tmp_path, monkeypatch):
    from yolo_ldac import YOLOLDAC

    calls = fake_curve(monkeypatch)
    res = YOLOLDAC(str(TINY)).prune(data=str(tiny_data), max_drop=0.04, rounds=1, project=str(tmp_path), **FAST)
    b = res.report["budget"]
    assert b["floor_map50_95"] == pytest.approx(0.46) and b["met"] is True and b["step_back"] is None
    pts = b["search"]["points"]
    assert [p["stage"] for p in pts][:2] == ["bracket", "bracket"]
    chosen = b["ratio"]
    assert chosen == b["search"]["chosen"] and res.report["ratio"] == chosen
    within = [p["ratio"] for p in pts if p["within"]]
    beyond = [p["ratio"] for p in pts if not p["within"]]
    assert chosen == max(within) and min(beyond) - chosen <= 0.02 + 1e-9  # bisected to search_tol
    assert all(p["map50_95"] >= 0.46 for p in pts if p["within"])
    # the finished model is the chosen point (one step, the same channels): within the budget
    assert res.after["map50_95"] >= 0.46 and abs(res.removed["flops_pct"] / 100 - chosen) <= 0.02
    md = (res.run_dir / "report.md").read_text()
    assert "## Budget" in md and f"Chosen: ratio **{chosen:g}**" in md
    assert any(c[0] == "search" for c in calls)


@pytest.mark.slow
def test_unmeetable_budget_is_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    from yolo_ldac.cli import main

    fake_curve(monkeypatch)
    argv = ["prune", f"model={TINY}", f"data={tiny_data}", "max_drop=0", "ratios=0.5,0.6", "rounds=1", "method=l2",
            "imgsz=64", "batch=2", "calib_batches=1", "plots=False", f"project={tmp_path}", "name=u"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("yolo-ldac: error: max_drop=0: nothing searched meets the budget (mAP50-95 >= 0.5000")
    assert "the best point found is ratio 0.5 (" in err and "Traceback" not in err
    state = json.loads((tmp_path / "u" / "state.json").read_text())
    assert state["status"] == "failed" and state["record"]["budget"]["ratio"] is None
    assert not (tmp_path / "u" / "weights" / "best.pt").exists()


@pytest.mark.slow
def test_step_back_from_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    """The finished model (and the round-2 validations) forced to miss: the run steps back to round 1's step
    checkpoint, fine-tunes it for at most half the run's epochs and keeps it; nothing is retrained from the base."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.schedule.compressor import Compressor

    calls = fake_curve(monkeypatch, missing_phases=("validate_final", "round2.step"))
    trained = []
    orig = Compressor._train

    def spy(self, model, epochs, name, final):
        trained.append((name, epochs, sum(p.numel() for p in model.parameters())))
        return orig(self, model, epochs, name, final)

    monkeypatch.setattr(Compressor, "_train", spy)
    res = YOLOLDAC(str(TINY)).compress(data=str(tiny_data), max_drop=0.04, rounds=2, epochs_per_round=1,
                                       finetune_epochs=2, project=str(tmp_path), name="sb", **FAST)
    b = res.report["budget"]
    step = b["step_back"]
    assert b["finished_map50_95"] == 0.0 and b["met"] is True
    assert step["from"]["phase"] == "round1.step" and step["kept"] == "trained"
    assert [t["phase"] for t in step["tried"]] == ["round2.step", "round2.push", "round1.step"]
    assert step["epochs"] == 1  # min(finetune_epochs=2, (1 + 2) // 2)
    names = [t[0] for t in trained]
    assert names == ["round2", "finetune", "step_back"]  # no second run from the base
    round1 = res.report["rounds"][0]
    assert trained[-1][2] == trained[0][2]  # the step back trains the round-1 model (round 2's push trained it too)
    assert abs(res.removed["flops_pct"] / 100 - round1["ratio_reached"]) <= 0.01
    steps = b["optimizer_steps"]
    assert steps["step_back"] > 0 and steps["x_fixed_run"] <= 1.5
    assert res.report["optimizer_steps"]["total"] == steps["run"] + steps["step_back"]
    assert res.best.is_file() and not (res.run_dir / "phases").exists()
    assert not (res.run_dir / "step_back" / "weights").exists()  # cleaned up like the other training phases
    assert ("validate_final", pytest.approx(0.0), 0.0) not in [(c[0], 0.0, c[2]) for c in calls if c[2] > 0]
    md = (res.run_dir / "report.md").read_text()
    assert "Step back to `round1.step`" in md and "MISSED the budget" in md


@pytest.mark.slow
def test_resume_after_the_search_keeps_its_ratio(tiny_data, tmp_path, monkeypatch):
    from yolo_ldac import YOLOLDAC

    calls = fake_curve(monkeypatch)
    runner = YOLOLDAC(str(TINY))

    def stop_after_search(comp):
        if comp.phase == "search":
            comp.stop = True

    runner.add_callback("on_phase_end", stop_after_search)
    assert runner.prune(data=str(tiny_data), max_drop=0.04, rounds=1, project=str(tmp_path), name="r", **FAST) is None
    state = json.loads((tmp_path / "r" / "state.json").read_text())
    assert state["status"] == "stopped" and state["done"][-1]["name"] == "search"
    chosen = state["record"]["budget"]["ratio"]
    n_search = sum(1 for c in calls if c[0] == "search")
    res = YOLOLDAC.resume(tmp_path / "r")
    assert sum(1 for c in calls if c[0] == "search") == n_search  # not searched again
    assert res.report["ratio"] == chosen and res.report["budget"]["met"] is True
    assert abs(res.removed["flops_pct"] / 100 - chosen) <= 0.02


@pytest.mark.slow
def test_budget_with_target_latency_searches_the_latency_ratio(tiny_data, tmp_path, monkeypatch):
    """target=latency (onnxruntime's table on this machine, built once for the tiny model at 64 px): the searched
    ratio is of predicted latency, and the run prunes to it."""
    pytest.importorskip("onnxruntime")
    from yolo_ldac import YOLOLDAC

    monkeypatch.setenv("YOLO_LDAC_HOME", str(tmp_path / "home"))
    fake_curve(monkeypatch)
    res = YOLOLDAC(str(TINY)).prune(data=str(tiny_data), max_drop=0.1, rounds=1, target="latency",
                                    project=str(tmp_path), **dict(FAST, ratios="0.05,0.1,0.2,0.3"))
    b = res.report["budget"]
    assert b["target"] == "latency" and b["reachable"] is None and b["met"] is True
    assert all(p.get("latency_ms") for p in b["search"]["points"])
    assert abs(res.report["rounds"][-1]["ratio_reached"] - b["ratio"]) <= 0.02


@pytest.mark.slow
def test_finished_model_and_every_checkpoint_missing_is_one_line(tiny_data, tmp_path, monkeypatch):
    from yolo_ldac import YOLOLDAC

    fake_curve(monkeypatch, missing_phases=("validate_final", "round1.step", "round2.step"))
    with pytest.raises(LDACError) as e:
        YOLOLDAC(str(TINY)).prune(data=str(tiny_data), max_drop=0.04, rounds=2, project=str(tmp_path), name="m",
                                  **FAST)
    msg = str(e.value)
    assert msg.startswith("max_drop=0.04: the finished model misses the budget, and so does every phase checkpoint "
                          "of the run (mAP50-95 >= 0.4600") and "\n" not in msg
    assert "by the run's phase checkpoints and the finished model" in msg
    state = json.loads((tmp_path / "m" / "state.json").read_text())
    assert state["status"] == "failed"
    assert [t["phase"] for t in state["record"]["budget"]["step_back"]["tried"]] == ["round2.step", "round1.step"]


def test_torchvision_models_refuse_a_budget(tmp_path):
    from yolo_ldac import YOLOLDAC

    runner = YOLOLDAC("fasterrcnn_mobilenet_v3_large_fpn")
    with pytest.raises(LDACError, match="not supported for torchvision models yet"):
        runner.compress(data=str(tmp_path / "d.yaml"), max_drop=0.01)
    with pytest.raises(LDACError, match="sweep mode is not supported for torchvision"):
        runner.sweep(data=str(tmp_path / "d.yaml"))


@pytest.mark.slow
def test_step_forward_from_a_finished_model_with_room(tiny_data, tmp_path, monkeypatch):
    """Training recovers 5 points here (a model that went through ``_train`` validates 0.05 higher, and so do
    the one-step points pruned from it): the search from the base stops where the untrained points leave the
    budget, the finished model has room, and the step forward searches from it, prunes further, fine-tunes for at
    most half the run's epochs and keeps the larger ratio; at most 1.5 x the optimizer steps of the run."""
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.schedule.compressor import Compressor

    fake_curve(monkeypatch)
    plain = Compressor.validate
    orig = Compressor._train
    trained = []

    def train(self, model, epochs, name, final):
        out = orig(self, model, epochs, name, final)
        out._fake_trained = True  # deep copies (the one-step points) keep it
        trained.append(name)
        return out

    def validate(self, model):
        m = plain(self, model)
        bonus = 0.05 if getattr(model, "_fake_trained", False) else 0.0
        return {k: round(v + bonus, 6) for k, v in m.items()}

    monkeypatch.setattr(Compressor, "_train", train)
    monkeypatch.setattr(Compressor, "validate", validate)
    res = YOLOLDAC(str(TINY)).compress(data=str(tiny_data), max_drop=0.04, rounds=2, epochs_per_round=1,
                                       finetune_epochs=2, project=str(tmp_path), name="sf", **FAST)
    b = res.report["budget"]
    fwd = b["step_forward"]
    assert b["step_back"] is None and fwd["kept"] == "step_forward" and b["met"] is True
    assert fwd["from_ratio"] <= b["ratio"] + 0.02 < fwd["reached_ratio"]
    assert abs(res.removed["flops_pct"] / 100 - fwd["reached_ratio"]) <= 0.01 and res.after["map50_95"] >= 0.46
    assert trained == ["round2", "finetune", "step_forward"] and fwd["epochs"] == 1
    steps = b["optimizer_steps"]
    assert steps["step_forward"] > 0 and steps["x_fixed_run"] <= 1.5
    assert res.report["rounds"][-1]["step_forward"] is True
    assert not (res.run_dir / "step_forward" / "weights").exists()
    assert "Step forward: searched from the finished model" in (res.run_dir / "report.md").read_text()
