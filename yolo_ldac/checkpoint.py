"""Pickle-free checkpoints for pruned detectors: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (architecture).

A ``.pt`` file is a pickle: loading an untrusted one runs arbitrary code. A pruned model cannot be rebuilt from its
Ultralytics yaml alone (its convolutions are narrower than the yaml says), so the portable format stores, next to
the weights, everything needed to rebuild the exact pruned architecture:

``<stem>.json`` (human-readable, one entry per line where it fits)::

    format          "yolo-ldac-portable"
    version         1
    yaml            the base model's Ultralytics yaml dict (``model.yaml``)
    nc, names       number of classes and {class id: name}
    stride          the model's stride values, e.g. [8.0, 16.0, 32.0]
    split_blocks    True when C2fSplit/C3k2Split are present: the loader rewrites split blocks after building
    fused           True when Conv+BN were fused (``model.fuse()``): the loader fuses before loading weights
    layers          the type of every top-level layer (checked after rebuilding)
    convs           {module name: {in_channels, out_channels, groups, kernel, stride, padding, bias}} (every Conv2d)
    batchnorms      {module name: {num_features}} (every BatchNorm2d)
    attrs           {module name: {attribute: value}}: integer attributes that differ from the freshly built model
    channels        {conv name: [unpruned out_channels, kept out_channels]}
    args            the model's training arguments (JSON-serialisable ones only), or {}

``<stem>.safetensors``: the state dict (floating tensors as float32, all contiguous).

Loading never calls ``torch.load`` or unpickles anything: the model is rebuilt from the yaml (whose layer names
are checked to be ``nn.Module`` classes and whose ``activation`` must be a literal ``nn.<Class>(...)`` call, since
Ultralytics would otherwise ``eval`` it), the recorded shapes are applied, and the weights are loaded with
``strict=True``.

Example:
    >>> from yolo_ldac.checkpoint import save_portable, load_portable
    >>> path = save_portable(model, "runs/prune/best")  # -> runs/prune/best.safetensors + best.json
    >>> model2 = load_portable(path)  # DetectionModel in eval mode, identical outputs
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError
from yolo_ldac.tasks import TASKS

FORMAT_NAME = "yolo-ldac-portable"
FORMAT_VERSION = 1
_ATTR_TYPES = (int,)  # plain integer attributes (channel counts, heads, ...) that pruning may change


# ----------------------------------------------------------------------------------------------------------- paths
def portable_paths(path: str | Path) -> tuple[Path, Path]:
    """Return ``(<stem>.safetensors, <stem>.json)`` for a stem or a ``.safetensors`` / ``.json`` / ``.pt`` path."""
    p = Path(path)
    if p.suffix in {".safetensors", ".json", ".pt"}:
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from yolo_ldac.utils.io import atomic_write_bytes

    atomic_write_bytes(path, data)


# ------------------------------------------------------------------------------------------------------------ save
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)  # a segmentation head's Proto upsamples with a ConvTranspose2d


def _conv_record(m: nn.Conv2d | nn.ConvTranspose2d) -> dict[str, Any]:
    return {
        "in_channels": int(m.in_channels),
        "out_channels": int(m.out_channels),
        "groups": int(m.groups),
        "kernel": [int(k) for k in m.kernel_size],
        "stride": [int(s) for s in m.stride],
        "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
        "bias": m.bias is not None,
    }


def _int_attrs(m: nn.Module) -> dict[str, int]:
    return {
        k: v
        for k, v in vars(m).items()
        if not k.startswith("_") and type(v) in _ATTR_TYPES and k != "training"
    }


def _has_split_blocks(model: nn.Module) -> bool:
    from yolo_ldac.nn.modules import C2fSplit

    return any(isinstance(m, C2fSplit) for m in model.modules())


def _is_fused(model: nn.Module) -> bool:
    from ultralytics.nn.modules import Conv

    return any(isinstance(m, Conv) and not hasattr(m, "bn") for m in model.modules())


def _json_safe(obj: Any) -> Any:
    """``obj`` with everything not representable in JSON dropped (dict entries) or stringified (Paths)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = _json_safe(v)
            if v is not _DROP:
                out[str(k)] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [x for x in (_json_safe(v) for v in obj) if x is not _DROP]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return _DROP


