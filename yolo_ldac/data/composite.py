"""A deterministic, offline "cut and paste" detection (or segmentation) dataset of real objects on real backgrounds.

Real photographs that installed packages ship (Ultralytics' ``assets``, scikit-image's ``skimage.data`` when
scikit-image is importable, and the stills of Debian's ``opencv-doc`` package when it is installed) are
segmented with a COCO YOLO segmentation model. Its instance masks give RGBA cutouts of real objects; the
photographs (or the parts of them free of the kept classes) give the backgrounds. Each composite image pastes
1..``max_objects`` cutouts with random scale, horizontal flip, colour jitter and feathered (soft) alpha edges;
a later paste occludes earlier ones, and every label box is the bounding box of the object's *visible* mask
after all pastes, so boxes are exact by construction. With ``task="segment"`` the labels are instead one
Ultralytics polygon per object, the outline of (the largest part of) that visible mask, and the same images
train segmentation models (yolo11n-seg).

Train and val are made from disjoint groups of source photographs (for cutouts and for backgrounds alike): a
group holds photos that show the same scene (stereo pairs, numbered sequences, tutorial images that are
processed copies of one another, found by file name and by a perceptual hash), so val measures generalisation
to unseen photos. A background is a photo, or its largest rectangle, free of every detection of a kept class
(at the low ``bg_conf`` threshold), so no unlabelled object of a kept class is left in it.

How many classes the sources yield depends on what is installed. A class is usable only if its cutouts come
from at least two photo groups (one for train, one for val). The number of classes found is written to
``composite.json`` (``classes_found`` / ``classes_requested`` / ``warning``); when fewer than ``n_classes``
classes are usable the dataset has fewer classes and says so there and in a logged warning, rather than
faking more. Measured with yolo11n-seg (COCO) on Debian bookworm: Ultralytics assets alone yield 1 class
(person), + scikit-image still 1, + opencv-doc at least 10.

Provenance: the images are the photographs above (Ultralytics assets, skimage.data, opencv-doc, under their own
licences); the cut-outs, and so every box and every segmentation polygon, come from the instance masks that the
COCO yolo11n-seg teacher (Ultralytics weights, AGPL-3.0) predicts on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_ldac.data._common import clear_split_files
from yolo_ldac.errors import LDACError

from yolo_ldac.utils.log import LOGGER  # noqa: E402

META_FILE = "composite.json"
_FORMAT = 2  # bump when the generator's output changes
_SEG_FORMAT = 1  # bump when the cached segmentation results change
_SEG_IMGSZ = 640
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_OPENCV_DOC = Path("/usr/share/doc/opencv-doc")
# Colour photographs of skimage.data that ship with the package (others need pooch and a download).
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                   "retina")


def default_cache_dir() -> Path:
    """``$YOLO_LDAC_CACHE/composite`` if set, else ``~/.cache/yolo-ldac/composite``."""
    root = os.environ.get("YOLO_LDAC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "yolo-ldac") / "composite"


# ----------------------------------------------------------------------------------------------- sources
def _opencv_doc_images() -> list[Path]:
    """The images that the Debian package opencv-doc installed (empty if it is not installed)."""
    try:
        out = subprocess.run(["dpkg", "-L", "opencv-doc"], capture_output=True, text=True, timeout=30)
        files = [Path(p) for p in out.stdout.split("\n")] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files and _OPENCV_DOC.is_dir():
        files = list(_OPENCV_DOC.rglob("*"))
    return sorted(p for p in files if p.suffix.lower() in _IMAGE_EXTS and p.is_file())


def _skimage_images(cache_dir: Path) -> list[Path]:
    """skimage.data colour photographs saved as PNG under ``cache_dir/skimage`` (empty without scikit-image)."""
    try:
        from skimage import data as skdata
    except ImportError:
        return []
    folder = cache_dir / "skimage"
    paths = []
    for name in _SKIMAGE_PHOTOS:
        path = folder / f"{name}.png"
        if not path.is_file():
            try:
                img = np.asarray(getattr(skdata, name)())
            except Exception:  # noqa: BLE001 - a photo that needs a download, or a renamed one
                continue
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.png")
            cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
            tmp.replace(path)
        paths.append(path)
    return paths


def collect_sources(
    extra_dirs=(), cache_dir: str | Path | None = None, skimage: bool = True, opencv_doc: bool = True
) -> list[Path]:
    """Real photographs available offline, in a stable order.

    Ultralytics' ``ASSETS`` (bus.jpg, zidane.jpg); skimage.data colour photographs (astronaut, coffee, chelsea,
    ...) written as PNG to ``cache_dir/skimage`` when scikit-image is importable; every JPEG/PNG that the Debian
    package ``opencv-doc`` installed, when it is; and the images under ``extra_dirs`` (recursively).
    Unreadable, grey, tiny and duplicate images are dropped later, by :func:`extract_cutouts`.
    """
    from ultralytics.utils import ASSETS

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    paths = sorted(p for p in Path(ASSETS).glob("*") if p.suffix.lower() in _IMAGE_EXTS)
    if skimage:
        paths += _skimage_images(cache_dir)
    if opencv_doc:
        paths += _opencv_doc_images()
    for d in extra_dirs:
        paths += sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in _IMAGE_EXTS and p.is_file())
    seen, out = set(), []
    for p in paths:
        key = str(Path(p).resolve())
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out


def source_id(path: str | Path) -> str:
    """A readable, machine-independent id of a source photo: ``ultralytics/bus``, ``opencv-doc/examples/...``."""
    path = Path(path).resolve()
    try:
        from ultralytics.utils import ASSETS

        return "ultralytics/" + str(path.relative_to(Path(ASSETS).resolve()).with_suffix(""))
    except ValueError:
        pass
    try:
        return "opencv-doc/" + str(path.relative_to(_OPENCV_DOC).with_suffix(""))
    except ValueError:
        pass
    if path.parent.name == "skimage":
        return "skimage/" + path.stem
    return "extra/" + path.parent.name + "/" + path.stem


def _scene_name(sid: str) -> str:
    """Name-based scene key: strips trailing numbers, L/R and left/right (stereo pairs, numbered sequences)."""
    stem = sid.rsplit("/", 1)[-1].lower()
    stem = re.sub(r"(left|right)", "", stem)
    stem = re.sub(r"([_\-]?(\d+|l|r|big|result|original|image|source|src|input|demo))+$", "", stem)
    return sid.rsplit("/", 1)[0] + "/" + (stem or "_")


def _dhash(img: np.ndarray) -> int:
    g = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


# ---------------------------------------------------------------------------------------------- cutouts
@dataclass
class Cutout:
    """One segmented object: ``rgb`` (h, w, 3 BGR uint8) and ``mask`` (h, w bool) cropped to the mask's box."""

    name: str  # COCO class name
    source: str  # source photo id
    rgb: np.ndarray
    mask: np.ndarray
    conf: float


