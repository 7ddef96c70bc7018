"""Load an Ultralytics detector and adapt it for channel pruning.

The adapter owns three things: loading a detector from a checkpoint, a yaml or a live model (with one-line
errors for bad input); rewriting split blocks to their two-convolution form (checked for equal outputs); and
naming the layers whose output channels must never be pruned (the head's prediction convolutions, the DFL and
attention internals whose reshapes fix their widths).
"""

from __future__ import annotations

import copy

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError
from yolo_ldac.nn.modules import C2fCIBSplit, C2fSplit, C3k2Split, ELAN1Split, RepNCSPELAN4Split

REWRITE_ATOL = 1e-4  # largest difference of any raw head tensor, relative to its largest magnitude


def split_rewrites() -> dict[type, Any]:
    """Ultralytics block class -> the function building its two-convolution form (exact class match: ``C2fCIB``
    is a ``C2f`` subclass, ``ELAN1`` a ``RepNCSPELAN4`` one, each with its own form).

    Example:
        >>> from ultralytics.nn.modules.block import ELAN1
        >>> split_rewrites()[ELAN1].__self__.__name__
        'ELAN1Split'
    """
    from ultralytics.nn.modules.block import C2f, C2fCIB, C3k2, ELAN1, RepNCSPELAN4

    return {C2f: C2fSplit.from_block, C3k2: C3k2Split.from_block, C2fCIB: C2fCIBSplit.from_block,
            RepNCSPELAN4: RepNCSPELAN4Split.from_block, ELAN1: ELAN1Split.from_block}


def load_detection_model(src: Any, trusted: bool | None = None) -> nn.Module:
    """Return an Ultralytics ``DetectionModel`` (float32, CPU) from a path, a model name, a yaml or a live model.

    Names Ultralytics knows (``yolov8n.pt``) download through Ultralytics when online, as in ``YOLO(...)``. A
    portable pair (``best.json`` / ``best.safetensors``) is rebuilt without unpickling. Unless ``trusted`` (default:
    the current :func:`yolo_ldac.safe_load.policy`, safe), a ``.pt`` is loaded with ``weights_only=True`` and an
    allow-list, and a yaml is checked before Ultralytics parses it (:mod:`yolo_ldac.safe_load`).

    Example:
        >>> model = load_detection_model("yolov8n.yaml")
        >>> type(model).__name__
        'DetectionModel'
    """
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac import safe_load

    trusted = safe_load.is_trusted() if trusted is None else bool(trusted)
    if isinstance(src, DetectionModel):
        model = src
    elif hasattr(src, "model") and isinstance(getattr(src, "model"), DetectionModel):  # a YOLO wrapper
        model = src.model
    elif isinstance(src, (str, Path)):
        path = Path(src)
        if path.suffix in {".json", ".safetensors"}:
            from yolo_ldac.checkpoint import load_portable

            model = load_portable(path)
            check_is_detector(model, src)
            return model.float().cpu()
        if path.suffix not in {".pt", ".yaml", ".yml"}:
            raise LDACError(f"model '{src}' must be a .pt checkpoint or a .yaml model definition (or a portable "
                            "best.json)")
        if path.suffix == ".pt" and not path.exists() and not _is_ultralytics_asset(path.name):
            raise LDACError(f"model file '{src}' not found")
        spec = None
        try:
            if path.suffix == ".pt":
                model = safe_load.load_model(path, trusted=trusted)
            else:
                spec = safe_load.load_model_yaml(path, trusted=trusted)  # before Ultralytics parses (evaluates) it
                with safe_load.policy(trusted):
                    model = YOLO(str(src)).model  # the task from the yaml (its head, or -seg/-pose/-obb)
        except LDACError:
            raise
        except FileNotFoundError as e:
            raise LDACError(f"model '{src}' could not be loaded: {e}") from e
        except Exception as e:  # Ultralytics raises many types for corrupt or non-model files
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            problem = yaml_layer_problem(spec) if isinstance(spec, dict) else None
            if problem:  # Ultralytics' parser says only what failed inside it ("'<' not supported ...")
                raise LDACError(f"model yaml '{src}': {problem} (Ultralytics' parser: {why})") from e
            raise LDACError(f"model '{src}' could not be loaded ({why})") from e
    else:
        raise LDACError(f"model must be a path, a model name or an Ultralytics DetectionModel, got {type(src).__name__}")
    check_is_detector(model, src)
    return model.float().cpu()


