"""The Python entry point: ``YOLOLDAC(model).compress(data=..., ratio=..., method=...)``.

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> result = YOLOLDAC("yolo11n.pt").compress(data="coco8.yaml", ratio=0.5, method="l2")  # doctest: +SKIP
    >>> print(result.table)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.cfg import get_cfg, round_imgsz, split_args
from yolo_ldac.checkpoint import save_ultralytics_checkpoint  # noqa: F401  (re-exported)
from yolo_ldac.data.check import check_data
from yolo_ldac.errors import LDACError
from yolo_ldac.schedule.result import CompressResult  # noqa: F401  (re-exported)


def _under_policy(method):
    """Run a mode under :func:`yolo_ldac.safe_load.policy`: ``trusted=`` of the call, else the runner's."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from yolo_ldac.safe_load import policy

        trusted = kwargs.get("trusted")
        with policy(self.trusted if trusted is None else bool(trusted)):
            return method(self, *args, **kwargs)

    return wrapper


class YOLOLDAC:
    """A detector to compress. ``model`` is a checkpoint path (``.pt`` or a portable ``best.json``), an Ultralytics
    model name or yaml, or a model. ``trusted=True`` lets a ``.pt`` be fully unpickled and a yaml's activation be
    evaluated, as Ultralytics does: only for files from a source you trust (see :mod:`yolo_ldac.safe_load`).

    Example:
        >>> YOLOLDAC("yolov8n.yaml").info(imgsz=640)["params_m"] > 0
        True
    """

    def __new__(cls, model: Any = "yolo11n.pt", trusted: bool = False):
        # A torchvision Faster R-CNN (a builder name such as "fasterrcnn_resnet50_fpn_v2", or a checkpoint of that
        # path) runs the same modes on yolo_ldac.tv.
        if cls is YOLOLDAC:
            from yolo_ldac.tv.adapter import is_torchvision_source

            if is_torchvision_source(model):
                cls = TorchvisionLDAC
        return super().__new__(cls)

    def __init__(self, model: str | Path | nn.Module = "yolo11n.pt", trusted: bool = False):
        from yolo_ldac.schedule.callbacks import Callbacks

        if not isinstance(trusted, bool):
            raise LDACError(f"trusted must be True or False, got {trusted!r}")
        self.source = model
        self.trusted = trusted
        self._model: nn.Module | None = None
        self.callbacks = Callbacks()
        _ = self.model  # fail now, with one line, on a model that cannot be loaded

    @property
    def model(self) -> nn.Module:
        """The detector (loaded from ``source`` on first use, so resuming a run never loads the input model)."""
        if self._model is None:
            from yolo_ldac.nn.adapter import load_detection_model

            self._model = load_detection_model(self.source, trusted=self.trusted)
        return self._model

    @model.setter
    def model(self, value: nn.Module) -> None:
        self._model = value

    def add_callback(self, event: str, fn) -> "YOLOLDAC":
        """Call ``fn(compressor)`` on a compression event (``on_phase_start``, ``on_step_end``, ...; see
        :mod:`yolo_ldac.schedule.callbacks`), or ``fn(trainer)`` on any Ultralytics trainer event in every training
        phase.

        Example:
            >>> runner = YOLOLDAC("yolo11n.pt")  # doctest: +SKIP
            >>> runner.add_callback("on_step_end", lambda c: print(c.rounds[-1]["map50_95_after_step"]))  # doctest: +SKIP
        """
        self.callbacks.add(event, fn)
        return self

    # --- public modes ------------------------------------------------------------------------------------
    @_under_policy
    def compress(self, data: str | None = None, ratio: float | None = None, method: str | None = None,
                 **kwargs: Any) -> CompressResult | None:
        """Prune ``ratio`` of the model's FLOPs (or params/channels) over ``rounds`` steps with training between
        them, fine-tune, validate, and write weights and a report to ``project/name``.

        ``resume=RUN_DIR`` (or ``resume=True``: the newest unfinished run under ``project``) continues a run that
        stopped, with its own settings. Returns ``None`` when a callback stopped the run.
        """
        return self._compress_mode("compress", dict(kwargs, data=data, ratio=ratio, method=method))

    @_under_policy
    def prune(self, data: str | None = None, ratio: float | None = None, method: str | None = None,
              **kwargs: Any) -> CompressResult | None:
        """Prune without any training (``rounds`` steps back to back); ``data`` feeds calibration and validation."""
        return self._compress_mode("prune", dict(kwargs, data=data, ratio=ratio, method=method))

    @_under_policy
    def finetune(self, data: str | None = None, epochs: int | None = None, **kwargs: Any) -> CompressResult | None:
        """Train the (pruned) model as it is for ``epochs`` (default ``finetune_epochs``) with Ultralytics."""
        return self._compress_mode("finetune", dict(kwargs, data=data, epochs=epochs))

    @_under_policy
    def sweep(self, data: str | None = None, ratios: str | list | None = None, method: str | None = None,
              **kwargs: Any):
        """The retention curve: for each ratio of ``ratios`` (of ``target``), a fresh copy of the model pruned in ONE
        step with ``method``'s criterion and compensation, no training, validated on ``data``'s val split; with
        ``epochs=N`` also the trained curve (each ratio compressed with the usual schedule, ``finetune_epochs=N``,
        in ``<out>/r<ratio>``). Writes ``sweep.json``, ``sweep.md`` and ``sweep.png`` to ``project/name`` (name
        default ``sweep``) and returns a :class:`yolo_ldac.sweep.SweepResult` (``points``, ``base``, ``table``).

        Example:
            >>> res = YOLOLDAC("yolo11n.pt").sweep(data="coco8.yaml", ratios="0.2,0.4", method="ldac")  # doctest: +SKIP
            >>> [round(p["map50_95"], 3) for p in res.points]  # doctest: +SKIP
            [0.301, 0.262]
        """
        from yolo_ldac.sweep import run_sweep

        overrides = {k: v for k, v in dict(kwargs, data=data, ratios=ratios, method=method).items() if v is not None}
        overrides.setdefault("trusted", self.trusted)
        overrides.setdefault("name", "sweep")
        cfg = get_cfg(overrides, mode="sweep")
        from_yaml = isinstance(self.source, (str, Path)) and Path(self.source).suffix in {".yaml", ".yml"}
        return run_sweep(cfg, self.source, model=None if from_yaml else self._model)

    def _compress_mode(self, mode: str, kwargs: dict) -> CompressResult | None:
        from yolo_ldac.schedule.compressor import Compressor

        overrides = {k: v for k, v in kwargs.items() if v is not None}
        overrides.setdefault("trusted", self.trusted)
        cfg = get_cfg(overrides, mode=mode)
        if cfg["resume"]:
            if isinstance(self.source, (str, Path)) and str(self.source) != "yolo11n.pt":
                overrides.setdefault("model", str(self.source))
            result = Compressor.resume(cfg["resume"], overrides, project=cfg["project"], callbacks=self.callbacks,
                                       mode=mode)
        else:
            # A model built from a yaml is built again under the run's seed, so its random weights are reproducible.
            from_yaml = isinstance(self.source, (str, Path)) and Path(self.source).suffix in {".yaml", ".yml"}
            result = Compressor(cfg, self.source, model=None if from_yaml else self._model,
                                callbacks=self.callbacks).run()
        if result is not None:  # from now on this runner holds the compressed model
            self.source = result.best
            self._model = None
        return result

    @classmethod
    def resume(cls, run_dir: str | Path | bool = True, **overrides: Any) -> CompressResult | None:
        """Continue the stopped run in ``run_dir`` from its last finished phase (see :meth:`compress`).

        Example:
            >>> YOLOLDAC.resume("runs/ldac/exp")  # doctest: +SKIP
        """
        from yolo_ldac.schedule.compressor import Compressor

        project = overrides.pop("project", "runs/ldac")
        return Compressor.resume(run_dir, overrides, project=project)

    @_under_policy
    def val(self, data: str | None = None, **kwargs: Any) -> dict:
        """Validate the model on ``data``; returns ``{"map50_95", "map50", "flops_g", "params_m"}``: the mAP
        ``yolo val`` prints for the same weights, ``imgsz`` and ``batch`` (rect batches, as Ultralytics validates).
        Without ``imgsz`` the checkpoint's training size is used, as ``yolo val`` does.

        Example:
            >>> YOLOLDAC("runs/ldac/exp/weights/best.pt").val(data="coco8.yaml")["map50_95"]  # doctest: +SKIP
            0.412
        """
        kwargs = _with_trained_imgsz(kwargs, self.model)
        cfg = get_cfg({k: v for k, v in dict(kwargs, data=data).items() if v is not None}, mode="val")
        data_dict = check_data(cfg["data"])
        from yolo_ldac.data.check import audit_dataset
        from yolo_ldac.nn.adapter import adapt_head_to_names

        from yolo_ldac.tasks import task_of

        audit_dataset(data_dict, str(cfg["data"]), splits=("val",), strict=cfg["strict_labels"],
                      single_cls=bool(cfg.get("single_cls", False)), task=task_of(self.model) or "detect")
        model = adapt_head_to_names(self.model, data_dict["names"], seed=int(cfg["seed"] or 0),
                                    kpt_shape=data_dict.get("kpt_shape"))
        metrics = validate(model, cfg, split_args(cfg)[1])
        return {**metrics, **model_complexity(model)}

    @_under_policy
    def export(self, format: str | None = None, **kwargs: Any) -> Path:
        """Export to ``format`` (onnx, litert/tflite, openvino, ncnn, ... ; ``half=True`` / ``int8=True data=...``) and check
        the file against PyTorch in its own runtime (raw outputs; with ``data`` also mAP). See :mod:`yolo_ldac.export`.
        Without ``imgsz`` the file is exported at the checkpoint's training size (``train_args``), as ``yolo export``
        does.

        Example:
            >>> YOLOLDAC("best.pt").export(format="litert", int8=True, data="kitti.yaml")  # doctest: +SKIP
            PosixPath('best_int8.tflite')
        """
        from yolo_ldac.export import export_checked

        kwargs = _with_trained_imgsz(kwargs, self.model)  # as Ultralytics exports: at the checkpoint's size
        cfg = get_cfg({k: v for k, v in dict(kwargs, format=format).items() if v is not None}, mode="export")
        if not isinstance(self.source, (str, Path)) or Path(self.source).suffix not in {".pt", ".json", ".safetensors"}:
            raise LDACError("export needs a checkpoint file: pass model=path/to/best.pt")
        _warn_unfinished([self.source])
        ldac, ultra = split_args(cfg)
        skip = {"imgsz", "data", "model", "project", "name", "exist_ok", "epochs", "seed", "workers", "plots",
                "verbose", "batch", "device"}
        extra = {k: v for k, v in ultra.items() if k not in skip}
        for key in ("batch", "device"):  # training defaults are no export settings: only explicit ones are
            if kwargs.get(key) is not None:
                extra[key] = kwargs[key]
        # Rounded here, not by Ultralytics' exporter: the parity check must use the size the file was exported at.
        imgsz = round_imgsz(cfg["imgsz"], self.model)
        result = export_checked(self.source, format=cfg["format"], imgsz=imgsz, half=cfg["half"],
                                int8=cfg["int8"], data=cfg.get("data"), parity=cfg["parity"], rtol=cfg["parity_rtol"],
                                calib_images=cfg["calib_images"], map_check=cfg["parity_map"],
                                deploy_graph=cfg["deploy_graph"], fuse_splits=cfg["fuse_splits"],
                                int8_float=cfg["int8_float"], **extra)
        self.last_export = result
        if cfg["verbose"]:
            print(result.summary())
        return result.path

    @_under_policy
    def benchmark(self, **kwargs: Any):
        """Export this model (and ``baseline``, its dense original) to every runtime in ``formats`` at every precision
        in ``precisions``, check each export, and time it (median / p90 over ``runs``, 1 thread and all threads);
        with ``data``, mAP per runtime. Writes benchmark.md/.csv/.json/.png to ``project/name``.

        Example:
            >>> res = YOLOLDAC("best.pt").benchmark(baseline="yolo11n.pt", formats="onnx,litert", imgsz=320)  # doctest: +SKIP
            >>> print(res.table)  # doctest: +SKIP
        """
        from yolo_ldac.deploy.benchmark import check_inputs, parse_list, parse_threads, run_benchmark

        cfg = get_cfg(kwargs, mode="benchmark")
        if not isinstance(self.source, (str, Path)) or Path(self.source).suffix not in {".pt", ".json", ".safetensors"}:
            raise LDACError("benchmark needs a checkpoint file: pass model=path/to/best.pt (or best.json)")
        models: dict[str, Path] = {}
        if cfg["baseline"]:
            models["dense"] = Path(cfg["baseline"])
            models["compressed"] = Path(self.source)
        else:
            models[Path(self.source).stem] = Path(self.source)
        if cfg["data"]:
            check_data(cfg["data"])
        from yolo_ldac.safe_load import check_checkpoint

        for path in models.values():  # the baseline too: refused with one line before the results folder exists
            if path.suffix == ".pt":
                check_checkpoint(path)
        formats = parse_list(cfg["formats"], "formats")
        precisions = parse_list(cfg["precisions"], "precisions")
        if "int8" in precisions and not cfg["data"]:
            raise LDACError(f"precisions={','.join(precisions)}: int8 needs data=... (a dataset yaml: its train "
                            "images calibrate the int8 export); give data=, or leave int8 out")
        check_inputs(models, formats, precisions)  # before the results folder exists
        threads = parse_threads(cfg["threads"], notice=True)
        _warn_unfinished(models.values())
        imgsz = cfg["imgsz"]
        if not isinstance(imgsz, int):
            raise LDACError(f"benchmark takes a square imgsz (one integer), got {imgsz!r}")
        imgsz = round_imgsz(imgsz, self.model)
        name = cfg["name"] if "name" in kwargs else "benchmark"
        from yolo_ldac.utils.rundir import open_run_dir

        out_dir, lock = open_run_dir(cfg["project"], name, exist_ok=cfg["exist_ok"], keep_finished=False,
                                     what="benchmark folder")
        with lock:  # one benchmark at a time writes a folder
            result = run_benchmark(models, formats=formats, precisions=precisions, imgsz=imgsz, data=cfg["data"],
                                   runs=cfg["runs"], warmup=cfg["warmup"], threads=threads, out_dir=out_dir,
                                   plots=cfg["plots"], deploy_graph=cfg["deploy_graph"], batch=int(cfg["batch"]),
                                   int8_float=cfg["int8_float"])
        print(result.table)
        if cfg["data"]:
            from yolo_ldac.deploy.benchmark import MAP_NOTE

            print(MAP_NOTE.format(batch=int(cfg["batch"])))
        print(f"Results saved to {out_dir}")
        if result.failed:
            print(f"WARNING: {len(result.failed)} export(s) failed their checks: see the status column")
        return result

    @_under_policy
    def info(self, imgsz: int | None = None, **kwargs: Any) -> dict:
        """FLOPs (G), parameters (M) and per-layer output channels; ``table`` holds a printable summary."""
        from yolo_ldac.pruning.complexity import layer_channels

        overrides = dict(kwargs) if imgsz is None else dict(kwargs, imgsz=imgsz)  # checked as the CLI's imgsz= is
        imgsz = round_imgsz(get_cfg(overrides, mode="info")["imgsz"], self.model)
        comp = model_complexity(self.model, imgsz)
        layers = layer_channels(self.model)
        lines = [f"{'layer':<40} {'out channels':>12}"] + [f"{n:<40} {c:>12}" for n, c in layers.items()]
        lines.append(f"{len(layers)} conv layers, {comp['params_m']:.3f} M params, {comp['flops_g']:.3f} GFLOPs "
                     f"at {imgsz} px")
        notice = None
        if isinstance(self.source, (str, Path)):
            from yolo_ldac.checkpoint import unfinished_notice

            notice = unfinished_notice(self.source)
            if notice:
                lines.append(f"WARNING: {notice}")
        return {**comp, "imgsz": imgsz, "layers": layers, "table": "\n".join(lines), "finished": notice is None,
                "notice": notice}


