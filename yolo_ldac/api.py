"""The Python entry point: ``YOLOLDAC(model).compress(data=..., ratio=..., method=...)``.

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> result = YOLOLDAC("yolo11n.pt").compress(data="coco8.yaml", ratio=0.5, method="l2")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.cfg import get_cfg, split_args
from yolo_ldac.errors import LDACError


@dataclass
class CompressResult:
    """What a compress/prune/finetune run produced: paths, metrics and complexity before and after."""

    run_dir: Path
    best: Path
    portable: Path | None
    before: dict
    after: dict
    removed: dict
    layers: list[dict]
    rounds: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    @property
    def table(self) -> str:
        from yolo_ldac.report import format_table

        return format_table(self.report)


class YOLOLDAC:
    """A detector to compress. ``model`` is a checkpoint path, an Ultralytics model name or yaml, or a model.

    Example:
        >>> YOLOLDAC("yolov8n.yaml").info(imgsz=640)["params_m"] > 0
        True
    """

    def __init__(self, model: str | Path | nn.Module = "yolo11n.pt"):
        from yolo_ldac.nn.adapter import load_detection_model

        self.source = model
        self.model = load_detection_model(model)

    # --- public modes ------------------------------------------------------------------------------------
    def compress(self, data: str | None = None, ratio: float | None = None, method: str | None = None,
                 **kwargs: Any) -> CompressResult:
        """Prune ``ratio`` of the model's FLOPs (or params/channels) over ``rounds`` steps with training between
        them, fine-tune, validate, and write weights and a report to ``project/name``."""
        overrides = {k: v for k, v in dict(kwargs, data=data, ratio=ratio, method=method).items() if v is not None}
        return self._run(get_cfg(overrides, mode="compress"))

    def prune(self, data: str | None = None, ratio: float | None = None, method: str | None = None,
              **kwargs: Any) -> CompressResult:
        """Prune without any training (``rounds`` steps back to back); ``data`` feeds calibration and validation."""
        overrides = {k: v for k, v in dict(kwargs, data=data, ratio=ratio, method=method).items() if v is not None}
        cfg = get_cfg(overrides, mode="prune")
        cfg["epochs_per_round"] = cfg["finetune_epochs"] = 0
        return self._run(cfg)

    def finetune(self, data: str | None = None, epochs: int | None = None, **kwargs: Any) -> CompressResult:
        """Train the (pruned) model as it is for ``epochs`` (default ``finetune_epochs``) with Ultralytics."""
        overrides = {k: v for k, v in dict(kwargs, data=data, epochs=epochs).items() if v is not None}
        cfg = get_cfg(overrides, mode="finetune")
        cfg["finetune_epochs"] = int(cfg["epochs"] if cfg.get("epochs") is not None else cfg["finetune_epochs"])
        cfg["ratio_free"] = True
        return self._run(cfg)

    def val(self, data: str | None = None, **kwargs: Any) -> dict:
        """Validate the model on ``data``; returns ``{"map50_95", "map50", "flops_g", "params_m"}``."""
        cfg = get_cfg({k: v for k, v in dict(kwargs, data=data).items() if v is not None}, mode="val")
        data_dict = check_data(cfg["data"])
        from yolo_ldac.nn.adapter import adapt_head_to_names

        model = adapt_head_to_names(self.model, data_dict["names"])
        metrics = validate(model, cfg, split_args(cfg)[1])
        return {**metrics, **model_complexity(model)}

    def export(self, format: str | None = None, **kwargs: Any) -> Path:
        """Export to ``format`` (onnx, litert/tflite, openvino, ... ; ``half=True`` / ``int8=True data=...``) and check
        the file against PyTorch in its own runtime (raw outputs; with ``data`` also mAP). See :mod:`yolo_ldac.export`.

        Example:
            >>> YOLOLDAC("best.pt").export(format="litert", int8=True, data="kitti.yaml")  # doctest: +SKIP
            PosixPath('best_int8.tflite')
        """
        from yolo_ldac.export import export_checked

        cfg = get_cfg({k: v for k, v in dict(kwargs, format=format).items() if v is not None}, mode="export")
        if not isinstance(self.source, (str, Path)) or Path(self.source).suffix not in {".pt", ".json", ".safetensors"}:
            raise LDACError("export needs a checkpoint file: pass model=path/to/best.pt")
        ldac, ultra = split_args(cfg)
        skip = {"imgsz", "data", "model", "project", "name", "exist_ok", "epochs", "seed", "workers", "plots",
                "verbose", "batch", "device"}
        extra = {k: v for k, v in ultra.items() if k not in skip}
        for key in ("batch", "device"):  # training defaults are no export settings: only explicit ones are
            if kwargs.get(key) is not None:
                extra[key] = kwargs[key]
        result = export_checked(self.source, format=cfg["format"], imgsz=cfg["imgsz"], half=cfg["half"],
                                int8=cfg["int8"], data=cfg.get("data"), parity=cfg["parity"], rtol=cfg["parity_rtol"],
                                calib_images=cfg["calib_images"], map_check=cfg["parity_map"], **extra)
        self.last_export = result
        if cfg["verbose"]:
            print(result.summary())
        return result.path

    def benchmark(self, **kwargs: Any):
        """Export this model (and ``baseline``, its dense original) to every runtime in ``formats`` at every precision
        in ``precisions``, check each export, and time it (median / p90 over ``runs``, 1 thread and all threads);
        with ``data``, mAP per runtime. Writes benchmark.md/.csv/.json/.png to ``project/name``.

        Example:
            >>> res = YOLOLDAC("best.pt").benchmark(baseline="yolo11n.pt", formats="onnx,litert", imgsz=320)  # doctest: +SKIP
            >>> print(res.table)  # doctest: +SKIP
        """
        from ultralytics.utils.files import increment_path

        from yolo_ldac.deploy.benchmark import parse_list, parse_threads, run_benchmark

        cfg = get_cfg(kwargs, mode="benchmark")
        if not isinstance(self.source, (str, Path)) or Path(self.source).suffix != ".pt":
            raise LDACError("benchmark needs a .pt checkpoint: pass model=path/to/best.pt")
        models: dict[str, Path] = {}
        if cfg["baseline"]:
            models["dense"] = Path(cfg["baseline"])
            models["compressed"] = Path(self.source)
        else:
            models[Path(self.source).stem] = Path(self.source)
        if cfg["data"]:
            check_data(cfg["data"])
        formats = parse_list(cfg["formats"], "formats")
        precisions = parse_list(cfg["precisions"], "precisions")
        threads = parse_threads(cfg["threads"])
        imgsz = cfg["imgsz"]
        if not isinstance(imgsz, int):
            raise LDACError(f"benchmark takes a square imgsz (one integer), got {imgsz!r}")
        name = cfg["name"] if "name" in kwargs else "benchmark"
        out_dir = increment_path(Path(cfg["project"]) / name, exist_ok=cfg["exist_ok"]).resolve()
        result = run_benchmark(models, formats=formats, precisions=precisions, imgsz=imgsz, data=cfg["data"],
                               runs=cfg["runs"], warmup=cfg["warmup"], threads=threads, out_dir=out_dir,
                               plots=cfg["plots"])
        print(result.table)
        print(f"Results saved to {out_dir}")
        if result.failed:
            print(f"WARNING: {len(result.failed)} export(s) failed their checks: see the status column")
        return result

    def info(self, imgsz: int | None = None, **kwargs: Any) -> dict:
        """FLOPs (G), parameters (M) and per-layer output channels; ``table`` holds a printable summary."""
        from yolo_ldac.pruning.complexity import layer_channels

        imgsz = int(imgsz or get_cfg(kwargs, mode="info")["imgsz"])
        comp = model_complexity(self.model, imgsz)
        layers = layer_channels(self.model)
        lines = [f"{'layer':<40} {'out channels':>12}"] + [f"{n:<40} {c:>12}" for n, c in layers.items()]
        lines.append(f"{len(layers)} conv layers, {comp['params_m']:.3f} M params, {comp['flops_g']:.3f} GFLOPs "
                     f"at {imgsz} px")
        return {**comp, "imgsz": imgsz, "layers": layers, "table": "\n".join(lines)}

    # --- the schedule ------------------------------------------------------------------------------------
    def _run(self, cfg: dict) -> CompressResult:
        from ultralytics.utils import LOGGER, TQDM
        from ultralytics.utils.files import increment_path

        from yolo_ldac.checkpoint import save_portable
        from yolo_ldac.nn.adapter import adapt_head_to_names, protected_layers, rewrite_split_blocks
        from yolo_ldac.pruning.calibration import build_calibration_batches
        from yolo_ldac.pruning.complexity import layer_channels, measure
        from yolo_ldac.pruning.criteria import build_criterion
        from yolo_ldac.pruning.engine import ChannelPruner
        from yolo_ldac.report import write_report

        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        mode = cfg["mode"]
        ldac, ultra = split_args(cfg)
        training = mode != "prune"
        needs_data = training or cfg["val_steps"] or cfg["compensate"]
        data_dict = check_data(cfg["data"]) if (cfg.get("data") or needs_data) else None
        ratio_free = cfg.get("ratio_free", False)
        criterion = None if ratio_free else build_criterion(
            cfg["method"], seed=cfg["seed"], alpha=cfg["ld_alpha"], beta=cfg["cov_beta"], gamma=cfg["align_gamma"],
            pool=cfg["pool"], background=cfg["background"], rho=cfg["rho"], tracer=cfg["tracer"],
            level_assign=cfg["level_assign"])
        if criterion is not None and criterion.needs_data and data_dict is None:
            raise LDACError(f"method '{cfg['method']}' needs data=... for calibration")

        model = self.model
        if data_dict is not None:
            model = adapt_head_to_names(model, data_dict["names"])
        model = copy.deepcopy(model).float().cpu()
        rewrite_split_blocks(model)
        dense_comp = measure(model, 640, protected=protected_layers(model))
        dense_channels = layer_channels(model)
        if not ratio_free:
            probe = ChannelPruner(model, criterion, dense_comp, dense_channels, protected_layers(model), imgsz=640,
                                  target=cfg["target"], round_to=cfg["round_to"], floor=cfg["floor"],
                                  tolerance=cfg["tolerance"])
            reachable = probe.max_ratio()
            if reachable < cfg["ratio"] - cfg["tolerance"]:
                raise LDACError(f"ratio {cfg['ratio']} of {cfg['target']} is unreachable: with floor={cfg['floor']} "
                                f"and round_to={cfg['round_to']} at most {reachable:.3f} can be removed")
        # Inputs are valid: from here on the run directory exists.
        run_dir = increment_path(Path(cfg["project"]) / cfg["name"], exist_ok=cfg["exist_ok"]).resolve()
        if isinstance(self.source, (str, Path)) and Path(self.source).exists():
            src = Path(self.source).resolve()
            if src.is_relative_to(run_dir):
                raise LDACError(f"the run directory {run_dir} holds the input model {src}: choose another name= or "
                                "exist_ok=False, an input model is never overwritten")
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        LOGGER.info(f"yolo-ldac {mode}: results to {run_dir}")

        t = time.perf_counter()
        before_metrics = validate(model, cfg, ultra) if data_dict is not None and (cfg["val_steps"] or training) else {}
        timings["validate_dense"] = time.perf_counter() - t

        calib: list[dict] = []
        if data_dict is not None and not ratio_free and (criterion.needs_data or cfg["compensate"]):
            t = time.perf_counter()
            calib = build_calibration_batches(data_dict, imgsz=int(cfg["imgsz"]), batch=min(int(cfg["batch"]), 8),
                                              n_batches=max(1, int(cfg["calib_batches"])), seed=int(cfg["seed"]))
            timings["calibration_data"] = time.perf_counter() - t
        elif cfg["compensate"] and not ratio_free:
            LOGGER.warning("compensate=True needs data=... for calibration: pruning without compensation")

        rounds_log: list[dict] = []
        timings.setdefault("prune", 0.0)
        timings.setdefault("train", 0.0)
        n_rounds = 0 if ratio_free else int(cfg["rounds"])
        bar = TQDM(range(1, n_rounds + 1), desc="prune rounds", total=n_rounds) if n_rounds else []
        def make_pruner(m: nn.Module) -> ChannelPruner:
            return ChannelPruner(m, criterion, dense_comp, dense_channels, protected_layers(m), imgsz=640,
                                 target=cfg["target"], round_to=cfg["round_to"], floor=cfg["floor"],
                                 compensate=cfg["compensate"] and bool(calib), tolerance=cfg["tolerance"])

        for i in bar:
            trained = cfg["epochs_per_round"] > 0 and (i > 1 or criterion.train_before_first_step)
            if trained:
                t = time.perf_counter()
                criterion.before_push(model, make_pruner(model), cfg["ratio"] * i / n_rounds, calib)
                model = train(model, cfg, ultra, epochs=int(cfg["epochs_per_round"]), run_dir=run_dir, name=f"round{i}",
                              criterion=criterion)
                timings["train"] += time.perf_counter() - t
            t = time.perf_counter()
            if i == 1 and not trained:
                map_before = before_metrics  # the model is still the dense one validated above
            else:
                map_before = validate(model, cfg, ultra) if (cfg["val_steps"] and data_dict is not None) else {}
            step = make_pruner(model).step(cfg["ratio"] * i / n_rounds, calib)
            timings["prune"] += time.perf_counter() - t
            map_after = validate(model, cfg, ultra) if (cfg["val_steps"] and data_dict is not None) else {}
            rounds_log.append({
                "round": i, "target_ratio": round(step.target_ratio, 4), "ratio_reached": round(step.reached_ratio, 4),
                "map50_95_before_step": map_before.get("map50_95"), "map50_95_after_step": map_after.get("map50_95"),
                "flops_g": round(step.after.flops_g, 4), "params_m": round(step.after.params / 1e6, 4),
                "groups_pruned": step.groups_pruned, "scoring_s": round(step.seconds_scoring, 2),
                **criterion.round_info(),
            })
            save_ultralytics_checkpoint(model, run_dir / "weights" / f"round{i}.pt", cfg)
            if hasattr(bar, "set_description"):
                bar.set_description(f"prune rounds ({step.reached_ratio:.1%} {cfg['target']} removed)")

        if cfg["finetune_epochs"] > 0:
            t = time.perf_counter()
            model = train(model, cfg, ultra, epochs=int(cfg["finetune_epochs"]), run_dir=run_dir, name="finetune",
                          criterion=criterion, final=True)
            timings["train"] += time.perf_counter() - t
        best = run_dir / "weights" / "best.pt"
        save_ultralytics_checkpoint(model, best, cfg)
        portable = save_portable(model, run_dir / "weights" / "best") if cfg["portable"] else None

        t = time.perf_counter()
        after_metrics = validate(model, cfg, ultra) if data_dict is not None else {}
        timings["validate_final"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start

        for prev, nxt in zip(rounds_log, rounds_log[1:]):
            if cfg["epochs_per_round"] > 0:
                prev["map50_95_after_train"] = nxt["map50_95_before_step"]
        if rounds_log and cfg["finetune_epochs"] > 0:
            rounds_log[-1]["map50_95_after_train"] = after_metrics.get("map50_95")
        after_comp = measure(model, 640, protected=protected_layers(model))
        after_channels = layer_channels(model)
        before = {**_metric_view(before_metrics), **_comp_view(dense_comp)}
        after = {**_metric_view(after_metrics), **_comp_view(after_comp)}
        removed = {
            "flops_pct": round(100 * after_comp.removed_vs(dense_comp, "flops"), 2),
            "params_pct": round(100 * after_comp.removed_vs(dense_comp, "params"), 2),
            "channels_pct": round(100 * after_comp.removed_vs(dense_comp, "channels"), 2),
        }
        layers = [{"name": n, "before": c, "after": after_channels.get(n, c)} for n, c in dense_channels.items()]
        report = {
            "model": str(self.source) if isinstance(self.source, (str, Path)) else type(self.source).__name__,
            "data": cfg.get("data"), "mode": mode, "method": None if ratio_free else cfg["method"],
            "target": cfg["target"], "ratio": None if ratio_free else cfg["ratio"],
            "before": before, "after": after, "removed": removed, "layers": layers, "rounds": rounds_log,
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "paths": {"run_dir": str(run_dir), "best": str(best), "portable": str(portable) if portable else None},
            "settings": {k: v for k, v in ldac.items() if k not in {"mode"}},
            "flops_imgsz": 640, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        write_report(run_dir, report)
        if cfg["plots"] and criterion is not None:
            names = data_dict["names"] if data_dict else None
            report["plots"] = [str(p) for p in criterion.write_plots(run_dir, rounds_log, names)]
        result = CompressResult(run_dir, best, portable, before, after, removed, layers, rounds_log, report["timings"],
                                report)
        LOGGER.info("\n" + result.table + f"\nReport: {run_dir / 'report.md'}")
        self.model = model
        self.source = best
        return result


# --- helpers shared by the modes -----------------------------------------------------------------------------
def check_data(data: str | None) -> dict:
    """Resolve a dataset yaml with Ultralytics (downloading it when Ultralytics knows how and is online) and
    check that its train and val image folders exist and hold images; raise :class:`LDACError` otherwise."""
    if not data:
        raise LDACError("data=... is required (a dataset yaml, i.e. coco8.yaml)")
    path = Path(str(data))
    if path.suffix not in {".yaml", ".yml"}:
        raise LDACError(f"data '{data}' must be a dataset .yaml file")
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.checks import check_file

    try:
        check_file(str(data))
    except Exception:
        raise LDACError(f"data file '{data}' not found") from None
    try:
        info = check_det_dataset(str(data))
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise LDACError(f"data '{data}' is not a usable dataset: {msg[0] if msg else type(e).__name__}") from None
    from yolo_ldac.data._common import split_image_files

    for split in ("train", "val"):
        folders = info.get(split)
        folders = folders if isinstance(folders, list) else [folders]
        if not split_image_files(folders):
            raise LDACError(f"data '{data}': the {split} split ({', '.join(map(str, folders))}) holds no images")
    return info


def validate(model: nn.Module, cfg: dict, ultra: dict) -> dict:
    """mAP50-95 and mAP50 of ``model`` on the val split of ``cfg['data']`` (validates a copy: the validator
    fuses Conv+BN in place)."""
    from yolo_ldac.engine.validator import detection_map

    args = {k: v for k, v in ultra.items() if k in {"imgsz", "batch", "device", "workers", "half", "conf", "iou",
                                                    "max_det", "split", "single_cls", "rect"}}
    args.setdefault("rect", False)
    return detection_map(copy.deepcopy(model).float(), **args, data=cfg["data"])


def train(model: nn.Module, cfg: dict, ultra: dict, epochs: int, run_dir: Path, name: str, criterion=None,
          final: bool = False) -> nn.Module:
    """Train ``model`` (pruned) for ``epochs`` with Ultralytics; return the best checkpoint's model (float).

    Raises if the trained model's parameter count differs from the given one: that would mean a dense model
    was rebuilt and trained instead.
    """
    from ultralytics.nn.tasks import load_checkpoint

    from yolo_ldac.engine.trainer import PrunedDetectionTrainer

    n_params = sum(p.numel() for p in model.parameters())
    overrides = {k: v for k, v in ultra.items() if k not in {"project", "name", "exist_ok", "epochs"}}
    overrides.update(data=cfg["data"], epochs=epochs, project=str(run_dir), name=name, exist_ok=True)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    if criterion is not None:  # a criterion may train its own way (LDAC's push loss)
        trainer = criterion.make_trainer(model, overrides, final=final)
    else:
        trainer = PrunedDetectionTrainer(model, overrides=overrides)
    trainer.train()
    weights = trainer.best if Path(trainer.best).exists() else trainer.last
    trained, _ = load_checkpoint(weights)
    trained = trained.float().cpu()
    n_trained = sum(p.numel() for p in trained.parameters())
    if n_trained != n_params:
        raise RuntimeError(f"the trainer trained a model with {n_trained} parameters, not the pruned one ({n_params})")
    return trained


def save_ultralytics_checkpoint(model: nn.Module, path: Path, cfg: dict) -> Path:
    """Save ``model`` the way Ultralytics' trainer does, so ``YOLO(path)`` loads, validates, predicts, exports."""
    import ultralytics

    ema = copy.deepcopy(model).half().eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.criterion = None
    ckpt = {
        "epoch": -1, "best_fitness": None, "model": None, "ema": ema, "updates": None, "optimizer": None,
        "train_args": {k: v for k, v in cfg.items() if k in {"data", "imgsz", "batch"}} | {"task": "detect"},
        "date": datetime.now().isoformat(), "version": ultralytics.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)", "yolo_ldac": {"method": cfg.get("method"),
                                                                             "ratio": cfg.get("ratio")},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def _metric_view(m: dict) -> dict:
    return {"map50_95": m.get("map50_95"), "map50": m.get("map50")}


def model_complexity(model: nn.Module, imgsz: int = 640) -> dict:
    """``{"flops_g", "params_m", "channels"}`` of a detector at a square ``imgsz`` (FLOPs in G, params in M)."""
    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.pruning.complexity import measure

    return _comp_view(measure(model, imgsz, protected=protected_layers(model)))


def _comp_view(c) -> dict:
    return {"flops_g": round(c.flops_g, 4), "params_m": round(c.params / 1e6, 4), "channels": c.channels}