# Names Ultralytics' parse_model resolves in a layer's args (its local variables), besides Python literals.
_YAML_ARG_NAMES = frozenset({"nc", "ch", "depth", "width", "max_channels", "kpt_shape", "scale", "act"})
# Layers whose arguments may be free strings (a torchvision model name, an interpolation mode, ...).
_STRING_ARG_LAYERS = ("nn.", "torchvision.", "TorchVision", "Index")


def yaml_layer_problem(spec: dict) -> str | None:
    """The first layer of a model yaml dict with a value Ultralytics' parser cannot use: a repeat count that is not
    an integer, or an argument that is a string where it expects a number (``[sixty, 3, 2]``); ``None`` when every
    layer looks right. Used to explain a failed build in one line.

    Example:
        >>> yaml_layer_problem({"backbone": [[-1, 1, "Conv", ["sixty", 3, 2]]], "head": []})
        "layer 0 (Conv) has argument 1 = 'sixty', where Ultralytics expects a number"
    """
    import ast

    layers = list(spec.get("backbone") or []) + list(spec.get("head") or [])
    for i, layer in enumerate(layers):
        if not (isinstance(layer, (list, tuple)) and len(layer) == 4):
            return f"layer {i} is {layer!r}, not [from, repeats, module, args]"
        f, n, m, args = layer
        if not (isinstance(f, int) or (isinstance(f, list) and f and all(isinstance(x, int) for x in f))):
            return f"layer {i} ({m}) has from = {f!r}, where Ultralytics expects a layer index or a list of them"
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return f"layer {i} ({m}) has repeats = {n!r}, where Ultralytics expects an integer >= 1"
        if not isinstance(args, list):
            return f"layer {i} ({m}) has args = {args!r}, where Ultralytics expects a list"
        if str(m).startswith(_STRING_ARG_LAYERS):
            continue
        for j, a in enumerate(args, 1):
            if isinstance(a, str) and a not in _YAML_ARG_NAMES:
                try:
                    ast.literal_eval(a)
                except (ValueError, SyntaxError):
                    return f"layer {i} ({m}) has argument {j} = {a!r}, where Ultralytics expects a number"
    return None