class TorchvisionLDAC(YOLOLDAC):
    """:class:`YOLOLDAC` for a torchvision Faster R-CNN: what ``YOLOLDAC(model)`` is for a builder name
    (``"fasterrcnn_resnet50_fpn_v2"``), a checkpoint of that path or a :class:`~yolo_ldac.tv.adapter.FasterRCNNAdapter`.
    The same modes with the same keys, on :mod:`yolo_ldac.tv.compress`: ``compress``, ``prune``, ``finetune``, ``val``,
    ``export`` (ONNX, checked) and ``info``.

    Example:
        >>> type(YOLOLDAC("fasterrcnn_mobilenet_v3_large_fpn")).__name__
        'TorchvisionLDAC'
    """

    def __init__(self, model: Any = "fasterrcnn_mobilenet_v3_large_fpn", trusted: bool = False):
        from yolo_ldac.schedule.callbacks import Callbacks
        from yolo_ldac.tv.adapter import _builder, is_builder_name

        if not isinstance(trusted, bool):
            raise LDACError(f"trusted must be True or False, got {trusted!r}")
        self.source, self.trusted, self.callbacks = model, trusted, Callbacks()
        self._model = None
        if is_builder_name(model):
            _builder(model)  # an unknown builder is one line now
        else:
            _ = self.model

    @property
    def model(self):
        """The adapter (a builder name is built for its data's classes when a mode runs)."""
        from yolo_ldac.tv.adapter import FasterRCNNAdapter, is_builder_name, load_checkpoint

        if self._model is None and not is_builder_name(self.source):
            self._model = self.source if isinstance(self.source, FasterRCNNAdapter) else load_checkpoint(self.source)
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    def add_callback(self, event: str, fn) -> "TorchvisionLDAC":
        raise LDACError("callbacks are not supported for torchvision models yet")

    def _compress_mode(self, mode: str, kwargs: dict):
        from yolo_ldac.tv.compress import compress

        overrides = {k: v for k, v in kwargs.items() if v is not None}
        cfg = get_cfg(overrides, mode=mode)
        if cfg.get("max_drop") is not None or cfg.get("max_drop_rel") is not None:
            raise LDACError("max_drop= and max_drop_rel= are not supported for torchvision models yet: give ratio=")
        result = compress(cfg, self._model if self._model is not None else self.source, mode=mode)
        self.source, self._model = result.best, None
        return result

    def _adapter(self, cfg: dict, names=None):
        from yolo_ldac.tv.compress import load_source

        return load_source(self.model if self.model is not None else self.source, names, cfg)

    def val(self, data: str | None = None, **kwargs: Any) -> dict:
        """COCO mAP50-95 and mAP50 on ``data``'s val split, FLOPs (G, at ``rois`` RoIs per image) and params (M)."""
        from yolo_ldac.data.check import check_data
        from yolo_ldac.schedule.compressor import select_device
        from yolo_ldac.tv.compress import model_view
        from yolo_ldac.tv.data import YoloDetectionDataset, make_loader
        from yolo_ldac.tv.evaluate import evaluate

        cfg = get_cfg({k: v for k, v in dict(kwargs, data=data).items() if v is not None}, mode="val")
        info = check_data(cfg["data"])
        adapter = self._adapter(cfg, info["names"])
        device = select_device(cfg.get("device"))
        loader = make_loader(YoloDetectionDataset.from_yaml(info, "val", int(cfg["imgsz"])), int(cfg["batch"]), False)
        return {**evaluate(adapter.to(device), loader, device), **model_view(adapter, int(cfg["imgsz"]))}

    def export(self, format: str | None = None, **kwargs: Any) -> Path:
        """ONNX export next to the checkpoint (``best.onnx``), checked against PyTorch on a fixed input."""
        from yolo_ldac.tv.export import export_onnx

        cfg = get_cfg({k: v for k, v in dict(kwargs, format=format).items() if v is not None}, mode="export")
        if cfg["format"] != "onnx":
            raise LDACError(f"torchvision models export to onnx only here, got format={cfg['format']}")
        if cfg["half"] or cfg["int8"]:
            raise LDACError("torchvision models export in fp32 only here (half=False int8=False)")
        if not isinstance(self.source, (str, Path)) or self.model is None:
            raise LDACError("export needs a checkpoint file: pass model=path/to/best.pt")
        path, figures = export_onnx(self.model, Path(self.source).with_suffix(".onnx"), parity=bool(cfg["parity"]))
        self.last_export = figures
        if cfg["verbose"]:
            print(f"ONNX {path}: {figures}")
        return path

    def benchmark(self, **kwargs: Any):
        raise LDACError("benchmark mode is not supported for torchvision models yet (export=onnx is)")

    def sweep(self, **kwargs: Any):
        raise LDACError("sweep mode is not supported for torchvision models yet (compress and prune are)")

    def info(self, imgsz: int | None = None, **kwargs: Any) -> dict:
        """FLOPs (G), parameters (M) and output channels per layer (a builder name: with one class)."""
        from yolo_ldac.pruning.complexity import layer_channels
        from yolo_ldac.tv.compress import model_view

        adapter = self.model
        if adapter is None:
            from yolo_ldac.tv.adapter import build_adapter

            cfg = get_cfg(dict(kwargs, **({} if imgsz is None else {"imgsz": imgsz})), mode="info")
            adapter = build_adapter(self.source, {0: "object"}, int(cfg["imgsz"]), weights=cfg.get("weights"),
                                    rois=cfg.get("rois"))
        size = int(imgsz or adapter.imgsz)
        comp = model_view(adapter, size)
        layers = layer_channels(adapter)
        lines = [f"{'layer':<56} {'out channels':>12}"] + [f"{n:<56} {c:>12}" for n, c in layers.items()]
        lines.append(f"{len(layers)} layers, {comp['params_m']:.3f} M params, {comp['flops_g']:.3f} GFLOPs at {size} "
                     f"px with {adapter.rois} RoIs per image")
        return {**comp, "imgsz": size, "layers": layers, "table": "\n".join(lines), "finished": True, "notice": None}