_DROP = object()


def _dumps(obj: Any, indent: int = 0, width: int = 150) -> str:
    """JSON with containers kept on one line when they fit in ``width`` characters (readable, diff-friendly)."""
    flat = json.dumps(obj)
    if not isinstance(obj, (dict, list)) or len(flat) + indent <= width or not obj:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, indent + 2, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{_dumps(v, indent + 2, width)}" for v in obj]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def _build_base(yaml: dict, nc: int, split: bool, fused: bool, task: str = "detect") -> nn.Module:
    """The unpruned model of the same yaml (random weights) and task, in the same structural form as the saved one."""
    from yolo_ldac.nn.adapter import rewrite_split_blocks
    from yolo_ldac.tasks import model_class

    cfg = copy.deepcopy(yaml)
    cfg["nc"] = nc  # avoids Ultralytics' "Overriding model.yaml nc=..." message
    model = model_class(task)(cfg, ch=int(cfg.get("channels", 3)), nc=nc, verbose=False)
    if split:
        rewrite_split_blocks(model, check=False)
    if fused:
        model.fuse(verbose=False)
    return model


def save_portable(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as ``<stem>.safetensors`` + ``<stem>.json`` and return the ``.safetensors`` path.

    Args:
        model: an Ultralytics ``DetectionModel`` (pruned or not; split blocks and fused Conv+BN are supported).
        path: the stem, or a ``.safetensors`` / ``.json`` path (the other file goes next to it).

    Raises:
        LDACError: the model has no ``yaml`` (not built by Ultralytics) or the files cannot be written.
    """
    from safetensors.torch import save as st_save

    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict) or "backbone" not in yaml:
        raise LDACError(f"cannot save {type(model).__name__} portably: it has no Ultralytics model yaml")
    head = model.model[-1]
    nc = int(getattr(head, "nc", yaml.get("nc", 0)))
    names = {int(k): str(v) for k, v in dict(getattr(model, "names", None) or {}).items()}
    split, fused = _has_split_blocks(model), _is_fused(model)
    yaml = _json_safe(yaml)

    convs = {n: _conv_record(m) for n, m in model.named_modules() if isinstance(m, _CONVS)}
    bns = {n: {"num_features": int(m.num_features)} for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}

    from yolo_ldac.tasks import task_of

    task = task_of(model) or "detect"
    base = _build_base(yaml, nc, split, fused, task)
    base_modules = dict(base.named_modules())
    attrs, channels = {}, {}
    for name, m in model.named_modules():
        b = base_modules.get(name)
        if b is None:
            continue
        if isinstance(m, _CONVS) and isinstance(b, _CONVS):
            channels[name] = [int(b.out_channels), int(m.out_channels)]
        if isinstance(m, (*_CONVS, nn.BatchNorm2d)):
            continue  # recorded in full in "convs" / "batchnorms"
        diff = {k: v for k, v in _int_attrs(m).items() if _int_attrs(b).get(k, v) != v}
        if diff:
            attrs[name] = diff

    stride = getattr(model, "stride", None)
    stride = [float(s) for s in torch.as_tensor(stride).flatten().tolist()] if stride is not None else None
    args = getattr(model, "args", None)
    args = _json_safe(vars(args) if hasattr(args, "__dict__") and not isinstance(args, dict) else (args or {}))

    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "ultralytics": _version("ultralytics"),
        "torch": torch.__version__.split("+")[0],
        "yaml": yaml,
        "task": task,
        "nc": nc,
        "names": {str(k): v for k, v in names.items()},
        "stride": stride,
        "split_blocks": split,
        "fused": fused,
        "layers": [type(m).__name__ for m in model.model],
        "convs": convs,
        "batchnorms": bns,
        "attrs": attrs,
        "channels": channels,
        "args": args if isinstance(args, dict) else {},
    }
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in model.state_dict().items()
    }
    st_path, js_path = portable_paths(path)
    weights = _sorted_metadata(st_save(state, metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}))
    # The pair is one artifact: the JSON, written last, names the hash of the weights it belongs to, so a crash
    # between the two writes leaves a pair that load_portable refuses instead of a silent mismatch.
    meta["safetensors_sha256"] = hashlib.sha256(weights).hexdigest()
    try:
        st_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(st_path, weights)
        _atomic_write_bytes(js_path, (_dumps(meta) + "\n").encode("utf-8"))
    except OSError as e:
        raise LDACError(f"cannot write portable checkpoint '{st_path}': {e.strerror or e}") from e
    return st_path


def _sorted_metadata(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its ``__metadata__`` keys in sorted order.

    safetensors writes that map in hash order, which is random per process: the same weights then give different
    bytes (and a different hash in the JSON). The header keeps its length, so the data offsets stay valid.
    """
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    if len(text) > n:  # never expected (same content, same compact form): keep the file as written
        return blob
    return blob[:8] + text.ljust(n, b" ") + blob[8 + n:]


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------------------ load
def _check_yaml_safe(yaml: dict, src: Path) -> None:
    """Refuse yaml content that would make Ultralytics' model parser run code: layer names must resolve to
    ``nn.Module`` classes and ``activation`` must be a literal ``[torch.]nn.<Activation>(literal args)`` call. A
    portable pair is checked whatever the trust: it is meant to be safe to open."""
    from yolo_ldac.safe_load import check_model_yaml

    check_model_yaml(yaml, src, trusted=False, hint=None)


def _read_meta(js_path: Path) -> dict:
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LDACError(f"'{js_path}' is not valid JSON (line {e.lineno}: {e.msg})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise LDACError(f"cannot read '{js_path}': {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise LDACError(f"'{js_path}' is not a yolo-ldac portable checkpoint (no \"format\": \"{FORMAT_NAME}\")")
    if meta.get("version") != FORMAT_VERSION:
        raise LDACError(f"'{js_path}' has format version {meta.get('version')}, this yolo-ldac reads {FORMAT_VERSION}")
    for key in ("yaml", "nc", "convs", "batchnorms"):
        if key not in meta:
            raise LDACError(f"'{js_path}' lacks the '{key}' entry")
    return meta


def _resize_conv(m: nn.Conv2d | nn.ConvTranspose2d, rec: dict, name: str, js_path: Path) -> None:
    try:
        cin, cout, groups = int(rec["in_channels"]), int(rec["out_channels"]), int(rec["groups"])
        kernel, stride = tuple(int(k) for k in rec["kernel"]), tuple(int(s) for s in rec["stride"])
        padding = rec["padding"] if isinstance(rec["padding"], str) else tuple(int(p) for p in rec["padding"])
        bias = bool(rec["bias"])
    except (KeyError, TypeError, ValueError) as e:
        raise LDACError(f"'{js_path}': bad conv record for '{name}' ({type(e).__name__}: {e})") from None
    if min(cin, cout, groups) < 1 or cin % groups or cout % groups:
        raise LDACError(f"'{js_path}': conv '{name}' has inconsistent channels {cin}->{cout} in {groups} groups")
    m.in_channels, m.out_channels, m.groups = cin, cout, groups
    m.kernel_size, m.stride, m.padding = kernel, stride, padding
    if isinstance(padding, tuple):
        m._reversed_padding_repeated_twice = [p for p in reversed(padding) for _ in range(2)]
    shape = (cin, cout // groups) if isinstance(m, nn.ConvTranspose2d) else (cout, cin // groups)
    m.weight = nn.Parameter(torch.empty(*shape, *kernel), requires_grad=m.weight.requires_grad)
    m.bias = nn.Parameter(torch.empty(cout)) if bias else None


def _resize_bn(m: nn.BatchNorm2d, rec: dict, name: str, js_path: Path) -> None:
    try:
        n = int(rec["num_features"])
    except (KeyError, TypeError, ValueError):
        raise LDACError(f"'{js_path}': bad batchnorm record for '{name}'") from None
    m.num_features = n
    if m.affine:
        m.weight, m.bias = nn.Parameter(torch.empty(n)), nn.Parameter(torch.empty(n))
    if m.track_running_stats:
        m.running_mean, m.running_var = torch.empty(n), torch.empty(n)


def check_pair_hash(meta: dict, st_path: Path, js_path: Path) -> None:
    """The JSON's ``safetensors_sha256`` against the weights file: a mismatch (the weights of another save) or a
    value that is no sha256 is refused; a JSON without one (written by hand or by an old version) loads with a
    one-line warning, since nothing then shows that the two files belong together.

    Example:
        >>> check_pair_hash({"safetensors_sha256": "0" * 64}, Path("best.safetensors"), Path("best.json"))  # doctest: +SKIP
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: 'best.safetensors' does not match 'best.json': the weights' hash differs ...
    """
    digest = meta.get("safetensors_sha256")
    if digest is None:
        from yolo_ldac.utils.log import LOGGER

        LOGGER.warning(f"'{js_path}' records no safetensors_sha256: nothing shows that '{st_path.name}' holds the "
                       "weights it was written with (save the model again to record it)")
        return
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest.lower())):
        raise LDACError(f"'{js_path}': safetensors_sha256 must be the 64 hex digits of the weights' sha256, got "
                        f"{digest!r}")
    if hashlib.sha256(st_path.read_bytes()).hexdigest() != digest.lower():
        raise LDACError(f"'{st_path}' does not match '{js_path}': the weights' hash differs from the one the JSON "
                        "was written with (another save's weights, or an incomplete pair: save it again)")


def load_portable(path: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_portable` without unpickling anything; return it in eval mode.

    Args:
        path: the ``.safetensors`` or ``.json`` file, or their common stem.

    Raises:
        LDACError: a file is missing, the JSON is not a portable checkpoint, or it does not match the weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st_path, js_path = portable_paths(path)
    for p in (js_path, st_path):
        if not p.is_file():
            raise LDACError(f"portable checkpoint file '{p}' not found")
    meta = _read_meta(js_path)
    yaml = meta["yaml"]
    if not isinstance(yaml, dict):
        raise LDACError(f"'{js_path}': 'yaml' must be a mapping")
    _check_yaml_safe(yaml, js_path)
    try:
        nc = int(meta["nc"])
        task = meta.get("task", "detect")
        if task not in TASKS:
            raise LDACError(f"'{js_path}': unknown task {task!r} (yolo-ldac knows {', '.join(TASKS)})")
        model = _build_base(yaml, nc, bool(meta.get("split_blocks")), bool(meta.get("fused")), task)
    except LDACError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise LDACError(f"'{js_path}': cannot build the model from its yaml ({type(e).__name__}: {msg})") from e

    layers = meta.get("layers")
    built = [type(m).__name__ for m in model.model]
    if layers is not None and layers != built:
        raise LDACError(f"'{js_path}': the rebuilt layers {built} differ from the recorded ones {layers}")

    modules = dict(model.named_modules())
    for kind, records, cls, resize in (
        ("conv", meta["convs"], _CONVS, _resize_conv),
        ("batchnorm", meta["batchnorms"], nn.BatchNorm2d, _resize_bn),
    ):
        present = {n for n, m in modules.items() if isinstance(m, cls)}
        if set(records) != present:
            extra, missing = sorted(set(records) - present), sorted(present - set(records))
            raise LDACError(f"'{js_path}': {kind} names do not match the model (unknown: {extra[:3]}, missing: {missing[:3]})")
        for name, rec in records.items():
            resize(modules[name], rec, name, js_path)
    for name, values in (meta.get("attrs") or {}).items():
        m = modules.get(name)
        if m is None:
            raise LDACError(f"'{js_path}': attrs refer to unknown module '{name}'")
        for k, v in values.items():
            if not isinstance(v, int) or type(getattr(m, k, None)) is not int:
                raise LDACError(f"'{js_path}': attribute '{name}.{k}' cannot be set to {v!r}")
            setattr(m, k, v)

    check_pair_hash(meta, st_path, js_path)
    try:
        state = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LDACError(f"'{st_path}' is not a readable safetensors file ({e})") from e
    expected = model.state_dict()
    if set(state) != set(expected):
        extra, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
        raise LDACError(f"'{st_path}' does not match '{js_path}' (unexpected: {extra[:3]}, missing: {missing[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise LDACError(
                f"'{st_path}' does not match '{js_path}': '{k}' has shape {tuple(v.shape)} in the weights "
                f"but {tuple(expected[k].shape)} in the JSON architecture"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LDACError(f"'{st_path}' does not match '{js_path}': {str(e).splitlines()[0]}") from e

    names = meta.get("names") or {}
    model.names = {int(k): str(v) for k, v in names.items()} if names else {i: str(i) for i in range(nc)}
    if meta.get("stride"):
        stride = torch.tensor(meta["stride"], dtype=torch.float32)
        model.stride = stride
        if hasattr(model.model[-1], "stride"):
            model.model[-1].stride = stride.clone()
    if meta.get("args"):
        model.args = dict(meta["args"])
    model.pt_path = str(st_path)
    return model.float().eval()


# ------------------------------------------------------------------------------------------- Ultralytics checkpoints
def save_ultralytics_checkpoint(model: nn.Module, path: str | Path, cfg: dict, half: bool = True,
                                phase: dict | None = None) -> Path:
    """Save ``model`` the way Ultralytics' trainer does, so ``YOLO(path)`` loads, validates, predicts, exports.

    ``phase`` (``{"run", "phase", "finished"}``) is recorded under ``yolo_ldac``: a phase checkpoint of a run that is
    not finished says so (``yolo-ldac info`` prints it). ``half=False`` keeps float32 weights (resumable phases).
    Written atomically.
    """
    from datetime import datetime

    import ultralytics

    from yolo_ldac.tasks import task_of
    from yolo_ldac.utils.io import atomic_save

    ema = copy.deepcopy(model).cpu()
    ema = (ema.half() if half else ema.float()).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.criterion = None
    meta = {"method": cfg.get("method"), "ratio": cfg.get("ratio"), "finished": True}
    if phase:
        meta.update(phase)
    ckpt = {
        "epoch": -1, "best_fitness": None, "model": None, "ema": ema, "updates": None, "optimizer": None,
        "train_args": {k: v for k, v in cfg.items() if k in {"data", "imgsz", "batch"}}
                      | {"task": task_of(model) or "detect"},
        "date": datetime.now().isoformat(), "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)", "yolo_ldac": meta,
    }
    return atomic_save(path, lambda tmp: torch.save(ckpt, tmp))


def unfinished_notice(path: str | Path) -> str | None:
    """A one-line notice when ``path`` is not a finished model of a yolo-ldac run (a phase checkpoint, a training
    phase's per-epoch weights, or a file of a run whose ``state.json`` is not finished); ``None`` otherwise."""
    path = Path(path).resolve()
    if path.suffix != ".pt" or not path.is_file():
        return None
    from yolo_ldac.schedule.state import STATE_FILE

    for parent in path.parents:
        state_file = parent / STATE_FILE
        if state_file.is_file():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return f"{path} lies in the run {parent}, whose {STATE_FILE} cannot be read"
            is_best = path == (parent / "weights" / "best.pt").resolve()
            if is_best and state.get("status") == "finished":
                return None
            where = state.get("current") or (state.get("done") or [{}])[-1].get("name")
            if is_best:
                return f"the run {parent} is not finished (status {state.get('status')}, at phase {where})"
            return (f"{path.name} is not a finished model: an intermediate file of the run {parent} (status "
                    f"{state.get('status')}, phase {where}); the run's model is weights/best.pt once it finishes")
        if parent == parent.parent:
            break
    try:
        from yolo_ldac.safe_load import load_checkpoint

        meta = load_checkpoint(path).get("yolo_ldac") or {}  # weights_only unless the caller trusts the file
    except Exception:
        return None
    if meta.get("finished") is False:
        return f"{path.name} is not a finished model: the checkpoint of phase {meta.get('phase')} of {meta.get('run')}"
    return None
