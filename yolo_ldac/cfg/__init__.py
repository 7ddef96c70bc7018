"""Configuration of yolo-ldac: flat defaults, key checks with suggestions, safe parsing of command-line values.

The defaults live in ``default.yaml`` beside this file (one flat mapping, every key commented). Every key of
Ultralytics' own default configuration is accepted as well and passed through to its trainer, validator and
exporter, so ``lr0=0.002 mosaic=0`` work as they do with the ``yolo`` command.

Nothing here imports torch or ultralytics: the key checks run before any heavy import (``yolo-ldac --help`` and
a mistyped key answer immediately). Ultralytics' key list is read from the installed package's
``cfg/default.yaml`` without importing the package.

Example:
    >>> from yolo_ldac.cfg import get_cfg, split_args
    >>> cfg = get_cfg({"ratio": 0.4, "lr0": 0.002}, mode="prune")
    >>> ldac, ultra = split_args(cfg)  # ldac["ratio"] == 0.4; ultra["lr0"] == 0.002, ultra["imgsz"] == 640
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import yaml

from yolo_ldac.errors import LDACError

DEFAULT_CFG_PATH = Path(__file__).resolve().parent / "default.yaml"

MODES = ("compress", "prune", "finetune", "sweep", "val", "export", "benchmark", "info")
TARGETS = ("flops", "params", "channels", "latency")

# Keys that are ours AND Ultralytics': split_args() forwards them to Ultralytics too (when not None).
SHARED_KEYS = frozenset(
    {"imgsz", "batch", "device", "workers", "seed", "plots", "verbose", "project", "name", "exist_ok", "epochs", "data"}
    | {"model"}
)

# Our keys that must be exactly True or False.
_BOOL_KEYS = ("fade", "ld_pooled", "val_steps", "portable", "parity", "exist_ok", "plots", "verbose", "half", "int8",
              "parity_map", "strict_labels", "trusted", "deploy_graph", "fuse_splits", "step_forward")

_INT_RE = re.compile(r"[-+]?\d[\d_]*")
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_YAML_BOOLS = ("true", "false")
_NONE_WORDS = ("none", "null", "~", "")


@functools.lru_cache(maxsize=None)
def _defaults() -> dict:
    with open(DEFAULT_CFG_PATH, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):  # a packaging error, not a user error
        raise RuntimeError(f"{DEFAULT_CFG_PATH} is not a yaml mapping")
    return data


# lr_scale=auto for a model with trained weights. Measured (docs/method.md): on bases fine-tuned to their plateau,
# Ultralytics' re-warmed lr cost dense 3 points where a quarter of it kept or lifted every criterion's mean; from the
# COCO weights on a new class list a quarter of it gave +9 points (dense) and +1.7 (ldac at 50 %).
TRAINED_LR_SCALE = 0.25


def resolve_lr_scale(value: Any, trained: bool) -> float:
    """The lr factor a run trains at: ``value`` itself, or for ``auto`` 0.25 for a model with trained weights (a
    checkpoint: its features are worth keeping) and 1.0 for one built from a yaml (random weights, all to learn).

    Example:
        >>> resolve_lr_scale("auto", trained=True), resolve_lr_scale("auto", trained=False), resolve_lr_scale(0.5, True)
        (0.25, 1.0, 0.5)
    """
    if value != "auto":
        return float(value)
    return TRAINED_LR_SCALE if trained else 1.0


def is_trained_source(source: Any) -> bool:
    """Whether a model source carries trained weights: anything but a model yaml (``yolo11n.yaml``: random weights).

    Example:
        >>> is_trained_source("yolo11n.yaml"), is_trained_source("runs/ldac/exp/weights/best.pt")
        (False, True)
    """
    return not str(source).lower().endswith((".yaml", ".yml"))


def load_defaults() -> dict:
    """Return yolo-ldac's defaults from ``default.yaml`` (read once, cached; each call returns a fresh copy)."""
    return dict(_defaults())


@functools.lru_cache(maxsize=None)
def _ultralytics_keys() -> frozenset:
    # Read ultralytics/cfg/default.yaml directly: importing ultralytics here would fix its settings directory and
    # offline flags before yolo_ldac.utils.env.setup_offline_env() had a chance to run, and costs seconds.
    spec = importlib.util.find_spec("ultralytics")  # top-level: finds the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "cfg" / "default.yaml"
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
            if isinstance(data, dict) and data:
                return frozenset(data)
    from yolo_ldac.utils.env import setup_offline_env  # fallback: the import must come after this

    setup_offline_env()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return frozenset(DEFAULT_CFG_DICT)


