"""Compress a torchvision Faster R-CNN with the project's parts: the same criteria, compensations and schedule keys
as the YOLO path (``ratio``, ``rounds``, ``epochs_per_round``, ``finetune_epochs``, ``target``, ``round_to``, ``floor``,
``tolerance``, ``calib_batches``), the same engine (:class:`yolo_ldac.pruning.engine.ChannelPruner`, here with the
box head's ``nn.Linear`` layers as group roots too) and the same report.

A run: build or load the detector -> validate -> per round ([train ``epochs_per_round``] -> prune step -> validate)
-> train ``finetune_epochs`` -> validate -> ``weights/best.pt`` (+ ``best.safetensors`` / ``best.json``) and
``report.json`` / ``report.md`` / ``channels.png`` in ``project/name``. As on the YOLO path the first round prunes the
model as found (no training before it). Training is :func:`yolo_ldac.tv.train.train` (SGD, warm-up, cosine, AMP on
CUDA) with ``lr0`` (0.01), ``momentum`` (0.9), ``weight_decay`` (1e-4), times ``lr_scale``; mAP is COCO's
(pycocotools). Not on this path (yet): resume, callbacks.

Parts that cannot apply to a two-stage detector say so in one line (:data:`UNSUPPORTED`); ``push=ldac`` adds LDAC's
discriminant term on the FPN level each box is pooled from (:mod:`yolo_ldac.tv.ldac`) to the loss of every training
phase before a prune step.

Example:
    >>> from yolo_ldac.cfg import get_cfg
    >>> cfg = get_cfg({"model": "fasterrcnn_mobilenet_v3_large_fpn", "data": "my.yaml", "ratio": 0.3})  # doctest: +SKIP
    >>> result = compress(cfg, "fasterrcnn_mobilenet_v3_large_fpn")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError

# Parts that need something only Ultralytics' YOLO head has.
UNSUPPORTED = {
    "criterion": {
        "ldac_j": "needs YOLO's detection head and its task-aligned assigner (the first version's discriminant trace)",
        "px": "explains YOLO's per-anchor class logits; Faster R-CNN's classifier scores RoIs, not anchors",
    },
    "push": {
        "fade": "is built on Ultralytics' trainer (its EMA and optimizer hooks)",
        "handoff": "is built on Ultralytics' trainer (its EMA and optimizer hooks)",
    },
}
PUSHES_HERE = ("none", "ldac")


def check_parts(parts: dict[str, str]) -> None:
    """Raise one line for a part that cannot apply to a torchvision Faster R-CNN."""
    for key, name in parts.items():
        why = UNSUPPORTED.get(key, {}).get(name)
        if why:
            raise LDACError(f"{key}={name} cannot apply to a torchvision Faster R-CNN: it {why}")
    if parts.get("push", "none") not in PUSHES_HERE:
        raise LDACError(f"push={parts['push']} cannot apply to a torchvision Faster R-CNN (available here: "
                        f"{', '.join(PUSHES_HERE)})")


def load_source(source: Any, names: dict[int, str] | None, cfg: dict) -> "FasterRCNNAdapter":  # noqa: F821
    """The adapter to compress: a builder name (built for ``names``; ``weights=`` loaded), a yolo-ldac torchvision
    checkpoint, or an adapter (copied)."""
    from yolo_ldac.tv.adapter import FasterRCNNAdapter, build_adapter, is_builder_name, is_checkpoint, load_checkpoint

    if isinstance(source, FasterRCNNAdapter):
        adapter = copy.deepcopy(source)
    elif is_checkpoint(source):
        adapter = load_checkpoint(source)
    elif is_builder_name(source):
        if names is None:
            raise LDACError(f"{source} needs data=... to know its classes")
        adapter = build_adapter(source, names, int(cfg["imgsz"]), weights=cfg.get("weights"),
                                rois=cfg.get("rois"), seed=int(cfg.get("seed") or 0))
    else:
        raise LDACError(f"'{source}' is neither a torchvision Faster R-CNN builder name nor a yolo-ldac torchvision "
                        "checkpoint")
    if names is not None and adapter.names != {int(k): str(v) for k, v in names.items()}:
        raise LDACError(f"the model's classes {list(adapter.names.values())} are not the data's "
                        f"{list(names.values())}: a pruned or trained model keeps its class list")
    if int(cfg["imgsz"]) != adapter.imgsz:
        adapter.imgsz = int(cfg["imgsz"])
        adapter.detector.transform.min_size = (adapter.imgsz,)
        adapter.detector.transform.max_size = adapter.imgsz
    return adapter


def complexity(adapter: nn.Module, imgsz: int):
    from yolo_ldac.pruning.complexity import measure
    from yolo_ldac.tv.adapter import protected_layers

    return measure(adapter, imgsz, protected=protected_layers(adapter))


def model_view(adapter: nn.Module, imgsz: int) -> dict:
    """``{"flops_g", "params_m", "channels"}`` of an adapter at ``imgsz`` (FLOPs with :attr:`rois` RoIs per image)."""
    c = complexity(adapter, imgsz)
    return {"flops_g": round(c.flops_g, 4), "params_m": round(c.params / 1e6, 4), "channels": c.channels}


def train_settings(cfg: dict, trained: bool = False) -> dict:
    """The training loop's settings from a cfg (Ultralytics' key names, torchvision detection's usual values);
    ``lr_scale=auto`` is 0.25 for ``trained`` weights (a checkpoint or ``weights=``), 1 from scratch."""
    from yolo_ldac.cfg import resolve_lr_scale

    scale = resolve_lr_scale(cfg.get("lr_scale", 1.0) or 1.0, trained)
    return {"lr": float(cfg.get("lr0", 0.01)) * scale,
            "momentum": float(cfg.get("momentum", 0.9)), "weight_decay": float(cfg.get("weight_decay", 1e-4)),
            "amp": bool(cfg.get("amp", True))}


def _run_dir(cfg: dict, locks: list) -> Path:
    """Create and lock ``project/name`` (:func:`yolo_ldac.utils.rundir.open_run_dir`); the lock goes to ``locks``."""
    from yolo_ldac.utils.rundir import open_run_dir

    run_dir, lock = open_run_dir(cfg["project"], cfg["name"], exist_ok=bool(cfg["exist_ok"]))
    locks.append(lock)
    return run_dir


def compress(cfg: dict, source: Any, mode: str | None = None):
    """Run ``mode`` (``cfg["mode"]``: compress, prune or finetune) on a torchvision Faster R-CNN; returns a
    :class:`yolo_ldac.schedule.result.CompressResult`. The run folder is locked while the run writes it."""
    locks: list = []
    try:
        return _compress(cfg, source, mode, locks)
    finally:
        for lock in locks:
            lock.release()


def _compress(cfg: dict, source: Any, mode: str | None, locks: list):
    from yolo_ldac.data.check import audit_dataset, check_data
    from yolo_ldac.parts import build_parts, resolve_parts
    from yolo_ldac.pruning.complexity import Complexity, layer_channels
    from yolo_ldac.pruning.engine import ChannelPruner
    from yolo_ldac.report import write_report
    from yolo_ldac.schedule.compressor import complexity_view, seed_everything, select_device
    from yolo_ldac.schedule.result import CompressResult
    from yolo_ldac.tv.adapter import protected_layers, save_checkpoint
    from yolo_ldac.tv.data import YoloDetectionDataset, calibration_batches, make_loader
    from yolo_ldac.tv.evaluate import evaluate
    from yolo_ldac.tv.ldac import FPNDiscriminantTerm
    from yolo_ldac.tv.train import train

    mode = mode or cfg["mode"]
    if mode not in ("compress", "prune", "finetune"):
        raise LDACError(f"mode {mode!r} is not a compression mode")
    if cfg.get("resume"):
        raise LDACError("resume is not supported for torchvision models yet: start the run again")
    from yolo_ldac.latency.run import RunLatency

    if mode != "finetune" and RunLatency.wanted(cfg):
        raise LDACError("target=latency, speedup=, latency_ms= and round_to=auto measure Ultralytics models only; "
                        "for a torchvision Faster R-CNN use target=flops and a number for round_to")
    t_start = time.perf_counter()
    ratio_free = mode == "finetune"
    parts = {"criterion": None, "push": "none", "compensate": "none"} if ratio_free else resolve_parts(cfg)
    if not ratio_free:
        check_parts(parts)
        built = build_parts(cfg, parts)
        criterion, compensation = built["criterion"], built["compensate"]
    data = check_data(cfg["data"], trusted=bool(cfg.get("trusted", False)))
    labels = audit_dataset(data, str(cfg["data"]), strict=bool(cfg.get("strict_labels", True)),
                           single_cls=bool(cfg.get("single_cls", False)))
    seed = int(cfg.get("seed") or 0)
    seed_everything(seed)
    imgsz, batch = int(cfg["imgsz"]), int(cfg["batch"])
    adapter = load_source(source, data["names"], cfg)
    device = select_device(cfg.get("device"))
    adapter.to(device)
    train_ds = YoloDetectionDataset.from_yaml(data, "train", imgsz, augment=True)
    val_loader = make_loader(YoloDetectionDataset.from_yaml(data, "val", imgsz), batch, shuffle=False)
    calib = [] if ratio_free else calibration_batches(YoloDetectionDataset.from_yaml(data, "train", imgsz),
                                                      min(batch, 8), int(cfg["calib_batches"]), seed)
    dense = complexity(adapter, imgsz)
    dense_channels = layer_channels(adapter)
    trained = bool(cfg.get("weights")) or (isinstance(source, (str, Path)) and Path(str(source)).is_file())
    settings = train_settings(cfg, trained)
    push = parts["push"]
    if not ratio_free:
        probe = ChannelPruner(adapter, criterion, dense, dense_channels, protected_layers(adapter), imgsz=imgsz,
                              target=cfg["target"], round_to=cfg["round_to"], floor=cfg["floor"],
                              tolerance=cfg["tolerance"], root_types=(nn.Conv2d, nn.Linear))
        reachable = probe.max_ratio()
        if reachable < cfg["ratio"] - cfg["tolerance"]:
            raise LDACError(f"ratio {cfg['ratio']} of {cfg['target']} is unreachable: with floor={cfg['floor']} and "
                            f"round_to={cfg['round_to']} at most {reachable:.3f} can be removed")
    run_dir = _run_dir(cfg, locks)
    timings: dict[str, float] = {}
    steps: dict[str, int] = {}

    def timed(key, fn, *a, **kw):
        t = time.perf_counter()
        out = fn(*a, **kw)
        timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t, 3)
        return out

    def fit(epochs: int, name: str, pushing: bool):
        seed_everything(seed * 1000 + len(steps) + 1)
        loader = make_loader(train_ds, batch, shuffle=True, seed=seed * 1000 + len(steps) + 1,
                             workers=int(cfg.get("workers", 0) or 0))
        extra = FPNDiscriminantTerm(adapter, alpha=float(cfg["ld_alpha"]), rho=float(cfg["rho"]),
                                    pool=str(cfg["pool"])) if pushing else None
        # Ultralytics' warmup_epochs when given, else 100 iterations (at most a third of the phase)
        warm = (int(float(cfg["warmup_epochs"]) * len(loader)) if cfg.get("warmup_epochs") is not None
                else min(100, epochs * len(loader) // 3))
        from ultralytics.utils import LOGGER

        def log(epoch: int, row: dict) -> None:
            terms = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("loss"))
            LOGGER.info(f"{name} epoch {epoch + 1}/{epochs}: {terms}")

        hist = timed("train", train, adapter, loader, epochs, device=device, extra=extra, warmup_iters=warm,
                     on_epoch_end=log if cfg.get("verbose", True) else None, **settings)
        steps[name] = int(hist[-1]["steps"]) if hist else 0
        return hist

    before = timed("validate", evaluate, adapter, val_loader, device)
    rounds: list[dict] = []
    history: dict[str, list] = {}
    if not ratio_free:
        n_rounds = int(cfg["rounds"])
        for r in range(1, n_rounds + 1):
            if mode == "compress" and r > 1 and int(cfg["epochs_per_round"]) > 0:
                history[f"round{r}"] = fit(int(cfg["epochs_per_round"]), f"round{r}", pushing=push == "ldac")
            map_before = before if r == 1 else (timed("validate", evaluate, adapter, val_loader, device)
                                                if cfg["val_steps"] else {})
            criterion.start_step(r)
            pruner = ChannelPruner(adapter, criterion, dense, dense_channels, protected_layers(adapter), imgsz=imgsz,
                                   target=cfg["target"], round_to=cfg["round_to"], floor=cfg["floor"],
                                   compensate=compensation, tolerance=cfg["tolerance"],
                                   root_types=(nn.Conv2d, nn.Linear))
            step = timed("prune", pruner.step, cfg["ratio"] * r / n_rounds, calib)
            map_after = timed("validate", evaluate, adapter, val_loader, device) if cfg["val_steps"] else {}
            rounds.append({"round": r, "target_ratio": round(step.target_ratio, 4),
                           "ratio_reached": round(step.reached_ratio, 4),
                           "map50_95_before_step": map_before.get("map50_95"),
                           "map50_95_after_step": map_after.get("map50_95"),
                           "flops_g": round(step.after.flops_g, 4), "params_m": round(step.after.params / 1e6, 4),
                           "groups_pruned": step.groups_pruned, "scoring_s": round(step.seconds_scoring, 2)})
    ft_epochs = int(cfg["epochs"] if mode == "finetune" and cfg.get("epochs") is not None else cfg["finetune_epochs"])
    if mode != "prune" and ft_epochs > 0:
        history["finetune"] = fit(ft_epochs, "finetune", pushing=False)
    after = timed("validate", evaluate, adapter, val_loader, device)
    if rounds and "finetune" in history:
        rounds[-1]["map50_95_after_train"] = after.get("map50_95")
    best = save_checkpoint(adapter.cpu(), run_dir / "weights" / "best.pt")
    adapter.to(device)
    after_comp = complexity(adapter, imgsz)
    after_channels = layer_channels(adapter)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    report = {
        "model": str(source) if isinstance(source, (str, Path)) else type(source).__name__, "data": cfg.get("data"),
        "mode": mode, "method": None if ratio_free else cfg["method"], "parts": None if ratio_free else parts,
        "target": cfg["target"], "ratio": None if ratio_free else cfg["ratio"],
        "before": {**before, **complexity_view(dense)}, "after": {**after, **complexity_view(after_comp)},
        "removed": {"flops_pct": round(100 * after_comp.removed_vs(dense, "flops"), 2),
                    "params_pct": round(100 * after_comp.removed_vs(dense, "params"), 2),
                    "channels_pct": round(100 * after_comp.removed_vs(dense, "channels"), 2)},
        "layers": [{"name": n, "before": c, "after": after_channels.get(n, c)} for n, c in dense_channels.items()],
        "rounds": rounds, "timings": timings,
        "optimizer_steps": {**steps, "total": int(sum(steps.values()))},
        "train_settings": settings, "history": history, "labels": labels, "device": str(device),
        "paths": {"run_dir": str(run_dir), "best": str(best), "portable": str(best.with_suffix(".safetensors"))},
        "settings": {k: v for k, v in cfg.items() if k not in {"mode"}},
        "detector": {"builder": adapter.builder, "imgsz": imgsz, "rois_per_image": adapter.rois,
                     "flops_counted_with": f"{adapter.rois} RoIs per image"},
        "flops_imgsz": imgsz, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_report(run_dir, report)
    from yolo_ldac.report import format_summary

    print(format_summary(report, imgsz=imgsz), flush=True)  # as the YOLO path ends: before -> after, where best.pt is
    return CompressResult(run_dir, best, best.with_suffix(".safetensors"), report["before"], report["after"],
                          report["removed"], report["layers"], rounds, timings, report)