@dataclass
class SourcePhoto:
    """A source photo after segmentation: its detections (all classes, >= bg_conf) and instance masks."""

    id: str
    path: Path
    image: np.ndarray  # BGR uint8
    names: list[str]  # class name of each detection
    conf: np.ndarray  # (n,)
    xyxy: np.ndarray  # (n, 4) float, pixels
    masks: np.ndarray  # (n, H, W) bool
    group: str = ""


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_image(path: Path, min_side: int) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint8:
        return None
    if img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < min_side:
        return None
    img = np.ascontiguousarray(img[..., :3])
    small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16)
    chroma = np.abs(small - small.mean(axis=2, keepdims=True)).mean()
    if chroma < 3.0:  # grey photos do not make colour training data
        return None
    # Screenshots, diagrams and drawings have a few flat colours: the 5 most common 4-bit colours of a
    # photograph cover well under half of it (bus.jpg 0.14, astronaut 0.27), of a screenshot 0.8 or more.
    q = (cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA) >> 4).astype(np.int32)
    _, counts = np.unique((q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2], return_counts=True)
    return img if np.sort(counts)[::-1][:5].sum() / q[..., 0].size < 0.45 else None


def segment_sources(
    sources, seg_weights: str | Path, bg_conf: float = 0.25, cache_dir: str | Path | None = None,
    min_side: int = 160,
) -> list[SourcePhoto]:
    """Run the segmentation model on every usable source photo (CPU, imgsz 640), with an on-disk cache.

    Grey, unreadable, smaller than ``min_side`` and pixel-identical duplicate photos are dropped. The result of
    each photo is cached in ``cache_dir/seg/<key>.npz``, the key hashing the weights, the pixels and
    ``bg_conf``, so repeated builds skip the model. Photos are grouped into scenes (``SourcePhoto.group``).
    """
    seg_weights = Path(seg_weights)
    if not seg_weights.is_file():
        raise LDACError(f"segmentation weights not found: {seg_weights}")
    cache = (Path(cache_dir) if cache_dir else default_cache_dir()) / "seg"
    cache.mkdir(parents=True, exist_ok=True)
    wkey = _file_sha256(seg_weights)[:16]
    model = None
    photos, seen = [], set()
    for path in sources:
        img = _load_image(Path(path), min_side)
        if img is None:
            continue
        pix = hashlib.sha1(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()
        if pix in seen:
            continue
        seen.add(pix)
        key = hashlib.sha1(f"{_SEG_FORMAT}|{wkey}|{pix}|{bg_conf}|{_SEG_IMGSZ}".encode()).hexdigest()[:24]
        file = cache / f"{key}.npz"
        if file.is_file():
            z = np.load(file)
            names, conf, xyxy, masks = [str(n) for n in z["names"]], z["conf"], z["xyxy"], z["masks"]
        else:
            if model is None:
                from ultralytics import YOLO

                from yolo_ldac.safe_load import check_checkpoint, is_trusted, policy

                check_checkpoint(seg_weights)
                with policy(is_trusted()):  # weights_only unless the caller trusts the file
                    model = YOLO(str(seg_weights))
            r = model.predict(img, imgsz=_SEG_IMGSZ, conf=bg_conf, device="cpu", retina_masks=True,
                              verbose=False)[0]
            n = len(r.boxes)
            names = [r.names[int(c)] for c in r.boxes.cls.tolist()]
            conf = r.boxes.conf.cpu().numpy().astype(np.float32).reshape(n)
            xyxy = r.boxes.xyxy.cpu().numpy().astype(np.float32).reshape(n, 4)
            if r.masks is not None and n:
                masks = r.masks.data.cpu().numpy() > 0.5
                if masks.shape[1:] != img.shape[:2]:  # retina masks are at image size; be safe anyway
                    masks = np.stack([cv2.resize(m.astype(np.uint8), img.shape[1::-1],
                                                 interpolation=cv2.INTER_NEAREST) > 0 for m in masks])
            else:
                masks = np.zeros((n, *img.shape[:2]), bool)
            tmp = file.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, names=np.array(names, dtype=str), conf=conf, xyxy=xyxy, masks=masks)
            tmp.replace(file)
        photos.append(SourcePhoto(source_id(path), Path(path), img, names, conf, xyxy, masks))
    _group_photos(photos)
    return photos


