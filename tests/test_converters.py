"""KITTI and COCO converters on fixture files in the exact upstream formats (images are drawn at test time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_ldac.data.coco import convert_coco
from yolo_ldac.data.kitti import KITTI_NAMES, convert_kitti, kitti_names, main as kitti_main, ultralytics_kitti_yaml
from yolo_ldac.errors import LDACError

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-6

# KITTI fixture image sizes (width, height): the two sizes of KITTI's raw camera images
KITTI_SIZES = {"000000": (1242, 375), "000001": (1224, 370), "000002": (1242, 375), "000003": (1224, 370)}
# COCO fixture image sizes (width, height), as in the json files
COCO_SIZES = {
    "train": {"000000000139.jpg": (640, 426), "000000000285.jpg": (586, 640)},
    "val": {"000000000632.jpg": (640, 483), "000000000724.jpg": (375, 500)},
}


def _draw(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(0, 255, 3), dtype=np.uint8)
    cv2.rectangle(img, (w // 4, h // 4), (w // 2, h // 2), (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def kitti_root(tmp_path) -> Path:
    """The KITTI fixture tree (official layout: training/image_2, training/label_2) with PNGs of known sizes."""
    root = tmp_path / "kitti_raw"
    shutil.copytree(FIXTURES / "kitti", root)
    for i, (stem, (w, h)) in enumerate(KITTI_SIZES.items()):
        _draw(root / "training" / "image_2" / f"{stem}.png", w, h, i)
    return root


@pytest.fixture
def coco_root(tmp_path) -> Path:
    """The COCO fixture: annotations/instances_{train,val}.json and images/{train,val}/*.jpg of the json sizes."""
    root = tmp_path / "coco_raw"
    shutil.copytree(FIXTURES / "coco", root)
    for split, files in COCO_SIZES.items():
        for i, (name, (w, h)) in enumerate(files.items()):
            _draw(root / "images" / split / name, w, h, i)
    return root


def _read(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


def _assert_lines(path: Path, expected: list[tuple]) -> None:
    got = _read(path)
    assert len(got) == len(expected), (path, got)
    for g, e in zip(got, expected):
        assert g[0] == e[0] and float(g[0]).is_integer(), (path, g, e)
        assert np.allclose(g[1:], e[1:], rtol=0, atol=TOL), (path, g, e)


def _label(out: Path, stem: str) -> Path:
    found = list((out / "labels").glob(f"*/{stem}.txt"))
    assert len(found) == 1, found
    return found[0]


def _dataset_boxes(data: dict, split: str) -> int:
    """Number of boxes Ultralytics' own YOLODataset reads for a split (it rejects malformed label files)."""
    from ultralytics.data.dataset import YOLODataset

    ds = YOLODataset(img_path=data[split], data=data, task="detect", imgsz=64, augment=False)
    return sum(len(lb["cls"]) for lb in ds.labels)


# ---------------------------------------------------------------- KITTI


def test_kitti_names_are_ultralytics_yaml():
    path = ultralytics_kitti_yaml()
    assert path.is_file(), "ultralytics ships cfg/datasets/kitti.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert kitti_names() == [cfg["names"][i] for i in range(len(cfg["names"]))] == list(KITTI_NAMES)
    assert cfg["train"] == "images/train" and cfg["val"] == "images/val"
    # the yaml's comments give 5985 train / 1496 val of KITTI's 7481 training images: the default 0.2 split
    assert round(7481 * 0.2) == 1496


