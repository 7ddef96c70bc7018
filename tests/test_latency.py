"""Latency tables (yolo_ldac.latency): grids and their interpolation, the width staircase, the cache, target=latency
in the engine on a hand-set table, and the measured loop of speedup= on scripted timings."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError
from yolo_ldac.latency.model import LatencyModel, build_table
from yolo_ldac.latency.probe import conv_shapes
from yolo_ldac.latency.run import RunLatency
from yolo_ldac.latency.table import (TABLE_VERSION, LatencyTable, LayerGrid, cache_key, grid_widths, normalise_runtime,
                                     staircase_multiple)


# --------------------------------------------------------------------------------------------------- pure math
def test_grid_interpolates_bilinearly_and_clamps():
    g = LayerGrid(cin=[16, 32], cout=[16, 48], ms=[[1.0, 3.0], [2.0, 6.0]])
    assert g(16, 16) == 1.0 and g(32, 48) == 6.0
    assert g(24, 16) == pytest.approx(1.5)
    assert g(16, 32) == pytest.approx(2.0)
    assert g(24, 32) == pytest.approx((1.0 + 3.0 + 2.0 + 6.0) / 4)
    assert g(8, 8) == 1.0 and g(64, 64) == 6.0  # clamped at the edges
    dw = LayerGrid(cin=[16], cout=[16, 32], ms=[[1.0, 2.0]])  # a depthwise grid: one row
    assert dw(24, 24) == pytest.approx(1.5)


def test_grid_widths():
    assert grid_widths(64, 16, 6) == [16, 32, 48, 64]
    assert grid_widths(80, 16, 3) == [16, 48, 80]
    assert grid_widths(72, 16, 10) == [16, 32, 48, 64, 72]  # the dense width is always a point
    assert grid_widths(3, 16, 6) == [3]


@pytest.mark.parametrize("block", [8, 16, 32])
def test_staircase_multiple_finds_the_block_of_a_padded_runtime(block):
    widths = list(range(8, 136, 8))
    padded = [float(-(-w // block)) for w in widths]  # a runtime that pads every width to its block
    assert staircase_multiple(widths, padded) == block


def test_staircase_multiple_is_not_fooled_by_one_odd_width_or_noise():
    widths = list(range(8, 136, 8))
    ms = [float(-(-w // 16)) for w in widths]
    ms[0] = 0.5  # the smallest width runs a faster kernel: one exception
    ms[9] *= 1.02  # a 2 % timing wobble
    assert staircase_multiple(widths, ms) == 16
    linear = [w / 8 for w in widths]
    assert staircase_multiple(widths, linear) == 8


def test_normalise_runtime_messages():
    assert normalise_runtime("ORT", "FP32") == ("onnxruntime", "fp32")
    assert normalise_runtime("openvino", "int8") == ("openvino", "int8")
    with pytest.raises(LDACError, match="litert, ncnn and tensorrt are not measured yet"):
        normalise_runtime("litert", "fp32")
    with pytest.raises(LDACError, match="measured precisions are fp32"):
        normalise_runtime("onnxruntime", "int8")


def test_cache_key_changes_with_machine_setting_and_shapes():
    from yolo_ldac.latency.table import ConvShape

    a = ConvShape((3, 3), (1, 1), (1, 1), (1, 1), False, (40, 40), 64, 64)
    b = dataclasses.replace(a, cout=128)
    fp = {"cpu": "x", "runtime_version": "1.0"}
    base = cache_key(fp, [a], {"threads": 1})
    assert base == cache_key(fp, [a], {"threads": 1})
    assert base != cache_key({**fp, "runtime_version": "1.1"}, [a], {"threads": 1})
    assert base != cache_key(fp, [a], {"threads": 2})
    assert base != cache_key(fp, [a, b], {"threads": 1})


# --------------------------------------------------------------------------------------------- measured tables
class _Tiny(nn.Module):
    """Two 3x3 convolutions and a depthwise one: three shape classes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, 2, 1)
        self.b = nn.Conv2d(32, 32, 3, 1, 1)
        self.dw = nn.Conv2d(32, 32, 3, 1, 1, groups=32)

    def forward(self, x):
        return self.dw(self.b(self.a(x)))


