"""Pedestrian dataset (vtest.avi frames, TEACHER labels from the COCO detector): time split, label format,
labels == detector boxes, caching, Ultralytics-loadable yaml, bad input.

A tiny build (12 frames, every 20th, long side 384) keeps the detector to a few seconds on one CPU thread.
The tests skip when opencv-doc's vtest.avi or the shared yolo11n-coco.pt weights are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_ldac.data.pedestrian import build_pedestrian, find_vtest, person_boxes
from yolo_ldac.errors import LDACError

TINY = dict(every=20, max_frames=12, imgsz=384)


@pytest.fixture(scope="module")
def video():
    path = find_vtest()
    if path is None:
        pytest.skip("vtest.avi not found (install the Debian package opencv-doc)")
    return path


@pytest.fixture(scope="module")
def weights(shared_weights):
    return shared_weights("yolo11n-coco.pt")


@pytest.fixture(scope="module")
def built(tmp_path_factory, video, weights):
    return build_pedestrian(tmp_path_factory.mktemp("pedestrian"), video=video, weights=weights, **TINY)


def _meta(data_yaml: Path) -> dict:
    return json.loads((data_yaml.parent / "pedestrian.json").read_text())


def test_time_split_and_metadata(built, video):
    meta = _meta(built)
    root = built.parent
    frames = {s: sorted(int(p.stem.split("_")[1]) for p in (root / "images" / s).glob("*.jpg"))
              for s in ("train", "val")}
    assert frames == meta["frames"]
    assert frames["train"] == [20 * i for i in range(8)] and frames["val"] == [20 * i for i in range(8, 12)]
    assert max(frames["train"]) < min(frames["val"]) == meta["split_frame"]
    assert meta["video"] == str(Path(video).resolve())
    assert meta["human_annotations"] is False and meta["label_source"] == "detector"
    assert "TEACHER LABELS" in meta["labels"] and "not human annotations" in meta["labels"]
    assert len(meta["detector"]["sha256"]) == 64 and meta["detector"]["conf"] == 0.5
    assert sum(c["images"] for c in meta["counts"].values()) == 12


def test_labels_are_class0_yolo_lines(built):
    root = built.parent
    n_boxes = 0
    for split in ("train", "val"):
        for img in sorted((root / "images" / split).glob("*.jpg")):
            lbl = root / "labels" / split / f"{img.stem}.txt"
            for line in lbl.read_text().splitlines():
                parts = line.split()
                assert len(parts) == 5 and parts[0] == "0", line
                xc, yc, w, h = map(float, parts[1:])
                assert 0 < w <= 1 and 0 < h <= 1
                assert -1e-6 <= xc - w / 2 and xc + w / 2 <= 1 + 1e-6
                assert -1e-6 <= yc - h / 2 and yc + h / 2 <= 1 + 1e-6
                n_boxes += 1
    assert n_boxes == sum(c["boxes"] for c in _meta(built)["counts"].values()) > 0


def test_labels_equal_detector_boxes(built, weights):
    from ultralytics import YOLO

    meta = _meta(built)
    root = built.parent
    stem = f"frame_{meta['split_frame']:05d}"
    image = cv2.imread(str(root / "images" / "val" / f"{stem}.jpg"))
    assert max(image.shape[:2]) == 384
    xywhn, conf = person_boxes(YOLO(str(weights)), image, meta["detector"]["imgsz"], 0.5)
    assert len(xywhn) > 0 and (conf >= 0.5).all()
    rows = np.loadtxt(root / "labels" / "val" / f"{stem}.txt", ndmin=2).reshape(-1, 5)
    assert (rows[:, 0] == 0).all()
    np.testing.assert_allclose(rows[:, 1:], xywhn, atol=1e-6)


def test_cached_rebuild_skips_labelling(built, video, weights, monkeypatch):
    import yolo_ldac.data.pedestrian as ped

    def boom(*a, **k):
        raise AssertionError("the detector ran on a cached build")

    monkeypatch.setattr(ped, "_load_detector", boom)
    before = {p: p.stat().st_mtime_ns for p in built.parent.rglob("*.txt")}
    assert build_pedestrian(built.parent, video=video, weights=weights, **TINY) == built
    assert {p: p.stat().st_mtime_ns for p in built.parent.rglob("*.txt")} == before


def test_check_det_dataset_loads(built):
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(built))
    assert data["nc"] == 1 and data["names"] == {0: "person"}
    assert Path(data["train"]).is_dir() and Path(data["val"]).is_dir()


def test_bad_input(tmp_path, weights):
    with pytest.raises(LDACError, match="video not found"):
        build_pedestrian(tmp_path / "out", video=tmp_path / "missing.avi", weights=weights)
    bad = tmp_path / "not_a_video.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(LDACError):
        build_pedestrian(tmp_path / "out", video=bad, weights=weights, **TINY)
    with pytest.raises(LDACError, match="weights not found"):
        build_pedestrian(tmp_path / "out", video=bad, weights=tmp_path / "missing.pt")
    with pytest.raises(LDACError, match="every"):
        build_pedestrian(tmp_path / "out", video=bad, every=0)
