"""Composite (cut-and-paste) dataset: exact boxes, disjoint splits, determinism, Ultralytics-loadable yaml;
with task="segment": the same images, polygon labels whose boxes match the detect boxes, loadable for segment.

The tests use a handful of source photos (Ultralytics' bus.jpg and zidane.jpg, scikit-image's astronaut,
coffee, chelsea and rocket) so the segmentation takes a few seconds; they skip when the seg weights or
scikit-image are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_ldac.data.composite import build_composite, collect_sources, mask_box, mask_polygon, source_id

WEIGHTS = Path(os.environ.get("YOLO_LDAC_SHARED_WEIGHTS") or Path(__file__).resolve().parents[2] / "shared" / "weights")
SEG = WEIGHTS / "yolo11n-seg-coco.pt"
SMALL = dict(n_train=6, n_val=3, imgsz=128, max_objects=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("composite-cache")


@pytest.fixture(scope="module")
def sources(cache):
    if not SEG.is_file():
        pytest.skip(f"segmentation weights {SEG} not found (set YOLO_LDAC_SHARED_WEIGHTS)")
    pytest.importorskip("skimage", reason="scikit-image provides the test's source photos")
    wanted = {"ultralytics/bus", "ultralytics/zidane", "skimage/astronaut", "skimage/coffee", "skimage/chelsea",
              "skimage/rocket"}
    paths = [p for p in collect_sources(cache_dir=cache, opencv_doc=False) if source_id(p) in wanted]
    assert {source_id(p) for p in paths} == wanted
    return paths


@pytest.fixture(scope="module")
def built(tmp_path_factory, sources, cache):
    out = tmp_path_factory.mktemp("composite")
    return build_composite(out, seed=0, seg_weights=SEG, sources=sources, cache_dir=cache, debug_masks=True,
                           **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.suffix in {".jpg", ".txt"}}


def test_boxes_are_visible_mask_boxes(built):
    root = built.parent
    n_objects = 0
    for split, n in (("train", 6), ("val", 3)):
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(labels) == n == len(list((root / "images" / split).glob("*.jpg")))
        for lbl in labels:
            rows = np.loadtxt(lbl, ndmin=2).reshape(-1, 5)
            masks = np.load(root / "masks" / split / f"{lbl.stem}.npz")["masks"]
            assert len(rows) == len(masks)
            for row, mask in zip(rows, masks):
                x0, y0, x1, y1 = mask_box(mask)
                xc, yc, w, h = row[1:] * 128
                np.testing.assert_allclose([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], [x0, y0, x1, y1],
                                           atol=1e-4)
                n_objects += 1
    assert n_objects > 0


def test_splits_are_disjoint(built):
    meta = json.loads((built.parent / "composite.json").read_text())
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    assert tr["cutout_sources"] and va["cutout_sources"] and tr["background_sources"] and va["background_sources"]
    train_photos = set(tr["cutout_sources"]) | set(tr["background_sources"])
    val_photos = set(va["cutout_sources"]) | set(va["background_sources"])
    assert not train_photos & val_photos
    assert not set(tr["groups"]) & set(va["groups"])
    assert meta["classes"] and all(tr["cutouts_per_class"][c] and va["cutouts_per_class"][c] for c in meta["classes"])
    if len(meta["classes"]) < 10:  # the test's six photos cannot give 10 classes: that must be said, not faked
        assert meta["warning"]


def test_same_seed_same_bytes_other_seed_differs(built, sources, cache, tmp_path):
    again = build_composite(tmp_path / "a", seed=0, seg_weights=SEG, sources=sources, cache_dir=cache, **SMALL)
    other = build_composite(tmp_path / "b", seed=1, seg_weights=SEG, sources=sources, cache_dir=cache, **SMALL)
    ref = _files(built.parent)
    assert len(ref) == 18
    assert _files(again.parent) == ref
    assert _files(other.parent) != ref


def test_yaml_loads_with_ultralytics(built):
    from ultralytics.data.utils import check_det_dataset

    data = yaml.safe_load(built.read_text())
    assert Path(data["path"]).is_absolute()
    info = check_det_dataset(str(built))
    assert info["nc"] == len(data["names"]) >= 1
    assert Path(info["val"]).is_dir()


@pytest.fixture(scope="module")
def built_seg(tmp_path_factory, sources, cache):
    out = tmp_path_factory.mktemp("composite-seg")
    return build_composite(out, seed=0, seg_weights=SEG, sources=sources, cache_dir=cache, debug_masks=True,
                           task="segment", **SMALL)


def test_mask_polygon():
    m = np.zeros((20, 20), bool)
    m[2:9, 3:12] = True  # the largest part
    m[15:17, 15:17] = True  # a smaller part, ignored
    poly, fallback = mask_polygon(m)
    assert not fallback and len(poly) == 4  # a rectangle simplifies to its corners (pixel centres)
    np.testing.assert_allclose(poly.min(0), [3.5, 2.5])
    np.testing.assert_allclose(poly.max(0), [11.5, 8.5])
    line = np.zeros((20, 20), bool)
    line[5, 2:10] = True  # 1 pixel wide: no polygon with area, so the box rectangle
    poly, fallback = mask_polygon(line)
    assert fallback
    np.testing.assert_allclose(poly, [[2, 5], [10, 5], [10, 6], [2, 6]])


def test_segment_labels(built, built_seg):
    det_root, root = built.parent, built_seg.parent
    imgs = {k: v for k, v in _files(det_root).items() if k.endswith(".jpg")}
    assert len(imgs) == 9 and imgs == {k: v for k, v in _files(root).items() if k.endswith(".jpg")}
    meta = json.loads((root / "composite.json").read_text())
    assert meta["task"] == "segment" and meta["polygon_fallbacks"] >= 0
    assert "task" not in json.loads((det_root / "composite.json").read_text())
    n_objects, close = 0, 0
    for split in ("train", "val"):
        for lbl in sorted((root / "labels" / split).glob("*.txt")):
            det = np.loadtxt(det_root / "labels" / split / lbl.name, ndmin=2).reshape(-1, 5)
            masks = np.load(root / "masks" / split / f"{lbl.stem}.npz")["masks"]
            lines = lbl.read_text().splitlines()
            assert len(lines) == len(det) == len(masks)
            for line, row, mask in zip(lines, det, masks):
                cols = line.split()
                assert len(cols) % 2 == 1 and len(cols) >= 7 and int(cols[0]) == int(row[0])
                xy = np.array(cols[1:], float).reshape(-1, 2)
                assert ((xy >= 0) & (xy <= 1)).all()
                box = np.r_[xy.min(0), xy.max(0)] * 128
                xc, yc, w, h = row[1:] * 128
                close += np.abs(box - [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]).max() <= 2
                # the polygon outlines the largest part: its box is that part's box (pixel centres, epsilon 1 px)
                _, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
                part = lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
                assert np.abs(box - mask_box(part)).max() <= 1.5 + 1e-3 or len(xy) == 4
                n_objects += 1
    # Small fragments cut off by occlusion or feathering widen the detect box but not the polygon's.
    assert n_objects > 0 and close > 0.5 * n_objects


def test_segment_loads_with_ultralytics(built_seg):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    data = check_det_dataset(str(built_seg))
    cfg = get_cfg(DEFAULT_CFG, dict(task="segment", imgsz=128))
    for split in ("train", "val"):
        ds = build_yolo_dataset(cfg, data[split], batch=2, data=data, mode="val")
        assert len(ds.labels) == {"train": 6, "val": 3}[split]
        assert sum(len(lb["cls"]) for lb in ds.labels) > 0
        for lb in ds.labels:
            assert len(lb["segments"]) == len(lb["cls"])
        item = ds[0]
        assert item["masks"].shape[-2:] == (32, 32) and item["masks"].max() > 0  # mask_ratio 4 of 128