def test_conv_shapes_keys_every_convolution():
    shapes = conv_shapes(_Tiny(), imgsz=32)
    assert set(shapes) == {"a", "b", "dw"}
    assert shapes["a"].hw == (32, 32) and shapes["b"].hw == (16, 16)
    assert shapes["dw"].depthwise and not shapes["b"].depthwise


@pytest.mark.slow
def test_table_is_measured_once_then_read_from_its_cache(tmp_path):
    model = _Tiny()
    kw = dict(runtime="onnxruntime", precision="fp32", imgsz=32, threads=1, multiple=16, points=3, runs=3,
              cache=tmp_path, progress=False)
    table, keys, cached = build_table(model, **kw)
    assert not cached and set(keys) == {"a", "b", "dw"} and len(table.grids) == 3
    grid_b = table.grids[keys["b"]]
    assert grid_b.cin == [16, 32] and grid_b.cout == [16, 32]
    assert all(v > 0 for row in grid_b.ms for v in row)
    files = list(tmp_path.glob("table-onnxruntime-fp32-32-t1-*.json"))
    assert len(files) == 1
    again, _, cached = build_table(model, **kw)
    assert cached and again.to_json()["grids"] == table.to_json()["grids"]
    # another setting is another table; a corrupt cache file is measured again, not trusted
    _, _, cached = build_table(model, **{**kw, "points": 2})
    assert not cached
    files[0].write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(files[0].read_text())
    _, _, cached = build_table(model, **kw)
    assert not cached and json.loads(files[0].read_text())["version"] == TABLE_VERSION


# ---------------------------------------------------------------------------------- target=latency in the engine
def _hand_set_latency_model(model, ms_per_8: dict[str, float]) -> LatencyModel:
    """A table where each named convolution costs ``ms_per_8[name]`` per 8 output channels (the others nothing)."""
    shapes = conv_shapes(model, 64)
    grids = {}
    for name, s in shapes.items():
        per = ms_per_8.get(name, 0.0)
        couts = list(range(8, s.cout + 1, 8)) or [s.cout]
        grids[s.key()] = LayerGrid(cin=[s.cin], cout=couts, ms=[[per * c / 8 for c in couts]])
    assert len(grids) == len(shapes), "every convolution of the test model needs its own shape class"
    table = LatencyTable("onnxruntime", "fp32", 64, 1, 8, {}, grids)
    return LatencyModel.of(table, {n: s.key() for n, s in shapes.items()}, dense_ms=100.0, dense=model)


