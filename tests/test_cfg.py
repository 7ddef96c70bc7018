"""yolo_ldac.cfg: the defaults file, key checks with suggestions, value checks, safe parsing, the split."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pytest
import yaml

from yolo_ldac.cfg import (
    DEFAULT_CFG_PATH,
    MODES,
    SHARED_KEYS,
    get_cfg,
    load_defaults,
    parse_value,
    split_args,
    ultralytics_keys,
)
from yolo_ldac.errors import LDACError

EXPECTED_DEFAULTS = {
    "mode": "compress",
    "model": "yolo11n.pt",
    "cfg": None,
    "ld_alpha": 0.01,
    "cov_beta": 0.01,
    "align_gamma": 0.0001,
    "pool": "max",
    "background": 0,
    "level_assign": False,
    "tracer": "gradient",
    "rho": 0.1,
    "data": None,
    "method": "ldac",
    "ratio": 0.5,
    "target": "flops",
    "speedup": None,
    "latency_ms": None,
    "runtime": "onnxruntime",
    "precision": "fp32",
    "rounds": 4,
    "epochs_per_round": 1,
    "finetune_epochs": 10,
    "round_to": 8,
    "floor": 0.125,
    "compensate": None,
    "criterion": None,
    "push": None,
    "trusted": False,
    "resume": False,
    "weights": None,
    "rois": None,
    "strict_labels": True,
    "fade": True,
    "fade_end": 0.5,
    "release": "handoff",
    "ld_pooled": True,
    "ld_check": 2.0,
    "lr_scale": "auto",
    "calib_batches": 4,
    "tolerance": 0.01,
    "max_drop": None,
    "max_drop_rel": None,
    "ratios": "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8",
    "search_tol": 0.02,
    "step_forward": True,
    "val_steps": True,
    "portable": True,
    "format": "onnx",
    "half": False,
    "int8": False,
    "calib_images": 300,
    "int8_float": "auto",
    "parity": True,
    "parity_map": True,
    "parity_rtol": None,
    "deploy_graph": True,
    "fuse_splits": False,
    "baseline": None,
    "formats": "onnx,litert,openvino",
    "precisions": "fp32",
    "runs": 50,
    "warmup": 10,
    "threads": "1,all",
    "imgsz": 640,
    "batch": 16,
    "epochs": None,
    "project": "runs/ldac",
    "name": "exp",
    "exist_ok": False,
    "device": None,
    "workers": 0,
    "seed": 0,
    "plots": True,
    "verbose": True,
}


@pytest.fixture
def no_criteria(monkeypatch):
    """Make yolo_ldac.pruning.criteria look absent, whatever state the real module is in."""
    monkeypatch.setitem(sys.modules, "yolo_ldac.pruning.criteria", None)  # import -> ModuleNotFoundError


@pytest.fixture
def fake_criteria(monkeypatch):
    mod = types.ModuleType("yolo_ldac.pruning.criteria")
    mod.CRITERIA = {"l1": object, "l2": object, "ldac": object}
    monkeypatch.setitem(sys.modules, "yolo_ldac.pruning.criteria", mod)
    return mod


# ---------------------------------------------------------------------------------------------- default.yaml


def test_defaults_values():
    assert load_defaults() == EXPECTED_DEFAULTS


def test_defaults_is_flat_and_every_key_commented():
    text = DEFAULT_CFG_PATH.read_text(encoding="utf-8")
    key_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "\t", "#"))]
    keys = []
    for line in key_lines:
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):( [^#]*?)? # \(([^)]+)\) (\S.*)", line)
        assert m, f"line without a '# (type) meaning' comment: {line!r}"
        keys.append(m.group(1))
        assert m.group(3).strip() and len(m.group(4).strip()) > 5, line
    assert len(keys) == len(set(keys)), "duplicate keys"
    assert set(keys) == set(load_defaults()), "every key must sit on its own line at the top level"
    assert all(not isinstance(v, (dict, list)) for v in yaml.safe_load(text).values()), "must stay flat"


def test_load_defaults_returns_a_copy():
    d = load_defaults()
    d["ratio"] = 0.9
    assert load_defaults()["ratio"] == 0.5


def test_ultralytics_keys_match_ultralytics():
    from ultralytics.cfg import DEFAULT_CFG_DICT

    keys = ultralytics_keys()
    assert keys == set(DEFAULT_CFG_DICT)
    assert {"epochs", "lr0", "batch", "device", "workers", "seed", "mosaic", "optimizer"} <= keys


# ------------------------------------------------------------------------------------------------ parse_value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", 0.5),
        ("8", 8),
        ("-3", -3),
        ("1e-3", 0.001),
        ("010", 10),
        ("True", True),
        ("true", True),
        ("False", False),
        ("false", False),
        ("none", None),
        ("None", None),
        ("null", None),
        ("", None),
        ("[1,2]", [1, 2]),
        ("[640, 480]", [640, 480]),
        ("a,b", "a,b"),
        ("0,1", "0,1"),
        ("cpu", "cpu"),
        ("yolo11n.pt", "yolo11n.pt"),
        ("runs/ldac", "runs/ldac"),
        ("'0.5'", "0.5"),
        ('"True"', "True"),
        ("'abc'", "abc"),
        ("yes", "yes"),
        ("on", "on"),
        ("1:20", "1:20"),
        ("2024-01-01", "2024-01-01"),
        ("run #1", "run #1"),
    ],
)
def test_parse_value(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected), (text, value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('false')",
        "!!python/object/apply:os.system ['false']",
        "os.getcwd()",
    ],
)
def test_parse_value_never_evaluates(text):
    assert parse_value(text) == text


def test_parse_value_passes_non_strings_through():
    assert parse_value(0.5) == 0.5 and parse_value(None) is None


# ---------------------------------------------------------------------------------------------------- get_cfg


def test_get_cfg_defaults_and_overrides(no_criteria):
    cfg = get_cfg()
    assert cfg == EXPECTED_DEFAULTS
    cfg = get_cfg({"ratio": 0.3, "target": "params", "rounds": 2})
    assert (cfg["ratio"], cfg["target"], cfg["rounds"]) == (0.3, "params", 2)
    assert get_cfg(None, mode="prune")["mode"] == "prune"
    assert get_cfg({"mode": "val"}, mode="info")["mode"] == "info"


def test_get_cfg_does_not_mutate_its_input():
    overrides = {"ratio": 0.3}
    get_cfg(overrides, mode="finetune")
    assert overrides == {"ratio": 0.3}


def test_finetune_epochs_resolution():
    assert get_cfg(mode="finetune")["epochs"] == 10
    assert get_cfg({"finetune_epochs": 3}, mode="finetune")["epochs"] == 3
    assert get_cfg({"epochs": 7}, mode="finetune")["epochs"] == 7
    assert get_cfg(mode="compress")["epochs"] is None


@pytest.mark.parametrize(
    "key, hint",
    [("ratoi", "ratio"), ("epoch", "epochs"), ("finetune-epochs", "finetune_epochs"), ("round_too", "round_to"),
     ("lr00", "lr0")],
)
def test_unknown_key_suggests_closest(key, hint):
    with pytest.raises(LDACError) as e:
        get_cfg({key: 1})
    msg = str(e.value)
    assert msg == f"unknown key {key!r}; did you mean {hint!r}?"
    assert "\n" not in msg


def test_unknown_key_without_close_match():
    with pytest.raises(LDACError, match=r"unknown key 'qqqqzzzz'") as e:
        get_cfg({"qqqqzzzz": 1})
    assert "did you mean" not in str(e.value) and "\n" not in str(e.value)


def test_ultralytics_keys_pass_through():
    cfg = get_cfg({"lr0": 0.01, "mosaic": 0, "optimizer": "SGD", "epochs": 3, "batch": 4, "device": "cpu"})
    assert (cfg["lr0"], cfg["mosaic"], cfg["optimizer"]) == (0.01, 0, "SGD")
    assert (cfg["epochs"], cfg["batch"], cfg["device"]) == (3, 4, "cpu")


@pytest.mark.parametrize("ratio", [0, 0.0, 1.0, -0.1, 0.96, "abc", None, True, float("nan"), "0.5"])
def test_bad_ratio_rejected(ratio):
    with pytest.raises(LDACError) as e:
        get_cfg({"ratio": ratio})
    assert str(e.value) == f"ratio must be in (0, 0.95], got {ratio!r}"


@pytest.mark.parametrize("ratio", [0.01, 0.5, 0.95, 1e-6])
def test_good_ratio_accepted(ratio):
    assert get_cfg({"ratio": ratio})["ratio"] == ratio


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"target": "flop"}, "target must be one of flops, params, channels, latency, got 'flop'; did you mean 'flops'?"),
        ({"target": None}, "target must be one of"),
        ({"mode": "prun"}, "did you mean 'prune'?"),
        ({"mode": "train"}, "mode must be one of"),
        ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
        ({"rounds": 2.5}, "rounds must be an integer >= 1"),
        ({"rounds": True}, "rounds must be an integer >= 1"),
        ({"epochs_per_round": -1}, "epochs_per_round must be an integer >= 0"),
        ({"finetune_epochs": -2}, "finetune_epochs must be an integer >= 0"),
        ({"finetune_epochs": "3"}, "finetune_epochs must be an integer >= 0"),
        ({"round_to": 0}, "round_to must be an integer >= 1"),
        ({"round_to": "fast"}, "round_to must be an integer >= 1"),
        ({"runtime": "tensorrt"}, "latency tables are measured for onnxruntime, openvino"),
        ({"runtime": "onnxruntime", "precision": "int8"}, "measured precisions are fp32"),
        ({"speedup": 0.8}, "speedup must be a number > 1"),
        ({"latency_ms": -3}, "latency_ms must be a number > 0"),
        ({"speedup": 2.0, "latency_ms": 10}, "speedup= and latency_ms= exclude each other"),
        ({"floor": 0}, "floor must be in (0, 1), got 0"),
        ({"floor": 1.0}, "floor must be in (0, 1), got 1.0"),
        ({"floor": "x"}, "floor must be in (0, 1)"),
        ({"calib_batches": -1}, "calib_batches must be an integer >= 0"),
        ({"tolerance": -0.1}, "tolerance must be in [0, 1)"),
        ({"parity_rtol": 0}, "parity_rtol must be a number > 0"),
        ({"half": True, "int8": True}, "half=True and int8=True exclude each other"),
        ({"int8": "yes"}, "int8 must be True or False"),
        ({"calib_images": 0}, "calib_images must be an integer >= 1"),
        ({"int8_float": "attention"}, "int8_float must be one of auto, none, got 'attention'"),
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"formats": ""}, "formats must be a comma-separated list"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"compensate": 3}, "compensate must be the name of a compensation"),
        ({"portable": 1}, "portable must be True or False"),
        ({"lr_scale": 0}, "lr_scale must be auto or a number > 0, got 0"),
        ({"lr_scale": "x"}, "lr_scale must be auto or a number > 0"),
        ({"release": "zero"}, "release must be handoff or fade, got 'zero'"),
        ({"ld_check": -1}, "ld_check must be a number >= 0"),
        ({"ld_pooled": "yes"}, "ld_pooled must be True or False"),
    ],
)
def test_bad_values_rejected(overrides, fragment):
    with pytest.raises(LDACError) as e:
        get_cfg(overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_good_values_accepted():
    cfg = get_cfg({"rounds": 1, "epochs_per_round": 0, "finetune_epochs": 0, "round_to": 1, "floor": 0.5,
                   "target": "channels", "compensate": False, "epochs": 0})
    assert cfg["rounds"] == 1 and cfg["floor"] == 0.5 and cfg["compensate"] is False
    for mode in MODES:
        assert get_cfg(mode=mode)["mode"] == mode


def test_method_not_checked_without_registry(no_criteria):
    assert get_cfg({"method": "anything_goes"})["method"] == "anything_goes"


def test_method_checked_against_registry(fake_criteria):
    assert get_cfg({"method": "ldac"})["method"] == "ldac"
    with pytest.raises(LDACError) as e:
        get_cfg({"method": "ldca"})
    assert "unknown method 'ldca'; did you mean 'ldac'?" in str(e.value)
    assert "l1, l2, ldac" in str(e.value)


def test_method_must_be_a_name(no_criteria):
    with pytest.raises(LDACError, match="method must be the name"):
        get_cfg({"method": 3})


# ------------------------------------------------------------------------------------------------- split_args


def test_split_args():
    cfg = get_cfg({"lr0": 0.02, "mosaic": 0, "ratio": 0.3, "data": "x.yaml", "epochs": 5}, mode="prune")
    ldac, ultra = split_args(cfg)
    assert set(ldac) == set(EXPECTED_DEFAULTS)
    assert ldac["ratio"] == 0.3 and ldac["data"] == "x.yaml"
    assert ultra["lr0"] == 0.02 and ultra["mosaic"] == 0 and "resume" not in ultra  # never handed to Ultralytics
    for key in ("imgsz", "batch", "workers", "seed", "plots", "verbose", "project", "name", "exist_ok", "model"):
        assert ultra[key] == cfg[key], key
    assert ultra["data"] == "x.yaml" and ultra["epochs"] == 5
    assert "device" not in ultra  # None: left to Ultralytics
    for key in ("mode", "format", "ratio", "method", "target", "rounds", "floor", "compensate", "portable"):
        assert key not in ultra, key
    assert set(ultra) <= ultralytics_keys()
    assert SHARED_KEYS <= set(EXPECTED_DEFAULTS) and SHARED_KEYS <= ultralytics_keys()


def test_split_args_forwards_explicit_device():
    _, ultra = split_args(get_cfg({"device": "cpu"}))
    assert ultra["device"] == "cpu"


def test_cfg_file_overrides(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("ratio: 0.3\nrounds: 2\nlr0: 0.02\n")
    cfg = get_cfg({"cfg": str(f), "rounds": 3})
    assert cfg["ratio"] == 0.3 and cfg["rounds"] == 3 and cfg["lr0"] == 0.02  # command-line keys win


def test_cfg_file_errors(tmp_path):
    with pytest.raises(LDACError, match="not found"):
        get_cfg({"cfg": str(tmp_path / "missing.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("ratoi: 0.3\n")
    with pytest.raises(LDACError, match="did you mean 'ratio'"):
        get_cfg({"cfg": str(bad)})


def test_shipped_cfg_examples_are_valid():
    root = pathlib.Path(__file__).resolve().parents[1] / "cfg"
    for f in sorted(root.glob("*.yaml")):
        get_cfg({"cfg": str(f)})


def test_lr_scale_auto_by_trained_weights():
    """auto: a quarter of Ultralytics' lr for a model with trained weights (any checkpoint), its own lr for a model
    built from a yaml (random weights); a number is itself."""
    from yolo_ldac.cfg import is_trained_source, resolve_lr_scale

    assert [is_trained_source(s) for s in ("yolo11n.yaml", "cfg/MY.YML", "yolo11n.pt", "best.pt")] == [
        False, False, True, True]
    assert resolve_lr_scale("auto", True) == 0.25 and resolve_lr_scale("auto", False) == 1.0
    assert resolve_lr_scale(0.5, True) == 0.5 and resolve_lr_scale(2, False) == 2.0
    assert get_cfg({"lr_scale": "auto"}, mode="compress")["lr_scale"] == "auto"