# Ultralytics 8.4.190's optimizer names (BaseTrainer.build_optimizer), used when its source cannot be read.
_OPTIMIZERS_FALLBACK = ("Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "SGD", "MuSGD", "auto")


@functools.lru_cache(maxsize=None)
def ultralytics_optimizers() -> tuple[str, ...]:
    """The ``optimizer=`` names Ultralytics' trainer builds (matched case-insensitively, as it does), read from
    ``BaseTrainer.build_optimizer``'s source without importing Ultralytics.

    Example:
        >>> "AdamW" in ultralytics_optimizers() and "auto" in ultralytics_optimizers()
        True
    """
    import ast

    spec = importlib.util.find_spec("ultralytics")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "engine" / "trainer.py"
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name == "build_optimizer":
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Set)
                            and any(isinstance(t, ast.Name) and t.id == "optimizers" for t in node.targets)):
                        try:
                            names = ast.literal_eval(node.value)
                        except ValueError:
                            break
                        if names and all(isinstance(n, str) for n in names):
                            return tuple(sorted(names, key=str.lower))
    return _OPTIMIZERS_FALLBACK


def check_optimizer(value: Any) -> None:
    """Raise :class:`LDACError` unless ``value`` names an optimizer Ultralytics' trainer builds (it raises
    NotImplementedError only once the run is training).

    Example:
        >>> check_optimizer("adamw")
        >>> check_optimizer("Foo")
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: optimizer='Foo' is not one of Ultralytics' optimizers (Adam, Adamax, AdamW, auto, MuSGD, NAdam, RAdam, RMSprop, SGD)
    """
    names = ultralytics_optimizers()
    if str(value).lower() in {n.lower() for n in names}:
        return
    hint = closest(str(value), names, cutoff=0.6)
    raise LDACError(f"optimizer={value!r} is not one of Ultralytics' optimizers ({', '.join(names)})"
                    + (f"; did you mean {hint!r}?" if hint else ""))


def ultralytics_keys() -> set[str]:
    """Return every key of Ultralytics' own default configuration (``ultralytics.cfg.DEFAULT_CFG_DICT``)."""
    return set(_ultralytics_keys())


def valid_keys() -> set[str]:
    """Return every key ``get_cfg`` accepts: ours and Ultralytics'."""
    return set(_defaults()) | _ultralytics_keys()


def parse_value(s: str) -> Any:
    """Parse one command-line value with ``yaml.safe_load`` (never ``eval``).

    ``"0.5"`` -> 0.5, ``"8"`` -> 8, ``"1e-3"`` -> 0.001, ``"True"``/``"true"`` -> True, ``"none"``/``"None"``/
    ``"null"``/``""`` -> None, ``"[1,2]"`` -> [1, 2], ``"a,b"`` -> ``"a,b"``; quotes force a string
    (``"'0.5'"`` -> ``"0.5"``). Anything yaml would read as something other than these plain types (a date, a
    YAML-1.1 ``yes``/``on`` boolean, a sexagesimal ``1:20``, a python tag) stays the original string, and so
    does anything that does not parse. A non-string is returned unchanged.
    """
    if not isinstance(s, str):
        return s
    text = s.strip()
    if text.lower() in _NONE_WORDS:
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]  # quoted: a string, whatever it looks like
    if " #" in text or "\t#" in text:
        return text  # yaml would drop the rest as a comment
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool):
        return value if text.lower() in _YAML_BOOLS else text  # yes/no/on/off stay strings
    if _INT_RE.fullmatch(text):
        return int(text.replace("_", ""), 10)  # decimal, even with leading zeros (yaml 1.1 reads 010 as octal 8)
    if isinstance(value, (int, float)):
        return text if ":" in text else value  # no base-60 numbers
    if isinstance(value, str):
        return float(text) if _FLOAT_RE.fullmatch(text) else value  # yaml 1.1 reads 1e-3 as a string
    if isinstance(value, list):
        return value if text.startswith("[") else text
    if isinstance(value, dict):
        return value if text.startswith("{") else text  # "a: b" is not a mapping on the command line
    return text  # dates, timestamps, binary, ...


