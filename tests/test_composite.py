"""Composite (cut-and-paste) dataset: exact boxes, disjoint splits, determinism, Ultralytics-loadable yaml.

The tests use a handful of source photos (Ultralytics' bus.jpg and zidane.jpg, scikit-image's astronaut,
coffee, chelsea and rocket) so the segmentation takes a few seconds; they skip when the seg weights or
scikit-image are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolo_ldac.data.composite import build_composite, collect_sources, mask_box, source_id

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