def _is_ultralytics_asset(name: str) -> bool:
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def check_is_detector(model: nn.Module, src: Any = "model") -> None:
    """Raise :class:`LDACError` unless ``model`` is an Ultralytics model yolo-ldac prunes: a detector (``Detect``,
    end-to-end or not, or YOLOv10's ``v10Detect``), or a segment, pose or obb model (:mod:`yolo_ldac.tasks`)."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.tasks import UNSUPPORTED_HEADS, head_of, task_of, task_spec

    if not isinstance(model, DetectionModel) or task_of(model) is None:
        head = head_of(model)
        if type(head).__name__ in UNSUPPORTED_HEADS:
            task_spec(model)  # its own line: which YOLO26 task head is not supported yet
        kind = type(head).__name__ if head is not None else type(model).__name__
        raise LDACError(f"'{src}' is not a model yolo-ldac prunes (its head is {kind}); yolo-ldac prunes Ultralytics "
                        "detect (Detect, v10Detect), segment, pose and obb models")


def rewrite_split_blocks(model: nn.Module, check: bool = True, imgsz: int = 64) -> int:
    """Replace every split block (:func:`split_rewrites`: ``C2f``, ``C3k2``, ``C2fCIB``, ``RepNCSPELAN4``, ``ELAN1``)
    in ``model.model`` by its two-convolution form, in place; return the count.

    With ``check`` the model's raw head tensors (every level's features, box and class maps, both branches of an
    end-to-end head) before and after are compared on a random input, and a difference above ``1e-4`` of a tensor's
    largest magnitude raises, before any pruning happens. The raw maps, not the decoded
    boxes and sigmoid scores, so that on random weights a wrong rewrite cannot hide behind the head's bias init.

    Example:
        >>> model = load_detection_model("yolo11n.yaml")
        >>> rewrite_split_blocks(model)
        8
    """
    rewrites = split_rewrites()
    seq = model.model
    targets = [(i, m) for i, m in enumerate(seq) if type(m) in rewrites]
    if not targets:
        return 0
    x = torch.rand(1, _in_channels(model), imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    before = raw_head_outputs(model, x) if check else None
    for i, block in targets:
        seq[i] = rewrites[type(block)](block)
    if check:
        diff = outputs_difference(before, raw_head_outputs(model, x))
        if diff > REWRITE_ATOL:
            model.train(was_training)
            raise LDACError(f"split-block rewrite changed the model's outputs (max diff {diff:.2e} > {REWRITE_ATOL})")
    model.train(was_training)
    return len(targets)


def outputs_difference(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """Largest ``max |a - b| / max |a|`` over paired tensors (``inf`` when shapes or counts differ).

    Relative to each tensor's own magnitude: a randomly initialised detector's features shrink layer after layer
    (to ~1e-3 in a yaml-built YOLOv8n), so an absolute tolerance would pass any rewrite of them.

    Example:
        >>> outputs_difference([torch.tensor([10.0, 0.0])], [torch.tensor([10.0, 0.5])])
        0.05
    """
    if len(before) != len(after):
        return float("inf")
    diff = 0.0
    for a, b in zip(before, after):
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            diff = max(diff, float((a - b).abs().max()) / max(float(a.abs().max()), 1e-30))
    return diff


def _in_channels(model: nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels


@torch.no_grad()
def raw_head_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The tensors of the head's raw prediction (eval mode): per branch (one-to-many, then one-to-one for an
    end-to-end head) the box and class maps before decoding and sigmoid, and the features each level reads.

    Example:
        >>> model = load_detection_model("yolo26n.yaml")
        >>> len(raw_head_outputs(model, torch.zeros(1, 3, 64, 64)))  # 2 branches x (boxes, scores, 3 feature maps)
        10
    """
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    finally:
        model.train(was_training)
    raw = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else out
    tensors: list[torch.Tensor] = []

    def collect(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            tensors.append(v.detach().float().clone())
        elif isinstance(v, dict):
            for key in sorted(v):
                collect(v[key])
        elif isinstance(v, (list, tuple)):
            for item in v:
                collect(item)

    collect(raw)
    return tensors


def protected_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are never pruned: the head's final convolutions of every branch (box, class,
    and the task's mask coefficients, keypoints or angles), a segmentation head's prototype output, the DFL, and
    the convolutions inside attention blocks (their widths are fixed by head reshapes)."""
    from yolo_ldac.tasks import answer_convs

    head = model.model[-1]
    keep: list[nn.Module] = list(answer_convs(model))
    dfl = getattr(head, "dfl", None)
    if isinstance(dfl, nn.Module):
        keep.extend(m for m in dfl.modules() if isinstance(m, nn.Conv2d))
    for m in model.modules():
        if "attn" in type(m).__name__.lower() or "attention" in type(m).__name__.lower():
            keep.extend(c for c in m.modules() if isinstance(c, nn.Conv2d))
    keep.extend(adown_producers(model))
    # Ultralytics' Conv wraps nn.Conv2d: torch-pruning roots groups at the nn.Conv2d itself.
    flat: list[nn.Module] = []
    for m in keep:
        flat.extend(c for c in m.modules() if isinstance(c, nn.Conv2d))
    return list(dict.fromkeys(flat))


def adown_producers(model: nn.Module) -> list[nn.Module]:
    """The convolutions whose output an ``ADown`` (YOLOv9-c/e) splits in halves with ``chunk(2, 1)``.

    ADown's two branches each read one half of its input; removing a channel from one half would shift the split
    point, which a fixed ``chunk`` cannot follow, so the producer's output channels are protected (ADown's own
    convolutions and everything after it stay prunable).

    Example:
        >>> len(adown_producers(load_detection_model("yolov9t.yaml")))  # v9-t downsamples with AConv, no split
        0
    """
    from ultralytics.nn.modules.block import ADown

    seq = model.model
    found: list[nn.Module] = []
    for i, m in enumerate(seq):
        if type(m) is not ADown:
            continue
        src = m.f if isinstance(getattr(m, "f", -1), int) else -1
        producer = seq[i + src if src < 0 else src]
        conv = _output_conv(producer)
        if conv is None:
            raise LDACError(f"cannot prune layer {i} (ADown): its input comes from a {type(producer).__name__}, not "
                            "a convolution yolo-ldac can keep whole")
        found.append(conv)
    return found


def _output_conv(layer: nn.Module) -> nn.Module | None:
    """The convolution that writes ``layer``'s output (an Ultralytics ``Conv``, or a split block's output conv)."""
    if isinstance(layer, C2fSplit):
        return layer.cv2
    if isinstance(getattr(layer, "conv", None), nn.Conv2d):
        return layer
    return None


def adapt_head_to_names(model: nn.Module, names: dict[int, str], verbose: bool = True, seed: int = 0,
                        kpt_shape: list[int] | tuple[int, ...] | None = None) -> nn.Module:
    """Return a model whose class head matches ``names`` (and, for a pose model, whose keypoint head matches the
    data's ``kpt_shape``); rows are remapped by class name like Ultralytics does, of the same task as ``model``.

    A COCO model fine-tuned on a new class list keeps its knowledge of the classes whose names match; validating
    the raw 80-class model on that data would compare class ids and silently give ~0 mAP. The rows of classes new
    to the model are initialised from ``seed`` (the global RNG is left as it was), so the same inputs give the same
    weights.

    Example:
        >>> m = load_detection_model("yolov8n.yaml")
        >>> a = adapt_head_to_names(m, {0: "cat", 1: "dog"}, seed=1).model[-1].cv3[0][-1].weight
        >>> b = adapt_head_to_names(m, {0: "cat", 1: "dog"}, seed=1).model[-1].cv3[0][-1].weight
        >>> bool(torch.equal(a, b))
        True
    """
    from yolo_ldac.tasks import model_class, task_of

    task = task_of(model) or "detect"
    names = {int(k): str(v) for k, v in dict(names).items()}
    head = model.model[-1]
    kpt_shape = [int(k) for k in kpt_shape] if task == "pose" and kpt_shape else None
    new_kpts = kpt_shape is not None and [int(k) for k in head.kpt_shape] != kpt_shape
    if dict(getattr(model, "names", {})) == names and not new_kpts:
        return model
    if any(isinstance(m, C2fSplit) for m in model.model):
        what = "keypoints" if new_kpts else "class list"
        raise LDACError(f"cannot change the {what} of an already pruned model; fine-tune it on data with its own "
                        f"{what}")
    extra = {"data_kpt_shape": tuple(kpt_shape)} if new_kpts else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        new = model_class(task)(copy.deepcopy(model.yaml), nc=len(names), verbose=False, **extra)
    new.names = names
    new.load(model, verbose=verbose)
    new.args = getattr(model, "args", None)
    return new.float()


def ultralytics_gflops(model: nn.Module, imgsz: int = 640) -> float | None:
    """GFLOPs of ``model`` at a square ``imgsz`` by Ultralytics' own counter (thop, what ``YOLO().info()`` prints);
    None when it cannot count (thop missing or failing: Ultralytics then reports 0).

    Example:
        >>> round(ultralytics_gflops(load_detection_model("yolo11n.yaml")), 1)
        6.7
    """
    from ultralytics.utils.torch_utils import get_flops

    gflops = float(get_flops(model, imgsz))
    return gflops if gflops > 0 else None


def model_complexity(model: nn.Module, imgsz: int = 640) -> dict:
    """``{"flops_g", "params_m", "channels"}`` of a detector at a square ``imgsz`` (FLOPs in G by Ultralytics'
    counter, see :func:`ultralytics_gflops`; params in M)."""
    from yolo_ldac.pruning.complexity import measure

    c = measure(model, imgsz, protected=protected_layers(model), flops_fn=ultralytics_gflops)
    return {"flops_g": round(c.flops_g, 4), "params_m": round(c.params / 1e6, 4), "channels": c.channels}