def closest(word: str, choices, cutoff: float = 0.5) -> str | None:
    """Return the element of ``choices`` most similar to ``word`` (difflib), or None when none is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return match[0] if match else None


def _suggest_key(key: str) -> str | None:
    # Our own keys first: a near-miss of "ratio" should say "ratio", not some Ultralytics key.
    return closest(key, sorted(_defaults())) or closest(key, sorted(valid_keys()))


def _unknown_key_message(key: str) -> str:
    hint = _suggest_key(key)
    if hint:
        return f"unknown key {key!r}; did you mean {hint!r}?"
    return f"unknown key {key!r}; run `yolo-ldac cfg` to list yolo-ldac's keys (Ultralytics' keys are accepted too)"


def check_keys(overrides: dict) -> None:
    """Raise ``LDACError`` naming every key of ``overrides`` that is neither ours nor Ultralytics' (with a hint)."""
    known = valid_keys()
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise LDACError("; ".join(_unknown_key_message(str(k)) for k in unknown))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_int(cfg: dict, key: str, minimum: int) -> None:
    v = cfg[key]
    if not (_is_int(v) and v >= minimum):
        raise LDACError(f"{key} must be an integer >= {minimum}, got {v!r}")


def _check_parts(cfg: dict, explicit: dict) -> None:
    """Check ``method`` (a preset) and ``criterion``/``push``/``compensate`` against the part registries, for the
    keys given explicitly (checking the defaults would import torch for ``yolo-ldac --help``)."""
    for key in ("method", "criterion", "push"):
        v = cfg.get(key)
        if key in explicit and v is not None and (not isinstance(v, str) or not v):
            raise LDACError(f"{key} must be the name of a registered part (see `yolo-ldac list`), got {v!r}")
    comp = cfg.get("compensate")
    if comp is not None and not isinstance(comp, (str, bool)):
        raise LDACError(f"compensate must be the name of a compensation (mean, none) or True/False, got {comp!r}")
    if not any(k in explicit for k in ("method", "criterion", "push", "compensate")):
        return
    try:
        from yolo_ldac.parts import resolve_parts

        resolve_parts(cfg)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("yolo_ldac."):
            return  # no registry to check against (a partial install): the compressor will check
        raise


def stride_multiple(imgsz: int, stride: int) -> int:
    """``imgsz`` rounded up to a multiple of the model's max ``stride`` (what its feature maps need).

    Example:
        >>> stride_multiple(33, 32), stride_multiple(64, 32)
        (64, 64)
    """
    stride = max(int(stride), 1)
    return -(-int(imgsz) // stride) * stride


def model_stride(model: Any) -> int:
    """The max stride of a detector (32 when it has none recorded)."""
    stride = getattr(model, "stride", None)
    if stride is None:
        return 32
    if hasattr(stride, "flatten"):  # a tensor, as Ultralytics keeps it
        values = stride.flatten().tolist()
    elif isinstance(stride, (list, tuple)):
        values = list(stride)
    else:
        values = [stride]
    return max([int(v) for v in values] + [1])


def round_imgsz(imgsz: int | list[int] | tuple[int, ...], model: Any) -> Any:
    """``imgsz`` (an int, or export's ``[h, w]``) rounded up to a multiple of ``model``'s max stride, with a notice
    on Ultralytics' logger when it changes. Every mode that runs the model at ``imgsz`` goes through this.

    Example:
        >>> round_imgsz(64, None)
        64
    """
    stride = model_stride(model)
    if isinstance(imgsz, (list, tuple)):
        rounded: Any = type(imgsz)(stride_multiple(v, stride) for v in imgsz)
    else:
        rounded = stride_multiple(imgsz, stride)
    if rounded != imgsz:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"imgsz={imgsz} is not a multiple of the model's max stride {stride}: using imgsz={rounded}")
    return rounded


def _check_imgsz(v: Any, mode: str) -> None:
    pair = mode == "export" and isinstance(v, (list, tuple)) and len(v) == 2
    if pair and all(_is_int(x) and x > 0 for x in v):
        return  # export takes (h, w)
    if not (_is_int(v) and v > 0):
        pair = ", or [h, w] for export" if mode == "export" else ""
        raise LDACError(f"imgsz must be a positive integer (square images, i.e. imgsz=640{pair}; one that is no "
                        f"multiple of the model's stride is rounded up), got {v!r}")


