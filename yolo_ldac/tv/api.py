"""``YOLOLDAC("fasterrcnn_mobilenet_v3_large_fpn")``: the Python and command-line modes on a torchvision Faster R-CNN.

:class:`yolo_ldac.api.YOLOLDAC` hands a torchvision builder name or a checkpoint this path wrote to
:class:`TorchvisionLDAC`, which runs the same modes with the same keys (:mod:`yolo_ldac.tv.compress`):
``compress``, ``prune``, ``finetune``, ``val``, ``export`` (ONNX, checked) and ``info``.

Example:
    >>> from yolo_ldac import YOLOLDAC
    >>> runner = YOLOLDAC("fasterrcnn_mobilenet_v3_large_fpn")
    >>> type(runner).__name__
    'TorchvisionLDAC'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_ldac.api import YOLOLDAC
from yolo_ldac.cfg import get_cfg
from yolo_ldac.errors import LDACError


def is_torchvision_source(src: Any) -> bool:
    """A torchvision Faster R-CNN builder name, a checkpoint of this path, or an adapter."""
    from yolo_ldac.tv.adapter import FasterRCNNAdapter, is_builder_name, is_checkpoint

    return isinstance(src, FasterRCNNAdapter) or is_builder_name(src) or is_checkpoint(src)


class TorchvisionLDAC(YOLOLDAC):
    """:class:`~yolo_ldac.api.YOLOLDAC` for a torchvision Faster R-CNN (see the module docstring)."""

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
