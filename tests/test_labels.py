"""The label audit (yolo_ldac.data.labels): the rules on single files in milliseconds, then through the CLI: a
broken file of each kind stops the run with one line naming it, before any run directory exists; with
strict_labels=False the run goes on and report.json counts the images left out per split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (see test_bad_input.py: bind its log handler before capfd)

from yolo_ldac.cli import main
from yolo_ldac.data.labels import audit_split, broken_labels_message, check_label_file, label_path

GOOD = "0 0.5 0.5 0.2 0.2\n"
POLYGON = "1 0.1 0.1 0.4 0.1 0.4 0.4\n"  # a triangle: cls + 3 points


def write(tmp_path: Path, text: str, name: str = "a.txt") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------- single files
@pytest.mark.parametrize("text", ["", "\n\n", GOOD, GOOD * 3, POLYGON, POLYGON + POLYGON, "2 1.0 0.0 1.0 0.0\n",
                                  "0 1.005 0.5 0.2 0.2\n",  # within Ultralytics' 1% tolerance
                                  "0 0.5 0.5 0.2 0.2   \n\n1 0.5 0.5 0.1 0.1\n", "\ufeff" + GOOD])
def test_good_files_have_no_problems(text, tmp_path):
    assert check_label_file(write(tmp_path, text), nc=3) == []


def test_missing_file_is_a_background_image(tmp_path):
    assert check_label_file(tmp_path / "none.txt", nc=3) == []


@pytest.mark.parametrize("text, line, reason", [
    (GOOD + "3 0.5 0.5 0.2 0.2\n", 2, r"class 3 is not an integer in 0\.\.2 \(names has 3\)"),
    ("-1 0.5 0.5 0.2 0.2\n", 1, "class -1"),
    ("0.5 0.5 0.5 0.2 0.2\n", 1, "class 0.5"),
    ("0 nan 0.5 0.2 0.2\n", 1, "non-finite coordinate"),
    ("0 0.5 inf 0.2 0.2\n", 1, "non-finite coordinate"),
    (GOOD + GOOD + "0 -0.5 0.5 0.2 0.2\n", 3, r"outside \[0, 1\]"),
    ("0 0.5 1.5 0.2 0.2\n", 1, r"outside \[0, 1\]"),
    ("0 0.5 0.5 -0.005 0.2\n", 1, "negative width"),
    ("0 0.5 0.5 0.2\n", 1, "4 columns"),
    (GOOD + "0 0.5 0.5 0.2 0.2 0.9\n", 2, "6 columns"),
    ("0 0.1 0.1 0.4 0.1 0.4 0.4 0.5\n", 1, "8 columns"),
    (GOOD + POLYGON, 2, "mixes box lines"),
    ("0 0.5 abc 0.2 0.2\n", 1, "not a number"),
    ("1 0.1 0.1 1.4 0.1 0.4 0.4\n", 1, r"outside \[0, 1\]"),
])
def test_broken_lines_are_named(text, line, reason, tmp_path):
    import re

    problems = check_label_file(write(tmp_path, text), nc=3)
    assert problems, text
    assert problems[0].line == line, problems
    assert re.search(reason, problems[0].reason), problems[0]


def test_single_cls_skips_the_class_range(tmp_path):
    p = write(tmp_path, "7 0.5 0.5 0.2 0.2\n")
    assert check_label_file(p, nc=1) and not check_label_file(p, nc=1, single_cls=True)


def test_label_path_follows_ultralytics():
    from ultralytics.data.utils import img2label_paths

    imgs = ["/d/images/train/a.jpg", "/d/images/x/images/val/b.c.png"]
    assert [str(label_path(i)) for i in imgs] == img2label_paths(imgs)


def test_audit_counts_and_message(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    imgs = []
    for i in range(6):
        img = tmp_path / "images" / f"im{i}.jpg"
        img.write_bytes(b"")
        imgs.append(img)
        if i < 5:  # im5 has no label file: a background image
            (tmp_path / "labels" / f"im{i}.txt").write_text(GOOD if i % 2 == 0 else "9 0.5 0.5 0.2 0.2\n")
    audit = audit_split("train", imgs, nc=3)
    assert (audit.images, audit.label_files, audit.dropped) == (6, 5, 2)
    assert audit.as_dict()["used"] == 4
    msg = broken_labels_message([audit], "d.yaml")
    assert "2 of 6 train" in msg and "im1.txt:1" in msg and "im3.txt:1" in msg and "\n" not in msg
    assert broken_labels_message([audit_split("val", imgs[:1], nc=3)], "d.yaml") is None


def test_audit_is_fast(tmp_path):
    """2,000 files of 20 boxes each: well under a second (vectorised per file, every file read once)."""
    import time

    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    text = GOOD * 20
    imgs = []
    for i in range(2000):
        (tmp_path / "labels" / f"{i}.txt").write_text(text)
        imgs.append(tmp_path / "images" / f"{i}.jpg")
    t = time.perf_counter()
    audit = audit_split("train", imgs, nc=3)
    assert audit.label_files == 2000 and audit.dropped == 0
    assert time.perf_counter() - t < 2.0


# ---------------------------------------------------------------------------------------------- through the CLI
BROKEN = {  # kind: (split, label text, what the error line must name)
    "class_out_of_range": ("train", "5 0.5 0.5 0.2 0.2\n", r"class 5 is not an integer in 0\.\.2"),
    "nan": ("val", "0 nan 0.5 0.2 0.2\n", "non-finite"),
    "negative": ("train", "0 0.5 -0.3 0.2 0.2\n", r"outside \[0, 1\]"),
    "columns": ("val", "0 0.5 0.5 0.2\n", "4 columns"),
    "not_a_number": ("train", "0 0.5 x 0.2 0.2\n", "not a number"),
}


def broken_copy(shapes_data: Path, root: Path, split: str, text: str, n: int = 2) -> tuple[Path, list[str]]:
    """A copy of the shapes dataset whose first ``n`` label files of ``split`` end with ``text``."""
    src = shapes_data.parent
    dst = root / "data"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.cache"))
    yaml_text = (dst / "data.yaml").read_text().replace(str(src), str(dst))
    (dst / "data.yaml").write_text(yaml_text)
    names = []
    for lf in sorted((dst / "labels" / split).glob("*.txt"))[:n]:
        lf.write_text(lf.read_text() + text)
        names.append(lf.name)
    return dst / "data.yaml", names


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_labels_stop_the_run(kind, shapes_data, tmp_path, capfd):
    from test_bad_input import FAST_ARGS, assert_cli_rejects

    split, text, match = BROKEN[kind]
    data, names = broken_copy(shapes_data, tmp_path, split, text)
    project = tmp_path / "runs"
    line = assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={data}", "method=l1", *FAST_ARGS], project,
                              capfd, match)
    assert names[0] in line and f"2 of {16 if split == 'train' else 8} {split}" in line, line
    assert "strict_labels=False" in line
    assert not project.exists()  # stopped before the run directory


def test_val_mode_audits_the_val_split(shapes_data, tmp_path, capfd):
    from test_bad_input import FAST_ARGS, assert_cli_rejects

    data, names = broken_copy(shapes_data, tmp_path, "val", "7 0.5 0.5 0.2 0.2\n", n=1)
    assert_cli_rejects(["val", "model=yolov8n.yaml", f"data={data}", *FAST_ARGS], tmp_path / "runs", capfd,
                       names[0])


@pytest.mark.slow
def test_lenient_labels_count_the_dropped_images(shapes_data, tmp_path, capfd, caplog):
    """strict_labels=False: Ultralytics trains without the broken images, and report.json says how many per split."""
    data, _ = broken_copy(shapes_data, tmp_path, "train", "9 0.5 0.5 0.2 0.2\n", n=3)
    val_label = sorted((data.parent / "labels" / "val").glob("*.txt"))[0]
    val_label.write_text(val_label.read_text() + "0 0.5 0.5 0.2\n")
    project = tmp_path / "runs"
    rc = main(["prune", "model=yolov8n.yaml", f"data={data}", "method=l1", "rounds=1", "strict_labels=False",
               "imgsz=64", "batch=8", "plots=False", f"project={project}", "name=lenient"])
    out = capfd.readouterr()
    assert rc == 0, out.err
    assert "strict_labels=False" in caplog.text + out.out + out.err  # the warning
    labels = json.loads((project / "lenient" / "report.json").read_text())["labels"]
    assert (labels["train"]["images"], labels["train"]["dropped"], labels["train"]["used"]) == (16, 3, 13)
    assert (labels["val"]["images"], labels["val"]["dropped"], labels["val"]["used"]) == (8, 1, 7)
