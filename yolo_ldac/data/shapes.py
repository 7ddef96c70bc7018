"""A tiny, deterministic YOLO-format dataset of filled coloured shapes on noisy backgrounds, for every Ultralytics
task a detector head serves: boxes (``detect``), instance masks (``segment``), keypoints (``pose``) and oriented
boxes (``obb``).

It needs no download, takes well under a second to write, and a detector learns it quickly, which makes it
the dataset of the project's tests, examples and smoke benchmarks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_ldac.errors import LDACError

SHAPES = ("square", "circle", "triangle")
TASKS = ("detect", "segment", "pose", "obb")
# pose: three keypoints per shape, all visible: its centre, the middle of its top-most and of its bottom-most pixel
# row; a horizontal flip maps each to itself (flip_idx [0, 1, 2]).
KPT_SHAPE = (3, 3)
PARAMS_FILE = "shapes.json"  # the generation parameters, written beside data.yaml
_FORMAT = 1  # bump when the generator's output changes, so cached datasets are rewritten


def make_shapes_dataset(
    root: str | Path,
    n_train: int = 16,
    n_val: int = 8,
    imgsz: int = 128,
    seed: int = 0,
    classes: tuple[str, ...] = SHAPES,
    max_objects: int = 4,
    task: str = "detect",
) -> Path:
    """Write a synthetic YOLO detection dataset under ``root`` and return the path of its ``data.yaml``.

    Each ``imgsz`` x ``imgsz`` RGB image holds 1..``max_objects`` non-overlapping filled shapes of random
    size, position and colour on a noisy colour-gradient background. The box of every object is the exact
    extent of its drawn pixels. Images are PNG (lossless), so the same arguments give the same bytes.

    Layout::

        root/images/{train,val}/{train,val}_0000.png
        root/labels/{train,val}/{train,val}_0000.txt   # "cls xc yc w h", normalised to [0, 1] (see task)
        root/data.yaml                                 # path (absolute), train, val, names {index: name}
        root/shapes.json                               # the parameters, to recognise an up-to-date dataset

    If ``root`` already holds a dataset made with the same parameters, it is returned as it is, without
    rewriting a file. Other parameters rewrite it in place.

    Args:
        root: output directory (created if needed).
        n_train: number of training images.
        n_val: number of validation images.
        imgsz: image side in pixels.
        seed: random seed; each image is drawn from its own stream derived from (seed, split, index).
        classes: class names in class-index order, each one of ``"square"``, ``"circle"``, ``"triangle"``.
        max_objects: the most objects in one image (at least 1).
        task: the label format. ``detect``: ``cls xc yc w h``; ``segment``: ``cls x1 y1 x2 y2 ...``, the outline
            of the drawn pixels; ``pose``: the box then :data:`KPT_SHAPE` keypoints ``x y visible``
            (``data.yaml`` has ``kpt_shape`` and ``flip_idx``); ``obb``: ``cls x1 y1 ... x4 y4``, the smallest
            rotated rectangle around the drawn pixels (squares are drawn rotated). The images of ``detect``,
            ``segment`` and ``pose`` are the same for the same arguments.

    Returns:
        Path to ``root/data.yaml``.

    Raises:
        LDACError: bad arguments, or ``root`` holds a ``data.yaml`` that this function did not write.

    Example:
        >>> from ultralytics import YOLO
        >>> from yolo_ldac.data import make_shapes_dataset
        >>> data = make_shapes_dataset("datasets/shapes", n_train=16, n_val=8, imgsz=128)
        >>> YOLO("yolov8n.yaml").train(data=str(data), epochs=1, imgsz=128)
    """
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise LDACError(f"classes must be distinct names among {SHAPES}, got {classes}")
    if n_train < 1 or n_val < 1 or max_objects < 1:
        raise LDACError(f"n_train, n_val and max_objects must be >= 1, got {n_train}, {n_val}, {max_objects}")
    if imgsz < 32:
        raise LDACError(f"imgsz must be >= 32, got {imgsz}")
    if task not in TASKS:
        raise LDACError(f"task must be one of {', '.join(TASKS)}, got {task!r}")

    root = Path(root).expanduser().resolve()
    data_yaml, params_file = root / "data.yaml", root / PARAMS_FILE
    params = {
        "format": _FORMAT,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "imgsz": int(imgsz),
        "seed": int(seed),
        "classes": list(classes),
        "max_objects": int(max_objects),
    }
    if task != "detect":
        params["task"] = task
    if data_yaml.exists():
        if not params_file.exists():
            raise LDACError(f"{data_yaml} exists and was not written by make_shapes_dataset: choose another root")
        if _read_json(params_file) == params and _complete(root, params):
            return data_yaml
        data_yaml.unlink()  # written last below: its absence marks an incomplete dataset

    for split, n in (("train", n_train), ("val", n_val)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*img_dir.glob(f"{split}_*.png"), *lbl_dir.glob(f"{split}_*.txt")]:
            stale.unlink()
        (root / "labels" / f"{split}.cache").unlink(missing_ok=True)  # Ultralytics' label cache
        for i in range(n):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
            image, labels, masks = _draw_image(rng, imgsz, classes, max_objects, rotated=task == "obb")
            name = f"{split}_{i:04d}"
            if not cv2.imwrite(str(img_dir / f"{name}.png"), image):
                raise LDACError(f"could not write {img_dir / name}.png")
            (lbl_dir / f"{name}.txt").write_text(
                "".join(_label_line(task, label, mask, imgsz) for label, mask in zip(labels, masks))
            )

    params_file.write_text(json.dumps(params, indent=1) + "\n")
    data = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {i: name for i, name in enumerate(classes)},
    }
    if task == "pose":
        data.update(kpt_shape=list(KPT_SHAPE), flip_idx=list(range(KPT_SHAPE[0])))
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _complete(root: Path, params: dict) -> bool:
    """True when every image and label file of the dataset is present."""
    for split in ("train", "val"):
        for i in range(params[f"n_{split}"]):
            name = f"{split}_{i:04d}"
            if not (root / "images" / split / f"{name}.png").is_file():
                return False
            if not (root / "labels" / split / f"{name}.txt").is_file():
                return False
    return True


def _background(rng: np.random.Generator, imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy linear colour gradient (uint8 BGR) and its mean colour."""
    c0, c1 = rng.uniform(30, 200, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:imgsz, 0:imgsz] / max(imgsz - 1, 1)
    t = math.cos(angle) * xx + math.sin(angle) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 10, size=(imgsz, imgsz, 3))
    return np.clip(img, 0, 255).astype(np.uint8), (c0 + c1) / 2