def _check_shared(cfg: dict, explicit: dict) -> None:
    """The keys we share with Ultralytics, checked here because a bad one fails deep inside its trainer."""
    _check_imgsz(cfg["imgsz"], cfg["mode"])
    batch = cfg["batch"]
    if not (_is_int(batch) and batch >= 1):
        auto = batch == -1 or (_is_number(batch) and 0 < batch < 1)
        note = (" (Ultralytics' automatic batch size is not supported: calibration, the LDAC statistics and "
                "validation need a fixed one)") if auto else ""
        raise LDACError(f"batch must be an integer >= 1, got {batch!r}{note}")
    _check_int(cfg, "workers", 0)
    _check_int(cfg, "seed", 0)
    if not isinstance(cfg["project"], str) or not cfg["project"].strip():
        raise LDACError(f"project must be a folder (a non-empty string), got {cfg['project']!r}")
    from yolo_ldac.utils.rundir import check_run_name

    check_run_name(cfg["name"])  # one folder name: a run never lands outside project=
    if "device" in explicit and cfg.get("device") is not None:
        from yolo_ldac.utils.device import check_device

        check_device(cfg["device"])


def _check_ultralytics_values(explicit: dict) -> None:
    """Ultralytics' own type and range checks (``ultralytics.cfg.check_cfg``) on the Ultralytics keys given."""
    ours = _defaults()
    given = {k: v for k, v in explicit.items() if k not in ours}
    if not given:
        return
    if given.get("optimizer") is not None:
        check_optimizer(given["optimizer"])
    import sys

    if "ultralytics" not in sys.modules:  # first import: set the offline environment up before it
        from yolo_ldac.utils.env import setup_offline_env

        setup_offline_env()
    from ultralytics.cfg import check_cfg

    try:
        check_cfg(dict(given), hard=True)
    except (TypeError, ValueError, SyntaxError) as e:
        text = " ".join(str(e).split())
        raise LDACError(text or f"invalid value among {given!r}") from None


def _check_latency_keys(cfg: dict) -> None:
    """runtime=, precision=, speedup=, latency_ms= (one line each; the runtime's package is checked when used)."""
    from yolo_ldac.latency.table import normalise_runtime

    cfg["runtime"], cfg["precision"] = normalise_runtime(cfg["runtime"], cfg["precision"])
    for key, low in (("speedup", 1.0), ("latency_ms", 0.0)):
        v = cfg[key]
        if v is not None and not (_is_number(v) and v > low):
            raise LDACError(f"{key} must be a number > {low:g} (or empty), got {v!r}")
    if cfg["speedup"] is not None and cfg["latency_ms"] is not None:
        raise LDACError("speedup= and latency_ms= exclude each other: give one measured target")


def _check_budget_keys(cfg: dict) -> None:
    """max_drop=, max_drop_rel=, ratios=, search_tol= (one line each)."""
    for key in ("max_drop", "max_drop_rel"):
        v = cfg[key]
        if v is not None and not (_is_number(v) and 0 <= v < 1):
            raise LDACError(f"{key} must be a fraction in [0, 1) (or empty), i.e. {key}=0.01 for "
                            f"{'1 point of mAP50-95' if key == 'max_drop' else '1 % of the base mAP50-95'}, got {v!r}")
    tol = cfg["search_tol"]
    if not (_is_number(tol) and 0 < tol <= 0.5):
        raise LDACError(f"search_tol must be in (0, 0.5], got {tol!r}")
    budget = cfg["max_drop"] is not None or cfg["max_drop_rel"] is not None
    if cfg["mode"] == "sweep" or budget:
        from yolo_ldac.sweep import parse_ratios

        parse_ratios(cfg["ratios"])
    if not budget:
        return
    if cfg["mode"] not in ("compress", "prune"):
        raise LDACError(f"max_drop= and max_drop_rel= apply to compress and prune, not to {cfg['mode']}")
    if cfg["speedup"] is not None or cfg["latency_ms"] is not None:
        raise LDACError("max_drop= searches the ratio; speedup= and latency_ms= set it: give one of them "
                        "(max_drop with target=latency searches the latency ratio)")
    if not cfg.get("data"):
        raise LDACError("max_drop= needs data=... (the budget is measured on its val split)")