class _Chain(nn.Module):
    """Two branches of the same input into one head: ``a`` (3x3, nine times ``b``'s FLOPs per channel) and ``b``
    (1x1)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, 1, 1)
        self.b = nn.Conv2d(3, 32, 1)
        self.head = nn.Conv2d(64, 4, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


class _Constant:
    """The same importance for every channel; with ``per_flop``, divided by the FLOPs one channel costs (as a
    ``normalize="flops"`` criterion such as ``ldac`` or ``group_fisher_flops`` does)."""

    name, needs_data = "constant", False

    def __init__(self, per_flop: bool):
        self.normalize = "flops" if per_flop else None

    def __call__(self, group):
        conv = group[0].dep.target.module
        n = len(group[0].idxs)
        flops = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * 64 * 64 / 1e6
        return torch.full((n,), 1.0 / flops if self.normalize else 1.0)

    def start_step(self, i):
        pass


@pytest.mark.parametrize("per_flop", [False, True])
def test_target_latency_ranks_by_importance_per_millisecond(per_flop):
    """``b`` saves 3x the milliseconds of ``a`` per channel (the table) though it has 1/9 of its FLOPs: with equal
    importance, ``b`` goes first. Ranked per FLOP (a per-FLOP score left as it is), ``a`` would go first."""
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner

    model = _Chain().eval()
    lm = _hand_set_latency_model(model, {"a": 1.0, "b": 3.0})
    dense = dataclasses.replace(measure(model, 64), latency_ms=lm(model))
    pruner = ChannelPruner(model, _Constant(per_flop), dense, layer_channels(model), [model.head], imgsz=64,
                           target="latency", latency=lm, compensate="none", tolerance=0.01)
    step = pruner.step(0.06)
    assert model.b.out_channels == 16 and model.a.out_channels == 32  # two blocks of b: 6 ms of 100
    assert step.reached_ratio == pytest.approx(0.06, abs=0.005)
    assert step.after.latency_ms == pytest.approx(lm(model)) == pytest.approx(94.0)


# ------------------------------------------------------------------------------------------- the measured loop
class _ScriptedLatency(RunLatency):
    """Measurements from a script instead of a runtime: model_ms by the number of channels left."""

    def __init__(self, cfg, record, ms_of):
        super().__init__(cfg, record, None)
        self.ms_of = ms_of
        self.calls = 0

    def time_against_dense(self, model, dense_path, data):
        self.calls += 1
        ms = self.ms_of(model)
        return {"dense_ms": 100.0, "model_ms": ms, "speedup": round(100.0 / ms, 3)}


class _FakePruner:
    """Removes 8 channels of one convolution per step; its predicted ratio follows the channels."""

    def __init__(self, model):
        self.model, self.dense = model, None
        self.steps = []

    tolerance = 0.0

    def measure(self):
        return _Ratio(1 - self.model.out_channels / 64)

    def max_ratio(self):
        return 1 - 8 / 64

    def step(self, aim, batches):
        self.steps.append(aim)
        if self.model.out_channels <= 8:
            raise LDACError("unreachable")
        m = self.model
        m.weight = nn.Parameter(m.weight[:-8].clone())
        m.bias = nn.Parameter(m.bias[:-8].clone())
        m.out_channels -= 8
        return _Ratio(1 - m.out_channels / 64)


@dataclasses.dataclass
class _Ratio:
    reached_ratio: float

    def removed_vs(self, dense, target):
        return self.reached_ratio


def _cfg(**kw):
    return {"runtime": "onnxruntime", "precision": "fp32", "threads": "1", "imgsz": 64, "target": "flops",
            "round_to": 8, "speedup": None, "latency_ms": None, "ratio": 0.5, **kw}


def test_speedup_run_prunes_on_until_the_measured_target_is_met(tmp_path):
    model = nn.Conv2d(3, 48, 1)  # 48 of 64 channels left: the rounds planned too little
    rl = _ScriptedLatency(_cfg(speedup=2.0), {"latency_model": {"dense_ms": 100.0}}, lambda m: 1.5 * m.out_channels)
    out, rec = rl.reach(model, _FakePruner(model), [], tmp_path / "dense.onnx", None)
    assert rec["target_ms"] == 50.0 and rec["met"]
    assert out.out_channels == 32 and rec["final_ms"] == 48.0  # 48 -> 40 -> 32 channels: 72 -> 60 -> 48 ms
    assert [s["model_ms"] for s in rec["steps"]] == [72.0, 60.0, 48.0]


def test_speedup_run_does_not_take_a_step_that_is_slower(tmp_path):
    model = nn.Conv2d(3, 48, 1)
    slower_below_48 = lambda m: 70.0 if m.out_channels >= 48 else 80.0  # noqa: E731
    rl = _ScriptedLatency(_cfg(speedup=2.0), {"latency_model": {"dense_ms": 100.0}}, slower_below_48)
    out, rec = rl.reach(model, _FakePruner(model), [], tmp_path / "dense.onnx", None)
    assert not rec["met"] and rec["final_ms"] == 70.0
    assert out.out_channels == 48  # the slower step was undone
    assert rec["steps"][-1]["taken"] is False


def test_speedup_run_stops_when_nothing_is_left_to_prune(tmp_path):
    model = nn.Conv2d(3, 16, 1)
    rl = _ScriptedLatency(_cfg(latency_ms=1.0), {"latency_model": {"dense_ms": 100.0}}, lambda m: float(m.out_channels))
    out, rec = rl.reach(model, _FakePruner(model), [], tmp_path / "dense.onnx", None)
    assert not rec["met"] and out.out_channels == 8 and rec["target_ms"] == 1.0


def test_planned_ratio_from_speedup_and_latency_ms():
    rec = {"latency_model": {"dense_ms": 40.0}}
    assert RunLatency(_cfg(speedup=2.0), rec, None).planned_ratio() == pytest.approx(0.5)
    assert RunLatency(_cfg(latency_ms=30.0), rec, None).planned_ratio() == pytest.approx(0.25)
    with pytest.raises(LDACError, match="latency ratio"):
        RunLatency(_cfg(latency_ms=50.0), rec, None).planned_ratio()  # slower than the dense model


@pytest.mark.slow
def test_prune_with_a_measured_speedup_reports_it(shapes_data, tmp_path, monkeypatch):
    """The whole path on a tiny model: round_to=auto measured and recorded, the latency table built and cached, the
    rounds planned on it, the model timed against the dense export, and the report's latency section."""
    from yolo_ldac import YOLOLDAC

    monkeypatch.setenv("YOLO_LDAC_HOME", str(tmp_path / "home"))
    result = YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), speedup=1.2, rounds=1, imgsz=64, round_to="auto",
                                            project=str(tmp_path), name="sp", plots=True)
    rep = result.report
    lat = rep["latency"]
    assert lat["runtime"] == "onnxruntime" and lat["precision"] == "fp32" and lat["imgsz"] == 64
    assert lat["round_to"] in (8, 16, 32, 64)
    assert lat["dense_ms"] > 0 and lat["compressed_ms"] > 0
    assert lat["speedup"] == pytest.approx(lat["dense_ms"] / lat["compressed_ms"], rel=1e-2)
    assert lat["target_ms"] > 0 and isinstance(lat["met"], bool)
    assert lat["met"] == (lat["compressed_ms"] <= lat["target_ms"])
    assert rep["rounds"][-1]["latency_ms"] == lat["compressed_ms"]
    assert (result.run_dir / "latency.png").is_file() and "## Measured latency" in (result.run_dir / "report.md").read_text()
    assert list((tmp_path / "home" / "latency").glob("table-onnxruntime-fp32-64-t1-*.json"))
    assert list((tmp_path / "home" / "latency").glob("multiple-onnxruntime-fp32-t1-*.json"))
    widths = [w for w in rep["layers"] if w["after"] != w["before"]]
    assert widths and all(w["after"] % lat["round_to"] == 0 for w in widths)


