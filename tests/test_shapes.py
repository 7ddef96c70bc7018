from pathlib import Path

import numpy as np
import pytest
import yaml

from yolo_ldac.data import make_shapes_dataset
from yolo_ldac.errors import LDACError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.suffix in {".png", ".txt"}}


def _labels(root: Path) -> list[np.ndarray]:
    return [np.loadtxt(p, ndmin=2) for p in sorted((root / "labels").rglob("*.txt"))]


def test_same_seed_same_bytes(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", n_train=4, n_val=2, seed=3).parent
    b = make_shapes_dataset(tmp_path / "b", n_train=4, n_val=2, seed=3).parent
    c = make_shapes_dataset(tmp_path / "c", n_train=4, n_val=2, seed=4).parent
    assert len(_files(a)) == 12
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_layout_counts_and_labels(shapes_data):
    root = shapes_data.parent
    data = yaml.safe_load(shapes_data.read_text())
    assert data == {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "square", 1: "circle", 2: "triangle"},
    }
    assert Path(data["path"]).is_absolute()
    for split, n in (("train", 16), ("val", 8)):
        images = sorted((root / "images" / split).glob("*.png"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]

    import cv2

    assert cv2.imread(str(root / "images" / "train" / "train_0000.png")).shape == (128, 128, 3)
    for rows in _labels(root):
        assert 1 <= len(rows) <= 4  # every image has 1..max_objects objects
        assert rows.shape[1] == 5
        assert set(rows[:, 0]) <= {0, 1, 2}
        xc, yc, w, h = rows[:, 1:].T
        assert (w > 0).all() and (h > 0).all()
        assert (xc - w / 2 >= 0).all() and (xc + w / 2 <= 1).all()
        assert (yc - h / 2 >= 0).all() and (yc + h / 2 <= 1).all()
    all_rows = np.concatenate(_labels(root))
    assert set(all_rows[:, 0]) == {0, 1, 2}  # every class occurs


def test_boxes_are_exact(tmp_path):
    """Each box is the exact extent of a shape: its border rows and columns differ from the background."""
    import cv2

    root = make_shapes_dataset(tmp_path, n_train=2, n_val=1, imgsz=64, classes=("circle",), max_objects=1).parent
    for img_path in (root / "images").rglob("*.png"):
        img = cv2.imread(str(img_path)).astype(int)
        (_, xc, yc, w, h), = np.loadtxt(root / "labels" / img_path.parent.name / f"{img_path.stem}.txt", ndmin=2)
        x0, x1, y0, y1 = (round(v * 64) for v in (xc - w / 2, xc + w / 2, yc - h / 2, yc + h / 2))
        colour = img[round(yc * 64), round(xc * 64)]  # the centre of a circle is inside it
        inside = (img == colour).all(-1)
        ys, xs = np.nonzero(inside)
        assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (x0, x1, y0, y1)


def test_cached_call_does_not_rewrite(tmp_path):
    data = make_shapes_dataset(tmp_path, n_train=3, n_val=2)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert make_shapes_dataset(tmp_path, n_train=3, n_val=2) == data
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes

    # other parameters rewrite the dataset in place, leaving no stale file behind
    make_shapes_dataset(tmp_path, n_train=2, n_val=1)
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 2
    assert len(list((tmp_path / "labels" / "val").glob("*.txt"))) == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(LDACError, match="classes"):
        make_shapes_dataset(tmp_path / "a", classes=("square", "hexagon"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "data.yaml").write_text("path: .\n")
    with pytest.raises(LDACError, match="not written by make_shapes_dataset"):
        make_shapes_dataset(tmp_path / "b")