def _colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A colour that stands out from the background's mean colour."""
    for _ in range(50):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).sum() > 180:
            break
    return tuple(int(v) for v in colour)


def _shape_mask(rng: np.random.Generator, shape: str, imgsz: int, cx: float, cy: float, size: float,
                rotated: bool = False) -> np.ndarray:
    """A uint8 mask (255 inside) of one filled shape of about ``size`` pixels across, centred at (cx, cy);
    ``rotated``: a square at a random angle (inscribed in the same circle as the others)."""
    mask = np.zeros((imgsz, imgsz), np.uint8)
    if shape == "square" and rotated:
        a0 = rng.uniform(0, math.pi / 2)
        angles = a0 + np.arange(4) * math.pi / 2
        pts = np.stack([cx + size / 2 * np.cos(angles), cy + size / 2 * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    elif shape == "square":
        half = size / 2
        cv2.rectangle(mask, (round(cx - half), round(cy - half)), (round(cx + half), round(cy + half)), 255, -1)
    elif shape == "circle":
        cv2.circle(mask, (round(cx), round(cy)), max(round(size / 2), 2), 255, -1)
    else:  # triangle: equilateral, inscribed in the circle of diameter `size`, randomly rotated
        a0 = rng.uniform(0, 2 * math.pi)
        angles = a0 + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([cx + size / 2 * np.cos(angles), cy + size / 2 * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _draw_image(
    rng: np.random.Generator, imgsz: int, classes: tuple[str, ...], max_objects: int, rotated: bool = False
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]], list[np.ndarray]]:
    """One image, its labels (cls, xc, yc, w, h normalised) and each object's mask; objects never touch each
    other."""
    image, bg_mean = _background(rng, imgsz)
    occupied = np.zeros((imgsz, imgsz), np.uint8)
    labels, masks = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(100):  # rejection sampling for a free spot; the first object always fits
            cls = int(rng.integers(0, len(classes)))
            size = rng.uniform(0.15, 0.4) * imgsz
            cx, cy = rng.uniform(size / 2 + 1, imgsz - size / 2 - 1, size=2)
            mask = _shape_mask(rng, classes[cls], imgsz, cx, cy, size, rotated)
            ys, xs = np.nonzero(mask)
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1  # exact pixel extent
            if occupied[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2].any():
                continue  # keep a 2-pixel gap: boxes never overlap and no shape hides another
            occupied[y0:y1, x0:x1] = 1
            image[mask > 0] = _colour(rng, bg_mean)
            labels.append((cls, (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz, (x1 - x0) / imgsz, (y1 - y0) / imgsz))
            masks.append(mask)
            break
    return image, labels, masks


def _label_line(task: str, label: tuple[int, float, float, float, float], mask: np.ndarray, imgsz: int) -> str:
    """One object's label line in ``task``'s YOLO format (coordinates normalised by ``imgsz``)."""
    c, xc, yc, w, h = label
    box = f"{c} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}"
    if task == "detect":
        return box + "\n"
    if task == "pose":
        ys, xs = np.nonzero(mask)
        top, bottom = ys.min(), ys.max()
        points = [(xc * imgsz, yc * imgsz), (xs[ys == top].mean() + 0.5, top + 0.5),
                  (xs[ys == bottom].mean() + 0.5, bottom + 0.5)]
        return box + "".join(f" {x / imgsz:.6f} {y / imgsz:.6f} 2" for x, y in points) + "\n"
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea)
    outline = cv2.approxPolyDP(outline, 0.75, True).reshape(-1, 2).astype(np.float64)  # no pixel staircase
    if task == "obb":
        outline = cv2.boxPoints(cv2.minAreaRect(outline.astype(np.float32))).astype(np.float64)
    xy = np.clip(outline / imgsz, 0.0, 1.0)
    return f"{c} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)) + "\n"