def test_rounds_of_a_measured_target_are_re_aimed_by_the_last_measurement():
    """The table planned 0.5 of the predicted latency; after round 1 (0.125 predicted) the runtime measured 0.75 of
    the dense latency left where the table said 0.875: rounds 2..4 aim at 1 - 0.5 * 0.875 / 0.75, in quarters, and
    never below what is already removed."""
    from types import SimpleNamespace

    from yolo_ldac.schedule.compressor import Compressor

    cfg = _cfg(speedup=2.0, rounds=4, tolerance=0.01, floor=0.125)
    rec = {"latency_model": {"dense_ms": 100.0}, "latency_max_ratio": 0.9}
    fake = SimpleNamespace(cfg=cfg, latency=RunLatency(cfg, rec, None), state=SimpleNamespace(record=rec), rounds=[])
    assert Compressor._ratio_at(fake, 1) == pytest.approx(0.125)  # nothing measured yet: the table's plan
    fake.rounds = [{"round": 1, "ratio_reached": 0.125}]
    rec["latency_last"] = {"dense_ms": 100.0, "model_ms": 75.0, "speedup": 1.333}
    final = 1 - 0.5 * 0.875 / 0.75
    assert Compressor._ratio_at(fake, 2) == pytest.approx(final * 2 / 4, abs=1e-6)
    assert Compressor._ratio_at(fake, 4) == pytest.approx(final, abs=1e-6)
    fake.rounds = [{"round": 1, "ratio_reached": 0.4}]  # measured far beyond: no step back below 0.4
    rec["latency_last"] = {"dense_ms": 100.0, "model_ms": 40.0, "speedup": 2.5}
    assert Compressor._ratio_at(fake, 2) == pytest.approx(0.4)


def test_a_narrower_point_is_never_predicted_slower():
    from yolo_ldac.latency.table import narrower_never_slower

    assert narrower_never_slower([[0.25, 0.05, 0.08], [0.06, 0.05, 0.09]]) == [[0.05, 0.05, 0.08], [0.05, 0.05, 0.09]]
    assert narrower_never_slower([[0.3, 0.2]]) == [[0.2, 0.2]]  # a depthwise row
    grid = narrower_never_slower([[1.0, 2.0], [3.0, 4.0]])
    assert grid == [[1.0, 2.0], [3.0, 4.0]]  # already monotone: unchanged