def _group_photos(photos: list[SourcePhoto], max_hamming: int = 10) -> None:
    """Union photos of one scene: same name key, or a perceptual hash (or its mirror's) within ``max_hamming``."""
    parent = list(range(len(photos)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    by_name = {}
    for i, p in enumerate(photos):
        union(i, by_name.setdefault(_scene_name(p.id), i))
    if photos:
        h = np.array([_dhash(p.image) for p in photos], dtype=np.uint64)
        hf = np.array([_dhash(p.image[:, ::-1]) for p in photos], dtype=np.uint64)
        for other in (h, hf):
            x = h[:, None] ^ other[None, :]
            dist = np.unpackbits(x.view(np.uint8).reshape(len(photos), len(photos), 8), axis=2).sum(2)
            for i, j in zip(*np.nonzero(dist <= max_hamming)):
                union(int(i), int(j))
    for i, p in enumerate(photos):
        p.group = photos[find(i)].id


def extract_cutouts(
    sources, seg_weights: str | Path, conf: float = 0.5, min_area: int = 1024, bg_conf: float = 0.25,
    cache_dir: str | Path | None = None, photos: list[SourcePhoto] | None = None,
) -> list[Cutout]:
    """Cutouts of every instance with confidence >= ``conf`` and a mask of >= ``min_area`` pixels.

    ``photos`` (from :func:`segment_sources`) skips the segmentation; otherwise it runs on ``sources``.
    """
    if photos is None:
        photos = segment_sources(sources, seg_weights, bg_conf=bg_conf, cache_dir=cache_dir)
    cutouts = []
    for p in photos:
        for k, name in enumerate(p.names):
            m = p.masks[k]
            if p.conf[k] < conf or m.sum() < min_area:
                continue
            ys, xs = np.nonzero(m)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            cutouts.append(Cutout(name, p.id, p.image[y0:y1, x0:x1].copy(), m[y0:y1, x0:x1].copy(),
                                  float(p.conf[k])))
    return cutouts


# ---------------------------------------------------------------------------------------------- splitting
def _free_rect(shape, boxes: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """The largest of: the whole image, or the strips left/right/above/below all ``boxes`` (x0, y0, x1, y1)."""
    h, w = shape[:2]
    if not len(boxes):
        return 0, 0, w, h
    x0 = int(np.floor(boxes[:, 0].min())) - margin
    y0 = int(np.floor(boxes[:, 1].min())) - margin
    x1 = int(np.ceil(boxes[:, 2].max())) + margin
    y1 = int(np.ceil(boxes[:, 3].max())) + margin
    cands = [(0, 0, x0, h), (x1, 0, w, h), (0, 0, w, y0), (0, y1, w, h)]
    cands = [(max(a, 0), max(b, 0), min(c, w), min(d, h)) for a, b, c, d in cands]
    return max(cands, key=lambda r: (min(r[2] - r[0], r[3] - r[1]), (r[2] - r[0]) * (r[3] - r[1])))


def _split_groups(groups: dict, classes: list[str], rng, val_frac: float):
    """Assign scene groups to val so that every class and the backgrounds keep at least one train and one val
    group. ``groups``: name -> (set of class names, has_background). Returns (val groups, dropped classes)."""
    order = [sorted(groups)[i] for i in rng.permutation(len(groups))]
    val: set[str] = set()
    classes = list(classes)

    def train_ok(extra):
        v = val | {extra}
        train = [g for g in groups if g not in v]
        return all(any(c in groups[g][0] for g in train) for c in classes) and any(groups[g][1] for g in train)

    dropped = []
    for c in sorted(classes, key=lambda c: (sum(c in g[0] for g in groups.values()), c)):
        if c not in classes or any(c in groups[g][0] for g in val):
            continue
        pick = next((g for g in order if g not in val and c in groups[g][0] and train_ok(g)), None)
        if pick is None:
            classes.remove(c)
            dropped.append(c)
        else:
            val.add(pick)
    bg_groups = [g for g in groups if groups[g][1]]
    want = max(1, round(val_frac * len(bg_groups)))
    for g in order:
        if sum(groups[v][1] for v in val) >= want:
            break
        if g not in val and groups[g][1] and train_ok(g):
            val.add(g)
    if not any(groups[g][1] for g in val):
        raise LDACError("not enough background photos for disjoint train and val splits")
    return val, dropped


# ----------------------------------------------------------------------------------------------- compositing
def _jitter(img: np.ndarray, rng, strength: float) -> np.ndarray:
    gain = rng.uniform(1 - strength, 1 + strength) * rng.uniform(1 - strength / 2, 1 + strength / 2, 3)
    bias = rng.uniform(-20 * strength, 20 * strength)
    return img.astype(np.float32) * gain.astype(np.float32) + np.float32(bias)


def _background(bg: tuple[np.ndarray, tuple], imgsz: int, rng) -> np.ndarray:
    img, (x0, y0, x1, y1) = bg
    w, h = x1 - x0, y1 - y0
    side = max(8, int(round(rng.uniform(0.6, 1.0) * min(w, h))))
    cx = x0 + int(rng.integers(0, w - side + 1))
    cy = y0 + int(rng.integers(0, h - side + 1))
    crop = img[cy:cy + side, cx:cx + side]
    interp = cv2.INTER_AREA if side > imgsz else cv2.INTER_LINEAR
    out = cv2.resize(crop, (imgsz, imgsz), interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(_jitter(out, rng, 0.15), 0, 255)


def _compose(rng, bgs, pools, n_cls, imgsz, max_objects, scale, min_visible):
    canvas = _background(bgs[int(rng.integers(len(bgs)))], imgsz, rng)
    objs = []  # [class index, visible mask (imgsz, imgsz) bool, full area]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(n_cls))
        cut = pools[c][int(rng.integers(len(pools[c])))]
        h, w = cut.mask.shape
        s = rng.uniform(*scale) * imgsz / max(h, w)
        nw, nh = max(2, int(round(w * s))), max(2, int(round(h * s)))
        nw, nh = min(nw, imgsz), min(nh, imgsz)
        rgb = cv2.resize(cut.rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        alpha = cv2.resize(cut.mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        rgb = _jitter(rgb, rng, 0.2)
        sigma = max(0.6, 0.012 * max(nw, nh))
        pad = int(np.ceil(3 * sigma))
        alpha = cv2.GaussianBlur(np.pad(alpha, pad), (0, 0), sigma)[pad:-pad, pad:-pad]
        alpha = np.clip(alpha, 0.0, 1.0)
        hard = alpha >= 0.5
        area = int(hard.sum())
        if area < 16:
            continue
        x = int(rng.integers(0, imgsz - nw + 1))
        y = int(rng.integers(0, imgsz - nh + 1))
        region = canvas[y:y + nh, x:x + nw]
        a = alpha[..., None]
        canvas[y:y + nh, x:x + nw] = a * rgb + (1 - a) * region
        full = np.zeros((imgsz, imgsz), bool)
        full[y:y + nh, x:x + nw] = hard
        for o in objs:
            o[1] &= ~full
        objs.append([c, full, area])
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    kept = []
    for c, vis, area in objs:
        if vis.sum() < min_visible * area:
            continue
        ys, xs = np.nonzero(vis)
        if xs.max() + 1 - xs.min() < 2 or ys.max() + 1 - ys.min() < 2:
            continue
        kept.append((c, vis))
    return image, kept


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel-extent box (x0, y0, x1, y1) of a boolean mask: x1, y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mask_polygon(mask: np.ndarray, epsilon: float = 1.0) -> tuple[np.ndarray, bool]:
    """One polygon (n, 2) float, in pixels, for a boolean mask, and whether it is the box fallback.

    The outer contour of the mask's largest 8-connected part (by pixel count), simplified with
    ``cv2.approxPolyDP(epsilon)``; vertices are pixel centres (pixel ``i`` spans ``[i, i + 1)``, so a vertex is
    at ``i + 0.5``). If the simplified polygon degenerates (< 3 points or no area) the unsimplified contour is
    used; if that degenerates too (a part 1 pixel wide), the polygon is the rectangle of :func:`mask_box` of the
    whole mask and the second value is True.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 1:
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        contours, _ = cv2.findContours((lab == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if contours:
            contour = max(contours, key=len)
            for cand in (cv2.approxPolyDP(contour, epsilon, True), contour):
                if len(cand) >= 3 and cv2.contourArea(cand) > 0:
                    return cand.reshape(-1, 2).astype(np.float64) + 0.5, False
    if not m.any():
        raise LDACError("mask_polygon: empty mask")
    x0, y0, x1, y1 = mask_box(mask)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64), True


def build_composite(
    out_dir: str | Path,
    n_train: int = 1000,
    n_val: int = 250,
    imgsz: int = 416,
    seed: int = 0,
    seg_weights: str | Path | None = None,
    det_check: bool = True,
    n_classes: int = 10,
    classes: list[str] | None = None,
    sources=None,
    extra_dirs=(),
    cache_dir: str | Path | None = None,
    max_objects: int = 6,
    conf: float = 0.5,
    bg_conf: float = 0.25,
    min_area: int = 1024,
    scale: tuple[float, float] = (0.15, 0.6),
    min_visible: float = 0.3,
    val_frac: float = 0.25,
    jpeg_quality: int = 95,
    debug_masks: bool = False,
    task: str = "detect",
) -> Path:
    """Write a composite YOLO detection (or segmentation) dataset under ``out_dir``; return its ``data.yaml``.

    Layout::

        out_dir/images/{train,val}/{train,val}_00000.jpg
        out_dir/labels/{train,val}/{train,val}_00000.txt  # task detect: "cls xc yc w h", normalised, from the
                                                          # visible masks; task segment: "cls x1 y1 ... xn yn",
                                                          # normalised, one polygon per object
        out_dir/masks/{train,val}/{train,val}_00000.npz   # only with debug_masks: "masks" (n, H, W) bool,
                                                          # in label-line order
        out_dir/data.yaml       # path (absolute), train, val, names {index: name}
        out_dir/composite.json  # parameters, classes, source photo ids per split, counts, warnings

    Args:
        out_dir: output directory; its images/labels/masks folders are rewritten.
        n_train, n_val: number of images per split.
        imgsz: side of the square images.
        seed: random seed: the split of the photo groups and every image (each image has its own stream from
            (seed, split, index)). The same arguments and sources give the same bytes.
        seg_weights: COCO YOLO segmentation checkpoint (e.g. yolo11n-seg). Default: ``yolo11n-seg-coco.pt`` in
            ``$YOLO_LDAC_SHARED_WEIGHTS`` or ``<repo>/../shared/weights``.
        det_check: reject backgrounds (or the parts of them) where the model detects a kept class at
            ``bg_conf``. With False only the cutout instances themselves (>= ``conf``) are avoided.
        n_classes: the most classes to keep: those whose cutouts come from the most photo groups (then the
            most cutouts). Fewer are kept when the sources do not have them (see ``composite.json``).
        classes: explicit COCO class names to keep instead (each needs cutouts in >= 2 photo groups).
        sources: source photo paths; default :func:`collect_sources` (``extra_dirs``, ``cache_dir``).
        cache_dir: cache of segmentation results and skimage photos (default :func:`default_cache_dir`).
        max_objects: the most pasted objects per image (1..max_objects, before occlusion drops any).
        conf: confidence of an instance to become a cutout; min_area: its least mask area in source pixels.
        scale: range of a pasted object's long side, as a fraction of ``imgsz``.
        min_visible: an occluded object with less than this fraction of its pasted mask visible is dropped.
        val_frac: target fraction of the background photo groups that go to val.
        jpeg_quality: JPEG quality of the written images.
        debug_masks: also write the visible masks of the labelled objects.
        task: ``"detect"`` (box labels) or ``"segment"`` (Ultralytics segmentation labels, for yolo11n-seg).
            The images are the same for both; only the label lines differ. A segment label is the outer
            contour of the largest part of the object's visible mask (occlusion can split it), simplified
            with ``cv2.approxPolyDP`` (epsilon 1 px at ``imgsz``; see :func:`mask_polygon`), so the box that
            Ultralytics derives from it is that of the largest part: within about a pixel of the detect box
            for an object in one piece, smaller when occlusion cut it. An object whose polygon degenerates
            keeps its box as a 4-point rectangle and is counted in ``composite.json``
            (``polygon_fallbacks``); no object is dropped. ``composite.json`` then also has ``"task"``.

    Raises:
        LDACError: bad arguments, missing weights, no usable class, or too few backgrounds for two splits.
    """
    if task not in ("detect", "segment"):
        raise LDACError(f"task must be 'detect' or 'segment', got {task!r}")
    if n_train < 1 or n_val < 1 or max_objects < 1 or imgsz < 32:
        raise LDACError(f"need n_train, n_val, max_objects >= 1 and imgsz >= 32, got "
                        f"{n_train}, {n_val}, {max_objects}, {imgsz}")
    if seg_weights is None:
        from yolo_ldac.utils.env import shared_weights_dir

        seg_weights = shared_weights_dir() / "yolo11n-seg-coco.pt"
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if sources is None:
        sources = collect_sources(extra_dirs, cache_dir=cache_dir)
    photos = segment_sources(sources, seg_weights, bg_conf=bg_conf, cache_dir=cache_dir)
    cutouts = extract_cutouts(None, seg_weights, conf=conf, min_area=min_area, photos=photos)
    group_of = {p.id: p.group for p in photos}

    cls_groups, cls_count = defaultdict(set), defaultdict(int)
    for c in cutouts:
        cls_groups[c.name].add(group_of[c.source])
        cls_count[c.name] += 1
    usable = sorted((n for n in cls_groups if len(cls_groups[n]) >= 2),
                    key=lambda n: (-len(cls_groups[n]), -cls_count[n], n))
    if classes is not None:
        missing = [c for c in classes if c not in usable]
        if missing:
            raise LDACError(f"classes {missing} do not have cutouts in >= 2 photo groups; usable: {usable}")
        kept = list(classes)
    else:
        kept = usable[:n_classes]
    if not kept:
        raise LDACError(f"no class has cutouts in two photo groups among {len(photos)} usable source photos")

    def bg_rect(p, names):
        boxes = [p.xyxy[k] for k, n in enumerate(p.names)
                 if n in names and (det_check or p.conf[k] >= conf)]
        rect = _free_rect(p.image.shape, np.array(boxes).reshape(-1, 4), margin=4)
        return rect if min(rect[2] - rect[0], rect[3] - rect[1]) >= min(96, imgsz // 2) else None

    for _ in range(len(kept) + 1):  # dropping a class can only free backgrounds; repeat until stable
        groups = defaultdict(lambda: [set(), False])
        for c in cutouts:
            if c.name in kept:
                groups[group_of[c.source]][0].add(c.name)
        for p in photos:
            if bg_rect(p, set(kept)) is not None:
                groups[p.group][1] = True
        groups = {g: (frozenset(v[0]), v[1]) for g, v in groups.items()}
        val_groups, dropped = _split_groups(groups, kept, np.random.default_rng([seed, 7919]), val_frac)
        if not dropped:
            break
        kept = [c for c in kept if c not in dropped]
    if not kept:
        raise LDACError("no class can be split into disjoint train and val photo groups")
    warning = ""
    if len(kept) < n_classes and classes is None:
        warning = (f"only {len(kept)} classes have cutouts in >= 2 disjoint photo groups in the installed sources "
                   f"({len(photos)} usable photos); {n_classes} were requested. Install scikit-image and the "
                   f"Debian package opencv-doc, or pass extra_dirs, for more.")
        LOGGER.warning(warning)

    split_of = {p.id: ("val" if p.group in val_groups else "train") for p in photos}
    meta_splits = {}
    kept_set = set(kept)
    data = {}
    for split in ("train", "val"):
        pools = [[c for c in cutouts if c.name == name and split_of[c.source] == split] for name in kept]
        bgs = []
        for p in photos:
            if split_of[p.id] == split:
                rect = bg_rect(p, kept_set)
                if rect is not None:
                    bgs.append((p.id, p.image, rect))
        data[split] = (pools, bgs)
        meta_splits[split] = {
            "cutout_sources": sorted({c.source for pool in pools for c in pool}),
            "background_sources": sorted(b[0] for b in bgs),
            "groups": sorted({p.group for p in photos if split_of[p.id] == split}),
            "cutouts_per_class": {name: len(pool) for name, pool in zip(kept, pools)},
        }

    out_dir = Path(out_dir).expanduser().resolve()
    clear_split_files(out_dir, ("images", "labels", "masks"))
    counts = {}
    for si, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        pools, bgs = data[split]
        bgs = [(img, rect) for _, img, rect in bgs]
        img_dir, lbl_dir = out_dir / "images" / split, out_dir / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        if debug_masks:
            (out_dir / "masks" / split).mkdir(parents=True, exist_ok=True)
        n_obj = np.zeros(len(kept), int)
        n_fallback = 0
        for i in range(n):
            rng = np.random.default_rng([seed, si, i])
            image, objs = _compose(rng, bgs, pools, len(kept), imgsz, max_objects, scale, min_visible)
            stem = f"{split}_{i:05d}"
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality),
                                                   cv2.IMWRITE_JPEG_OPTIMIZE, 0])
            if not ok:
                raise LDACError(f"could not encode {stem}")
            (img_dir / f"{stem}.jpg").write_bytes(buf.tobytes())
            lines = []
            for c, vis in objs:
                if task == "segment":
                    poly, fallback = mask_polygon(vis, epsilon=1.0)
                    n_fallback += fallback
                    xy = np.clip(poly / imgsz, 0.0, 1.0).ravel()
                    lines.append(f"{c} " + " ".join(f"{v:.6f}" for v in xy))
                else:
                    x0, y0, x1, y1 = mask_box(vis)
                    lines.append(f"{c} {(x0 + x1) / 2 / imgsz:.8f} {(y0 + y1) / 2 / imgsz:.8f} "
                                 f"{(x1 - x0) / imgsz:.8f} {(y1 - y0) / imgsz:.8f}")
                n_obj[c] += 1
            (lbl_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
            if debug_masks:
                masks = np.stack([v for _, v in objs]) if objs else np.zeros((0, imgsz, imgsz), bool)
                with open(out_dir / "masks" / split / f"{stem}.npz", "wb") as f:
                    np.savez_compressed(f, masks=masks)
        counts[split] = {"images": n, "objects": {name: int(k) for name, k in zip(kept, n_obj)}}
        if task != "detect":
            counts[split]["polygon_fallbacks"] = n_fallback

    names = dict(enumerate(kept))
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(out_dir), "train": "images/train", "val": "images/val",
                                         "names": names}, sort_keys=False))
    meta = {
        "format": _FORMAT,
        "params": {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed, "n_classes": n_classes,
                   "det_check": det_check, "max_objects": max_objects, "conf": conf, "bg_conf": bg_conf,
                   "min_area": min_area, "scale": list(scale), "min_visible": min_visible,
                   "val_frac": val_frac, "jpeg_quality": jpeg_quality},
        "seg_weights": Path(seg_weights).name,
        "classes": kept,
        "classes_requested": len(classes) if classes is not None else n_classes,
        "classes_found": len(usable),
        "usable_classes": {n: {"groups": len(cls_groups[n]), "cutouts": cls_count[n]} for n in usable},
        "warning": warning,
        "n_source_photos": len(photos),
        "splits": meta_splits,
        "counts": counts,
    }
    if task != "detect":
        meta["task"] = task
        meta["polygon_fallbacks"] = sum(counts[s]["polygon_fallbacks"] for s in counts)
        if meta["polygon_fallbacks"]:
            LOGGER.info(f"composite: {meta['polygon_fallbacks']} objects whose polygon degenerated are labelled "
                        f"with their box as a 4-point polygon")
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return data_yaml