def _validate(cfg: dict, explicit: dict) -> None:
    mode = cfg["mode"]
    if mode not in MODES:
        hint = closest(mode, MODES) if isinstance(mode, str) else None
        msg = f"mode must be one of {', '.join(MODES)}, got {mode!r}"
        raise LDACError(msg + (f"; did you mean {hint!r}?" if hint else ""))

    ratio = cfg["ratio"]
    if not (_is_number(ratio) and 0 < ratio <= 0.95):
        raise LDACError(f"ratio must be in (0, 0.95], got {ratio!r}")
    target = cfg["target"]
    if target not in TARGETS:
        hint = closest(target, TARGETS) if isinstance(target, str) else None
        msg = f"target must be one of {', '.join(TARGETS)}, got {target!r}"
        raise LDACError(msg + (f"; did you mean {hint!r}?" if hint else ""))
    _check_int(cfg, "rounds", 1)
    _check_int(cfg, "epochs_per_round", 0)
    _check_int(cfg, "finetune_epochs", 0)
    if cfg["round_to"] != "auto":
        _check_int(cfg, "round_to", 1)
    _check_latency_keys(cfg)
    _check_budget_keys(cfg)
    _check_int(cfg, "calib_batches", 0)
    for key in ("ld_alpha", "cov_beta", "align_gamma"):
        if not (_is_number(cfg[key]) and cfg[key] >= 0):
            raise LDACError(f"{key} must be a number >= 0, got {cfg[key]!r}")
    if cfg["tracer"] not in ("gradient", "weights"):
        raise LDACError(f"tracer must be gradient or weights, got {cfg['tracer']!r}")
    if not isinstance(cfg["level_assign"], bool):
        raise LDACError(f"level_assign must be True or False, got {cfg['level_assign']!r}")
    if cfg["pool"] not in ("max", "mean"):
        raise LDACError(f"pool must be max or mean, got {cfg['pool']!r}")
    _check_int(cfg, "background", 0)
    if not (_is_number(cfg["fade_end"]) and 0 < cfg["fade_end"] <= 1):
        raise LDACError(f"fade_end must be in (0, 1], got {cfg['fade_end']!r}")
    if not (cfg["lr_scale"] == "auto" or (_is_number(cfg["lr_scale"]) and cfg["lr_scale"] > 0)):
        raise LDACError(f"lr_scale must be auto or a number > 0, got {cfg['lr_scale']!r}")
    if cfg["release"] not in ("handoff", "fade"):
        raise LDACError(f"release must be handoff or fade, got {cfg['release']!r}")
    if not (_is_number(cfg["ld_check"]) and cfg["ld_check"] >= 0):
        raise LDACError(f"ld_check must be a number >= 0, got {cfg['ld_check']!r}")
    if not (_is_number(cfg["rho"]) and cfg["rho"] > 0):
        raise LDACError(f"rho must be a number > 0, got {cfg['rho']!r}")
    floor = cfg["floor"]
    if not (_is_number(floor) and 0 < floor < 1):
        raise LDACError(f"floor must be in (0, 1), got {floor!r}")
    tol = cfg["tolerance"]
    if not (_is_number(tol) and 0 <= tol < 1):
        raise LDACError(f"tolerance must be in [0, 1), got {tol!r}")
    rtol = cfg["parity_rtol"]
    if rtol is not None and not (_is_number(rtol) and rtol > 0):
        raise LDACError(f"parity_rtol must be a number > 0 (or empty), got {rtol!r}")
    if cfg["half"] and cfg["int8"]:
        raise LDACError("half=True and int8=True exclude each other: pick one precision")
    _check_int(cfg, "calib_images", 1)
    _check_int(cfg, "runs", 1)
    _check_int(cfg, "warmup", 0)
    for key in ("formats", "precisions", "threads"):
        if not isinstance(cfg[key], (str, int, list)) or cfg[key] in ("", []):
            raise LDACError(f"{key} must be a comma-separated list, got {cfg[key]!r}")
    if cfg["epochs"] is not None and not (_is_int(cfg["epochs"]) and cfg["epochs"] >= 0):
        raise LDACError(f"epochs must be an integer >= 0 (or none), got {cfg['epochs']!r}")
    for key in _BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            raise LDACError(f"{key} must be True or False, got {cfg[key]!r}")
    if not isinstance(cfg["format"], str) or not cfg["format"]:
        raise LDACError(f"format must be an export format name such as 'onnx', got {cfg['format']!r}")
    from yolo_ldac.deploy.litert_int8 import INT8_FLOAT_CHOICES

    if cfg["int8_float"] not in INT8_FLOAT_CHOICES:
        raise LDACError(f"int8_float must be one of {', '.join(INT8_FLOAT_CHOICES)}, got {cfg['int8_float']!r}")
    resume = cfg.get("resume")
    if not isinstance(resume, (bool, str)) or resume == "":
        raise LDACError(f"resume must be True, False or a run directory, got {resume!r}")
    if resume and mode not in ("compress", "prune", "finetune"):
        raise LDACError(f"resume= applies to compress, prune and finetune runs, not to {mode}")
    _check_shared(cfg, explicit)
    _check_parts(cfg, explicit)
    _check_ultralytics_values(explicit)