# --- helpers shared by the modes (kept here for their callers; each lives in the module that owns it) ----------
def _warn_unfinished(sources) -> None:
    """The notice ``info`` prints for a file that is not a run's finished model (a phase checkpoint, per-epoch
    weights, a file of an unfinished run), as a warning: exporting or benchmarking it is allowed, and said."""
    from ultralytics.utils import LOGGER

    from yolo_ldac.checkpoint import unfinished_notice

    for source in sources:
        if isinstance(source, (str, Path)):
            notice = unfinished_notice(source)
            if notice:
                LOGGER.warning(notice)


def trained_imgsz(model: nn.Module) -> int | None:
    """The input size ``model`` was trained at, read as Ultralytics reads it: ``ckpt["train_args"]["imgsz"]``,
    which its ``load_checkpoint`` puts in ``model.args`` (``yolo val`` and ``yolo export`` default to it); None for
    a model without training arguments (built from a yaml).

    Example:
        >>> trained_imgsz(YOLOLDAC("runs/ldac/exp/weights/best.pt").model)  # doctest: +SKIP
        160
    """
    args = getattr(model, "args", None)
    if args is not None and not isinstance(args, dict):
        args = vars(args) if hasattr(args, "__dict__") else None
    imgsz = (args or {}).get("imgsz")
    return imgsz if isinstance(imgsz, int) and not isinstance(imgsz, bool) and imgsz > 0 else None


def _with_trained_imgsz(kwargs: dict, model: nn.Module) -> dict:
    """``kwargs`` with ``imgsz`` set to the model's training size when the caller gave none."""
    if kwargs.get("imgsz") is not None:
        return kwargs
    imgsz = trained_imgsz(model)
    return kwargs if imgsz is None else {**kwargs, "imgsz": imgsz}


def validate(model: nn.Module, cfg: dict, ultra: dict) -> dict:
    """mAP50-95 and mAP50 of ``model`` on the val split of ``cfg['data']`` (validates a copy)."""
    from yolo_ldac.engine.validator import validate_model

    return validate_model(model, cfg["data"], ultra)


def model_complexity(model: nn.Module, imgsz: int = 640) -> dict:
    """``{"flops_g", "params_m", "channels"}`` of a detector at a square ``imgsz`` (FLOPs in G, params in M)."""
    from yolo_ldac.nn.adapter import model_complexity as _mc

    return _mc(model, imgsz)
