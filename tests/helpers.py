"""Shared test helpers: small, deterministic pruned detectors built without the real pruning engine."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

GAMMA_LOW, GAMMA_SPREAD = 0.4, 0.2


def tiny_pruned_model(cfg: str = "yolo11n.yaml", nc: int = 3, seed: int = 0, n_groups: int = 6, n_prune: int = 8):
    """Return an eval-mode ``DetectionModel`` built from ``cfg`` with split blocks rewritten and ``n_prune`` output
    channels removed from each of ``n_groups`` prunable groups (chosen deterministically from ``seed``).

    BatchNorm layers get seeded random affine terms and the statistics of real activations (bus.jpg), so the
    outputs depend on the input and on every layer's weights, as in a trained model (a randomly initialised one
    barely reacts to its backbone, which would hide broken exports). The result is checked to run forward at two
    input sizes. About 1 s on one CPU core.
    """
    import torch_pruning as tp
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=nc, verbose=False).float()
    g = torch.Generator().manual_seed(seed)
    _calibrate_batchnorm(model, g)
    rewrite_split_blocks(model)

    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 64, 64))
    groups = list(DG.get_all_groups(ignored_layers=protected_layers(model), root_module_types=[nn.Conv2d]))
    roots = [grp[0].dep.target.module for grp in groups]
    roots = [r for r in roots if isinstance(r, nn.Conv2d) and r.out_channels > 2 * n_prune]
    order = torch.randperm(len(roots), generator=g).tolist()
    pruned = 0
    for k in order:
        if pruned >= n_groups:
            break
        conv = roots[k]
        idxs = sorted(torch.randperm(conv.out_channels, generator=g)[:n_prune].tolist())
        group = DG.get_pruning_group(conv, tp.prune_conv_out_channels, idxs)
        if not DG.check_pruning_group(group):
            continue
        group.prune(idxs)
        pruned += 1
    model.eval()
    with torch.no_grad():
        for s in (64, 96):
            out = model(torch.zeros(1, 3, s, s))
            y = out[0] if isinstance(out, (tuple, list)) else out
            assert y.shape[:2] == (1, 4 + nc), y.shape
    return model


def _calibrate_batchnorm(model: nn.Module, g: torch.Generator) -> None:
    """Give BatchNorm layers the statistics of real activations (and random affine terms), like a trained model.

    With Ultralytics' default init the BN layers keep running_mean 0 / running_var 1 while the conv outputs shrink
    layer after layer, so a randomly initialised detector's outputs barely depend on its input or its backbone
    weights: a broken export would go unnoticed. Normalising every layer with its own batch statistics keeps the
    signal alive through the whole network.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: running stats = this batch's statistics
            m.weight.copy_(torch.rand(m.num_features, generator=g) * GAMMA_SPREAD + GAMMA_LOW)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        model.train()
        model(_calibration_batch(g))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()


def _calibration_batch(g: torch.Generator, n: int = 4, size: int = 160) -> torch.Tensor:
    """Ultralytics' bus.jpg letterboxed to ``size`` (as predictors and the parity check see it) and ``n - 1`` random
    ``size``x``size`` crops of it: real-image statistics, as an NCHW RGB float batch in [0, 1]."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    bgr = cv2.imread(str(ASSETS / "bus.jpg"))
    crops = [torch.from_numpy(LetterBox((size, size), auto=False)(image=bgr)[..., ::-1].copy()).permute(2, 0, 1)]
    img = bgr[..., ::-1]  # BGR -> RGB, HWC
    img = cv2.resize(img, (img.shape[1] * 3 * size // (2 * img.shape[0]), 3 * size // 2))  # short side 1.5*size
    for _ in range(n - 1):
        y = int(torch.randint(0, img.shape[0] - size + 1, (1,), generator=g))
        x = int(torch.randint(0, img.shape[1] - size + 1, (1,), generator=g))
        crops.append(torch.from_numpy(img[y : y + size, x : x + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255.0


def assert_every_prunable_conv_scored(crit, calib_batches):
    """Prepare ``crit`` on an untrained YOLO11n (split blocks, seed 0) and check that it scored every Conv block the
    pruner may touch: one finite score >= 0 per output channel. Returns the prepared criterion."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.ldac.criterion import conv_wrappers
    from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    rewrite_split_blocks(model)
    crit.prepare(model, calib_batches)
    protected = set(protected_layers(model))
    wrapped = [c for c in conv_wrappers(model) if c not in protected]
    assert wrapped and all(c in crit.scores for c in wrapped)
    for conv in wrapped:
        s = crit.scores[conv]
        assert s.shape == (conv.out_channels,) and torch.isfinite(s).all() and (s >= 0).all()
    return crit


def save_checkpoint(model, path):
    """Write ``model`` as an Ultralytics-loadable ``.pt`` (the layout ``YOLO(path)`` expects); return ``path``."""
    import copy

    import ultralytics

    torch.save({"model": copy.deepcopy(model).float(), "train_args": {}, "date": None,
                "version": ultralytics.__version__}, path)
    return path


def teacher_dataset(model_path, out_dir, imgsz: int = 160, conf: float = 0.4):
    """A tiny detection set labelled by ``model_path`` itself: bus.jpg and zidane.jpg, their mirror images (val)
    and 80 % centre crops of both (train), with the model's own detections at ``conf`` as labels.

    On it the PyTorch model scores a high mAP against its own detections, so an export that changes the
    detections loses mAP visibly: a detection-level parity test with real photos and no download.
    Returns the data.yaml path.
    """
    from pathlib import Path

    import cv2
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import ASSETS

    out = Path(out_dir)
    model = YOLO(str(model_path))
    images = {"train": [], "val": []}
    for name in ("bus.jpg", "zidane.jpg"):
        img = cv2.imread(str(Path(ASSETS) / name))
        h, w = img.shape[:2]
        crop = img[h // 10: h - h // 10, w // 10: w - w // 10]
        images["val"] += [(f"{name[:-4]}", img), (f"{name[:-4]}_flip", img[:, ::-1])]
        images["train"] += [(f"{name[:-4]}_crop", crop), (f"{name[:-4]}_crop_flip", crop[:, ::-1])]
    for split, items in images.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for stem, img in items:
            path = out / "images" / split / f"{stem}.jpg"
            cv2.imwrite(str(path), np.ascontiguousarray(img))
            boxes = model.predict(str(path), imgsz=imgsz, conf=conf, verbose=False, device="cpu")[0].boxes
            rows = [f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}"
                    for c, (x, y, bw, bh) in zip(boxes.cls.tolist(), boxes.xywhn.tolist())]
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    data = {"path": str(out), "train": "images/train", "val": "images/val", "names": dict(model.names)}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def load_script(relpath: str):
    """Import a script of the repository (e.g. ``benchmarks/compare.py``) as a module, without running its main."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def output_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference of boxes and of scores of two Detect outputs, each against its own largest value (as the
    export parity check)."""
    return max(float((a[:, :4] - b[:, :4]).abs().max() / b[:, :4].abs().max()),
               float((a[:, 4:] - b[:, 4:]).abs().max() / b[:, 4:].abs().max()))


def channel_pruner(model, criterion: str = "l2", compensate: str = "mean"):
    """A ``ChannelPruner`` on ``model`` with the registered ``criterion`` and ``compensate`` mode, FLOPs at 640 px."""
    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.parts import build_parts
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner

    crit = build_parts({"method": criterion})["criterion"]
    return ChannelPruner(model, crit, measure(model, 640, protected=protected_layers(model)), layer_channels(model),
                         protected_layers(model), compensate=compensate)