def _load_cfg_file(path: Any) -> dict:
    """Read a yaml of overrides given as ``cfg=FILE`` (like Ultralytics' ``cfg=``); its keys are checked too."""
    p = Path(str(path))
    if not p.is_file():
        raise LDACError(f"cfg file '{path}' not found")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise LDACError(f"cfg file '{path}' is not valid yaml ({str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise LDACError(f"cfg file '{path}' must hold key: value pairs")
    return loaded


def get_cfg(overrides: dict | None = None, mode: str | None = None) -> dict:
    """Return the defaults merged with ``overrides``, checked.

    Args:
        overrides: keys to change; each must be one of ours (``default.yaml``) or one of Ultralytics'.
        mode: when given, sets ``mode`` (wins over ``overrides["mode"]``).

    Returns:
        A new flat dict: every key of ``default.yaml`` plus the Ultralytics keys given in ``overrides``. In
        ``finetune`` mode an unset ``epochs`` (None) is resolved to ``finetune_epochs``.

    Raises:
        LDACError: an unknown key (the message suggests the closest valid one) or an invalid value (ratio outside
            (0, 0.95], unknown target or mode, rounds < 1, negative epoch counts, round_to < 1, floor outside
            (0, 1), a non-boolean switch, ...). ``method`` is checked against
            ``yolo_ldac.pruning.criteria.CRITERIA`` when it is given and that registry exists.
    """
    overrides = dict(overrides or {})
    if not all(isinstance(k, str) for k in overrides):
        raise LDACError(f"configuration keys must be strings, got {[k for k in overrides if not isinstance(k, str)]!r}")
    if overrides.get("cfg"):
        overrides = {**_load_cfg_file(overrides["cfg"]), **{k: v for k, v in overrides.items() if k != "cfg"}}
    overrides.pop("cfg", None)
    check_keys(overrides)
    cfg = load_defaults()
    cfg.update(overrides)
    if mode is not None:
        cfg["mode"] = mode
    _validate(cfg, overrides)
    if cfg["mode"] == "finetune" and cfg["epochs"] is None:
        cfg["epochs"] = cfg["finetune_epochs"]
    return cfg


def split_args(cfg: dict) -> tuple[dict, dict]:
    """Split a merged configuration into (yolo-ldac's keys, keyword arguments for Ultralytics).

    The first dict holds every key of ``default.yaml`` found in ``cfg``. The second holds every Ultralytics key
    of ``cfg`` that is not one of ours (``lr0``, ``mosaic``, ...), plus the keys we share with Ultralytics
    (``SHARED_KEYS``: imgsz, batch, device, workers, seed, plots, verbose, project, name, exist_ok, epochs,
    data, model) whose value is not None; None there means "not set" and is left to Ultralytics' default.
    Our other keys (``mode``, ``format``, ...) are never forwarded.
    """
    ours = _defaults()
    ultra_keys = _ultralytics_keys()
    ldac = {k: v for k, v in cfg.items() if k in ours}
    ultra = {
        k: v
        for k, v in cfg.items()
        if k in ultra_keys and (k not in ours or (k in SHARED_KEYS and v is not None))
    }
    return ldac, ultra


__all__ = [
    "DEFAULT_CFG_PATH",
    "MODES",
    "SHARED_KEYS",
    "TARGETS",
    "check_keys",
    "check_optimizer",
    "closest",
    "get_cfg",
    "load_defaults",
    "parse_value",
    "split_args",
    "stride_multiple",
    "round_imgsz",
    "model_stride",
    "ultralytics_keys",
    "ultralytics_optimizers",
    "valid_keys",
]