def test_kitti_exact_lines(kitti_root, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "out"
    data_yaml = convert_kitti(kitti_root, out)
    assert data_yaml == out / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == dict(enumerate(KITTI_NAMES))
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert Path(data["path"]) == out.resolve()

    W, H = 1242, 375  # 000000
    _assert_lines(
        _label(out, "000000"),
        [(3, (712.40 + 810.73) / 2 / W, (143.00 + 307.92) / 2 / H, (810.73 - 712.40) / W, (307.92 - 143.00) / H)],
    )
    W, H = 1224, 370  # 000001: DontCare lines dropped
    _assert_lines(
        _label(out, "000001"),
        [
            (2, (599.41 + 629.75) / 2 / W, (156.40 + 189.25) / 2 / H, (629.75 - 599.41) / W, (189.25 - 156.40) / H),
            (0, (387.63 + 423.81) / 2 / W, (181.54 + 203.12) / 2 / H, (423.81 - 387.63) / W, (203.12 - 181.54) / H),
            (5, (676.60 + 688.98) / 2 / W, (163.95 + 193.93) / 2 / H, (688.98 - 676.60) / W, (193.93 - 163.95) / H),
        ],
    )
    W, H = 1242, 375  # 000002: truncated boxes clipped, a box wholly outside the image dropped
    _assert_lines(
        _label(out, "000002"),
        [
            (0, (0 + 402.31) / 2 / W, (192.37 + 375) / 2 / H, (402.31 - 0) / W, (375 - 192.37) / H),  # Car, clipped
            (1, (1100.25 + 1242) / 2 / W, (150.08 + 300.44) / 2 / H, (1242 - 1100.25) / W, (300.44 - 150.08) / H),
            (4, (645.30 + 680.45) / 2 / W, (170.12 + 230.78) / 2 / H, (680.45 - 645.30) / W, (230.78 - 170.12) / H),
            (6, (820.86 + 880.91) / 2 / W, (160.24 + 215.33) / 2 / H, (880.91 - 820.86) / W, (215.33 - 160.24) / H),
            (7, (248.01 + 275.13) / 2 / W, (178.42 + 196.62) / 2 / H, (275.13 - 248.01) / W, (196.62 - 178.42) / H),
        ],
    )
    assert _label(out, "000003").read_text() == ""  # only DontCare: a background image

    for lines in map(_read, (out / "labels").rglob("*.txt")):
        assert all(0 <= v <= 1 for line in lines for v in line[1:])
    stats = json.loads((out / "kitti_conversion.json").read_text())
    assert stats["dropped_classes"] == {"DontCare": 6}
    assert stats["dropped_empty_after_clip"] == 1 and stats["clipped"] == 2
    assert stats["boxes"] == {"car": 2, "van": 1, "truck": 1, "pedestrian": 1, "person_sitting": 1,
                              "cyclist": 1, "tram": 1, "misc": 1}

    # images: symlinks to the originals, each beside its label in the same split
    for split in ("train", "val"):
        imgs = sorted((out / "images" / split).iterdir())
        assert [p.stem for p in imgs] == sorted(p.stem for p in (out / "labels" / split).iterdir())
        assert all(p.is_symlink() and p.resolve().parent == (kitti_root / "training/image_2").resolve() for p in imgs)
        listed = (out / f"{split}.txt").read_text().splitlines()
        assert listed == [f"./images/{split}/{p.name}" for p in imgs]

    data = check_det_dataset(str(data_yaml))
    assert data["nc"] == 8 and data["names"] == dict(enumerate(KITTI_NAMES))
    assert _dataset_boxes(data, "train") + _dataset_boxes(data, "val") == 9


def test_kitti_deterministic_split(kitti_root, tmp_path):
    def split(out, **kw):
        convert_kitti(kitti_root, out, **kw)
        return {s: sorted(p.stem for p in (out / "images" / s).iterdir()) for s in ("train", "val")}

    a, b = split(tmp_path / "a", seed=0), split(tmp_path / "b", seed=0)
    assert a == b
    assert len(a["val"]) == 1 and len(a["train"]) == 3  # round(4 * 0.2) = 1
    assert sorted(a["train"] + a["val"]) == sorted(KITTI_SIZES)
    seeds = [tuple(split(tmp_path / f"s{s}", seed=s)["val"]) for s in range(6)]
    assert len(set(seeds)) > 1  # the seed changes the split
    half = split(tmp_path / "half", val_fraction=0.5)
    assert len(half["val"]) == 2 and len(half["train"]) == 2
    # re-running into a directory it wrote replaces the dataset (no stale files of the old split)
    again = split(tmp_path / "a", seed=3)
    assert again == split(tmp_path / "s3", seed=3)
    assert sum(1 for _ in (tmp_path / "a" / "labels").rglob("*.txt")) == 4


def test_kitti_split_file(kitti_root, tmp_path):
    out = tmp_path / "out"
    convert_kitti(kitti_root, out, split_file=kitti_root / "val_split.txt")  # "000001" and "000003.png"
    assert sorted(p.stem for p in (out / "images" / "val").iterdir()) == ["000001", "000003"]
    assert sorted(p.stem for p in (out / "images" / "train").iterdir()) == ["000000", "000002"]
    # val.txt written by the converter is itself a valid split file
    out2 = tmp_path / "out2"
    convert_kitti(kitti_root, out2, split_file=out / "val.txt")
    assert (out2 / "val.txt").read_text() == (out / "val.txt").read_text()


def test_kitti_class_map_override(kitti_root, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "out"
    cmap = {"car": "vehicle", "VAN": "vehicle", "Truck": "vehicle", "Pedestrian": "person", "Person_sitting": "person"}
    data_yaml = convert_kitti(kitti_root, out, class_map=cmap, split_file=kitti_root / "val_split.txt")
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "vehicle", 1: "person"}
    W, H = 1242, 375
    _assert_lines(
        out / "labels" / "train" / "000002.txt",
        [
            (0, (0 + 402.31) / 2 / W, (192.37 + 375) / 2 / H, (402.31 - 0) / W, (375 - 192.37) / H),
            (0, (1100.25 + 1242) / 2 / W, (150.08 + 300.44) / 2 / H, (1242 - 1100.25) / W, (300.44 - 150.08) / H),
            (1, (645.30 + 680.45) / 2 / W, (170.12 + 230.78) / 2 / H, (680.45 - 645.30) / W, (230.78 - 170.12) / H),
        ],
    )
    W, H = 1224, 370
    _assert_lines(
        out / "labels" / "val" / "000001.txt",
        [
            (0, (599.41 + 629.75) / 2 / W, (156.40 + 189.25) / 2 / H, (629.75 - 599.41) / W, (189.25 - 156.40) / H),
            (0, (387.63 + 423.81) / 2 / W, (181.54 + 203.12) / 2 / H, (423.81 - 387.63) / W, (203.12 - 181.54) / H),
        ],
    )
    stats = json.loads((out / "kitti_conversion.json").read_text())
    assert stats["dropped_classes"] == {"Cyclist": 1, "DontCare": 6, "Misc": 1, "Tram": 1}
    assert check_det_dataset(str(data_yaml))["nc"] == 2

    # a list keeps those raw types, named in lower case, in that order
    data_yaml = convert_kitti(kitti_root, tmp_path / "list", class_map=["Cyclist", "Car"])
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "cyclist", 1: "car"}


