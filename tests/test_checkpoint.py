"""Tests of the pickle-free portable checkpoint (safetensors + JSON architecture)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
import torch.nn as nn
from helpers import tiny_pruned_model

from yolo_ldac.checkpoint import load_portable, portable_paths, save_portable
from yolo_ldac.errors import LDACError


@pytest.fixture(scope="module")
def pruned():
    model = tiny_pruned_model("yolo11n.yaml", nc=3, seed=0)
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    return model


@pytest.fixture(scope="module")
def saved(pruned, tmp_path_factory):
    return save_portable(pruned, tmp_path_factory.mktemp("portable") / "best")


def _outputs(model, sizes=(64, 96)):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return [model(torch.rand(1, 3, s, s, generator=g))[0] for s in sizes]


def _corrupt(saved, tmp_path, edit):
    """Copy the checkpoint into tmp_path with its JSON changed by ``edit(meta)``; return the new path."""
    st, js = portable_paths(saved)
    meta = json.loads(js.read_text())
    edit(meta)
    dst_st, dst_js = portable_paths(tmp_path / "bad")
    dst_st.write_bytes(st.read_bytes())
    dst_js.write_text(json.dumps(meta))
    return dst_st


def test_roundtrip_identical_outputs_without_unpickling(pruned, saved, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("load_portable must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_portable(saved)

    assert not loaded.training
    assert loaded.names == pruned.names
    assert torch.equal(loaded.stride, pruned.stride)
    assert [type(m).__name__ for m in loaded.model] == [type(m).__name__ for m in pruned.model]
    widths = {n: m.weight.shape for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert widths == {n: m.weight.shape for n, m in loaded.named_modules() if isinstance(m, nn.Conv2d)}
    for a, b in zip(_outputs(pruned.eval()), _outputs(loaded)):
        assert torch.equal(a, b)


def test_json_is_readable_and_complete(pruned, saved):
    st, js = portable_paths(saved)
    assert st.suffix == ".safetensors" and st.is_file() and js.is_file()
    text = js.read_text()
    meta = json.loads(text)
    assert meta["format"] == "yolo-ldac-portable" and meta["version"] == 1
    assert meta["nc"] == 3 and meta["names"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert meta["split_blocks"] is True and meta["fused"] is False
    assert meta["stride"] == [8.0, 16.0, 32.0]
    assert meta["yaml"]["backbone"][0][2] == "Conv"
    convs = {n: m for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(meta["convs"]) == set(convs)
    rec = meta["convs"]["model.0.conv"]
    assert set(rec) == {"in_channels", "out_channels", "groups", "kernel", "stride", "padding", "bias"}
    assert all(meta["batchnorms"][n]["num_features"] == m.num_features
               for n, m in pruned.named_modules() if isinstance(m, nn.BatchNorm2d))
    pruned_layers = [n for n, (base, kept) in meta["channels"].items() if kept < base]
    assert pruned_layers and all(meta["convs"][n]["out_channels"] == meta["channels"][n][1] for n in pruned_layers)
    # human-readable: indented, one conv record per line
    assert '\n  "convs": {\n    "model.0.conv": {"in_channels": 3, "out_channels": 16' in text
    assert max(len(line) for line in text.splitlines()) < 200


def test_fused_yolov8_roundtrip(tmp_path):
    model = copy.deepcopy(tiny_pruned_model("yolov8n.yaml", nc=2, seed=1)).fuse(verbose=False)
    loaded = load_portable(save_portable(model, tmp_path / "fused.json"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    for a, b in zip(_outputs(model.eval()), _outputs(loaded)):
        assert torch.equal(a, b)


def test_wrong_channel_count_in_json_fails(saved, tmp_path):
    def edit(meta):
        name = next(n for n, (base, kept) in meta["channels"].items() if kept < base)
        meta["convs"][name]["out_channels"] += 8

    with pytest.raises(LDACError) as e:
        load_portable(_corrupt(saved, tmp_path, edit))
    assert "does not match" in str(e.value) and "\n" not in str(e.value)


def test_missing_files_fail(saved, tmp_path):
    with pytest.raises(LDACError, match="not found"):
        load_portable(tmp_path / "nothing.safetensors")
    st, js = portable_paths(tmp_path / "half")
    js.write_text(portable_paths(saved)[1].read_text())  # JSON without its weights
    with pytest.raises(LDACError, match="not found"):
        load_portable(js)


def test_weights_of_another_model_fail(saved, tmp_path):
    other = save_portable(tiny_pruned_model("yolo11n.yaml", nc=3, seed=5, n_groups=3), tmp_path / "other")
    portable_paths(other)[1].write_text(portable_paths(saved)[1].read_text())  # saved's JSON, other's weights
    with pytest.raises(LDACError, match="does not match"):
        load_portable(other)


def test_invalid_json_fails(saved, tmp_path):
    bad = _corrupt(saved, tmp_path, lambda meta: None)
    portable_paths(bad)[1].write_text("{not json")
    with pytest.raises(LDACError, match="not valid JSON"):
        load_portable(bad)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["yaml"].__setitem__("activation", "__import__('os').system('echo pwned')"),
        lambda m: m["yaml"]["backbone"][0].__setitem__(2, "torch_safe_load"),
    ],
    ids=["activation-eval", "non-layer-name"],
)
def test_yaml_cannot_run_code(saved, tmp_path, edit):
    with pytest.raises(LDACError, match="activation|not an Ultralytics/torch layer"):
        load_portable(_corrupt(saved, tmp_path, edit))


def test_trained_checkpoint_roundtrip(shared_weights, tmp_path):
    from yolo_ldac.nn.adapter import load_detection_model

    model = load_detection_model(shared_weights("yolov8s-fall.pt")).eval()
    loaded = load_portable(save_portable(model, tmp_path / "fall"))
    assert loaded.names == model.names and loaded.args["data"] == model.args["data"]
    for a, b in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(a, b)