def test_kitti_flat_layout_copy_and_cli(kitti_root, tmp_path, capsys):
    flat = tmp_path / "flat"
    shutil.copytree(kitti_root / "training", flat)  # image_2/ and label_2/ directly under the root
    out = tmp_path / "out"
    assert kitti_main([str(flat), str(out), "--copy", "--seed", "1", "--class-map", "Car,Van=car"]) == 0
    assert Path(capsys.readouterr().out.strip()) == out / "data.yaml"
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "car"}
    imgs = list((out / "images").rglob("*.png"))
    assert len(imgs) == 4 and not any(p.is_symlink() for p in imgs)
    assert kitti_main([str(tmp_path / "nowhere"), str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_kitti_bad_input(kitti_root, tmp_path):
    with pytest.raises(LDACError, match="does not exist"):
        convert_kitti(tmp_path / "missing", tmp_path / "o")
    empty = tmp_path / "empty"
    (empty / "training" / "label_2").mkdir(parents=True)
    (empty / "training" / "image_2").mkdir(parents=True)
    with pytest.raises(LDACError, match="no label files"):
        convert_kitti(empty, tmp_path / "o")
    with pytest.raises(LDACError, match="no label_2"):
        convert_kitti(tmp_path, tmp_path / "o")
    with pytest.raises(LDACError, match="val_fraction"):
        convert_kitti(kitti_root, tmp_path / "o", val_fraction=1.0)
    with pytest.raises(LDACError, match="keeps no class"):
        convert_kitti(kitti_root, tmp_path / "o", class_map={"Car": None})
    bad_split = tmp_path / "split.txt"
    bad_split.write_text("999999\n")
    with pytest.raises(LDACError, match="no KITTI label file"):
        convert_kitti(kitti_root, tmp_path / "o", split_file=bad_split)
    with pytest.raises(LDACError, match="not found"):
        convert_kitti(kitti_root, tmp_path / "o", split_file=tmp_path / "nope.txt")
    (kitti_root / "training" / "image_2" / "000002.png").unlink()
    with pytest.raises(LDACError, match="have no image"):
        convert_kitti(kitti_root, tmp_path / "o")
    _draw(kitti_root / "training" / "image_2" / "000002.png", 1242, 375, 0)
    (kitti_root / "training" / "label_2" / "000003.txt").write_text("Car 0.00 0 1.0 1 2 3\n")
    with pytest.raises(LDACError, match=r"000003.txt:1: expected 15 fields"):
        convert_kitti(kitti_root, tmp_path / "o")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.yaml").write_text("names: {0: a}\n")
    with pytest.raises(LDACError, match="not written by convert_kitti"):
        convert_kitti(kitti_root, foreign)
    assert not (tmp_path / "o").exists()  # nothing written for bad input


# ---------------------------------------------------------------- COCO


def test_coco_exact_lines(coco_root, tmp_path):
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "out"
    data_yaml = convert_coco(coco_root / "annotations", coco_root / "images", out)
    assert data_yaml == out / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text())
    # categories sorted by id: 3 car, 7 dog, 12 bicycle -> classes 0, 1, 2
    assert data["names"] == {0: "car", 1: "dog", 2: "bicycle"}
    assert data["train"] == "images/train" and data["val"] == "images/val"

    W, H = 640, 426  # image 139: bicycle and car kept, the iscrowd car skipped
    _assert_lines(
        out / "labels" / "train" / "000000000139.txt",
        [
            (2, (236.98 + 24.7 / 2) / W, (142.51 + 69.5 / 2) / H, 24.7 / W, 69.5 / H),
            (0, (7.03 + 149.32 / 2) / W, (167.76 + 94.87 / 2) / H, 149.32 / W, 94.87 / H),
        ],
    )
    W, H = 586, 640
    _assert_lines(
        out / "labels" / "train" / "000000000285.txt",
        [(1, (12.49 + 572.48 / 2) / W, (22.85 + 591.97 / 2) / H, 572.48 / W, 591.97 / H)],
    )
    W, H = 640, 483  # image 632: the zero-height box skipped
    _assert_lines(
        out / "labels" / "val" / "000000000632.txt",
        [(1, (320.0 + 100.0 / 2) / W, (100.5 + 199.75 / 2) / H, 100.0 / W, 199.75 / H)],
    )
    assert not (out / "labels" / "val" / "000000000724.txt").exists()  # no annotation: background image
    for split, files in COCO_SIZES.items():
        assert sorted(p.name for p in (out / "images" / split).iterdir()) == sorted(files)
    assert not any(p.name.startswith(".coco-convert") for p in out.iterdir())

    data = check_det_dataset(str(data_yaml))
    assert data["nc"] == 3 and data["names"] == {0: "car", 1: "dog", 2: "bicycle"}
    assert _dataset_boxes(data, "train") == 3 and _dataset_boxes(data, "val") == 1

    # re-running into the same directory replaces it (Ultralytics alone would write to out-2)
    assert convert_coco(coco_root / "annotations", coco_root / "images", out, copy=True) == data_yaml
    assert not (tmp_path / "out-2").exists()
    assert not any(p.is_symlink() for p in (out / "images").rglob("*.jpg"))


def test_coco_single_json_flat_images(coco_root, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(coco_root / "images" / "val", flat)  # images_dir/<file_name>
    out = tmp_path / "out"
    data_yaml = convert_coco(coco_root / "annotations" / "instances_val.json", flat, out)
    data = yaml.safe_load(data_yaml.read_text())
    assert data["train"] == data["val"] == "images/val"
    assert len(_read(out / "labels" / "val" / "000000000632.txt")) == 1


def test_coco_real_coco_ids_use_91_to_80_table(coco_root, tmp_path):
    """A json with COCO's own 80 category ids goes through Ultralytics' 91 -> 80 table."""
    from ultralytics.data.converter import coco80_to_coco91_class
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import ROOT

    coco_names = yaml.safe_load((Path(ROOT) / "cfg/datasets/coco.yaml").read_text())["names"]
    ids = coco80_to_coco91_class()
    d = json.loads((coco_root / "annotations" / "instances_val.json").read_text())
    d["categories"] = [{"supercategory": "x", "id": i, "name": coco_names[k]} for k, i in enumerate(ids)][::-1]
    d["annotations"] = [
        {"segmentation": [], "area": 1.0, "iscrowd": 0, "image_id": 632, "bbox": [10, 20, 30, 40], "category_id": 90,
         "id": 1},  # toothbrush
        {"segmentation": [], "area": 1.0, "iscrowd": 0, "image_id": 632, "bbox": [0, 0, 64, 48], "category_id": 13,
         "id": 2},  # stop sign: COCO id 13, class 11
    ]
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "instances_val2017.json").write_text(json.dumps(d))
    out = tmp_path / "out"
    data_yaml = convert_coco(ann, coco_root / "images" / "val", out)
    assert json.loads((out / "coco_conversion.json").read_text())["cls91to80"] is True
    assert yaml.safe_load(data_yaml.read_text())["names"] == coco_names
    W, H = 640, 483
    _assert_lines(
        out / "labels" / "val2017" / "000000000632.txt",
        [(79, 25 / W, 40 / H, 30 / W, 40 / H), (11, 32 / W, 24 / H, 64 / W, 48 / H)],
    )
    assert check_det_dataset(str(data_yaml))["nc"] == 80


def test_coco_bad_input(coco_root, tmp_path):
    images = coco_root / "images"
    with pytest.raises(LDACError, match="do not exist"):
        convert_coco(tmp_path / "missing", images, tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LDACError, match="no .json files"):
        convert_coco(empty, images, tmp_path / "o")
    with pytest.raises(LDACError, match="images directory"):
        convert_coco(coco_root / "annotations", tmp_path / "noimages", tmp_path / "o")
    with pytest.raises(LDACError, match="cls91to80=True"):
        convert_coco(coco_root / "annotations", images, tmp_path / "o", cls91to80=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(LDACError, match="not a COCO instances json"):
        convert_coco(bad, images, tmp_path / "o")
    d = json.loads((coco_root / "annotations" / "instances_val.json").read_text())
    d["annotations"][0]["category_id"] = 99
    bad.write_text(json.dumps(d))
    with pytest.raises(LDACError, match=r"category ids \[99\]"):
        convert_coco(bad, images, tmp_path / "o")
    (images / "val" / "000000000724.jpg").unlink()
    with pytest.raises(LDACError, match="missing"):
        convert_coco(coco_root / "annotations", images, tmp_path / "o")
    assert not (tmp_path / "o").exists()
