"""Bad input: every user mistake raises LDACError from the API and, through the CLI, exits 2 with exactly one line
on stderr, before any run directory with results is written. Also: run directories increment instead of being
overwritten, and the input model file is never modified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (at collection: its log handler binds sys.stdout at import, which must
#                    not be a capsys/capfd stream that a test closes)
import torch

from yolo_ldac import YOLOLDAC
from yolo_ldac.cli import main
from yolo_ldac.errors import LDACError

FAST = dict(imgsz=64, batch=8, plots=False)
FAST_ARGS = ["imgsz=64", "batch=8", "plots=False"]


def assert_no_results(project: Path) -> None:
    if project.exists():
        left = [p for p in project.rglob("*") if p.name in {"report.json", "best.pt"}]
        assert not left, f"results written despite the error: {left}"


def assert_cli_rejects(argv: list[str], project: Path, capfd, match: str) -> str:
    """Run the CLI in-process: exit status 2, one line ``yolo-ldac: error: ...`` on stderr (fd 2), no results."""
    import re

    capfd.readouterr()
    rc = main([*argv, f"project={project}", "name=bad"])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("yolo-ldac: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert_no_results(project)
    return lines[0]


def assert_api_rejects(call, project: Path, match: str) -> LDACError:
    with pytest.raises(LDACError, match=match) as info:
        call()
    assert_no_results(project)
    return info.value


@pytest.fixture(scope="module")
def cls_checkpoint(tmp_path_factory) -> Path:
    """An Ultralytics classification checkpoint (not a detector)."""
    from ultralytics.nn.tasks import ClassificationModel

    path = tmp_path_factory.mktemp("cls") / "cls.pt"
    torch.save({"model": ClassificationModel("yolov8n-cls.yaml", nc=2, verbose=False)}, path)
    return path


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> dict[str, Path]:
    """Dataset yamls that are unusable: empty file, image folders empty, image folders missing."""
    root = tmp_path_factory.mktemp("bad-data")
    (root / "empty.yaml").write_text("")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "noimages.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    (root / "nofolders.yaml").write_text(f"path: {root}\ntrain: absent/train\nval: absent/val\nnames:\n  0: a\n")
    return {"empty": root / "empty.yaml", "noimages": root / "noimages.yaml", "nofolders": root / "nofolders.yaml",
            "nofile": root / "does-not-exist.yaml"}


# --------------------------------------------------------------------------------------------------- the model
def test_missing_model_file(shapes_data, tmp_path, capfd):
    missing = tmp_path / "nope" / "model.pt"
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC(str(missing)).prune(data=str(shapes_data), project=str(project), **FAST),
                       project, "not found")
    assert_cli_rejects(["prune", f"model={missing}", f"data={shapes_data}", *FAST_ARGS], project, capfd, "not found")
    assert not missing.exists()


def test_classification_model_is_rejected(cls_checkpoint, shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    before = cls_checkpoint.read_bytes()
    assert_api_rejects(lambda: YOLOLDAC(str(cls_checkpoint)).compress(data=str(shapes_data), project=str(project)),
                       project, "not an object detector")
    assert_cli_rejects(["compress", f"model={cls_checkpoint}", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                       "not an object detector")
    assert cls_checkpoint.read_bytes() == before


def test_segmentation_model_is_rejected(shared_weights, shapes_data, tmp_path, capfd):
    seg = shared_weights("yolo11n-seg-coco.pt")
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC(str(seg)), project, "Segment")
    assert_cli_rejects(["prune", f"model={seg}", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                       "not an object detector")


# ---------------------------------------------------------------------------------------------------- the data
@pytest.mark.parametrize("case, match", [("nofile", "not found"), ("empty", "not a usable dataset"),
                                         ("noimages", "holds no images"), ("nofolders", "not found|no images")])
def test_bad_data_yaml(case, match, bad_data, tmp_path, capfd):
    data = bad_data[case]
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").compress(data=str(data), ratio=0.3, project=str(project),
                                                                 **FAST), project, match)
    assert_cli_rejects(["compress", "model=yolov8n.yaml", f"data={data}", "ratio=0.3", *FAST_ARGS], project, capfd,
                       match)


# -------------------------------------------------------------------------------------------------- the values
@pytest.mark.parametrize("ratio", [0, 0.96, -1])
def test_ratio_out_of_range(ratio, shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").compress(data=str(shapes_data), ratio=ratio,
                                                                 project=str(project), **FAST), project, r"ratio")
    assert_cli_rejects(["compress", "model=yolov8n.yaml", f"data={shapes_data}", f"ratio={ratio}", *FAST_ARGS],
                       project, capfd, r"ratio must be in \(0, 0\.95\]")


def test_unreachable_ratio_with_floor(shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), ratio=0.9, floor=0.5,
                                                              project=str(project), **FAST), project, "unreachable")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratio=0.9", "floor=0.5", *FAST_ARGS],
                       project, capfd, "unreachable")
    assert not (project / "bad").exists()  # the run directory is created only once the inputs are valid


def test_unknown_method_suggests(shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), method="tayler",
                                                              project=str(project), **FAST), project,
                       "unknown method 'tayler'; did you mean 'taylor'")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "method=tayler", *FAST_ARGS], project,
                       capfd, "did you mean 'taylor'")


def test_unknown_short_method_lists_available(shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), method="l3", project=str(project),
                                                              **FAST), project, r"unknown method 'l3'.*l1.*l2")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "method=l3", *FAST_ARGS], project,
                       capfd, r"unknown method 'l3'.*available")


def test_unknown_short_method_did_you_mean(tmp_path):
    with pytest.raises(LDACError) as info:
        YOLOLDAC("yolov8n.yaml").prune(method="l3", project=str(tmp_path), **FAST)
    assert "did you mean" in str(info.value), str(info.value)


def test_unknown_key(shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), ratoi=0.3, project=str(project),
                                                              **FAST),
                       project, "unknown key 'ratoi'; did you mean 'ratio'")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratoi=0.3", *FAST_ARGS], project, capfd,
                       "unknown key 'ratoi'; did you mean 'ratio'")


# ------------------------------------------------------------------------------------ output dirs and the input
def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(shapes_data, tmp_path_factory):
    """(kwargs, result) of a cheap prune into <project>/x."""
    project = tmp_path_factory.mktemp("incr") / "runs"
    kw = dict(data=str(shapes_data), ratio=0.2, method="l1", rounds=1, val_steps=False, project=str(project),
              name="x", **FAST)
    return kw, YOLOLDAC("yolov8n.yaml").prune(**kw)


def test_existing_run_dir_increments_and_input_untouched(first_run):
    kw, first = first_run
    assert first.run_dir == (Path(kw["project"]) / "x").resolve()
    first_files = snapshot(first.run_dir)
    assert "weights/best.pt" in first_files and "report.json" in first_files

    # second run with the same project/name, whose input is the first run's best.pt
    second = YOLOLDAC(str(first.best)).prune(**kw)
    assert second.run_dir != first.run_dir
    assert second.run_dir.parent == first.run_dir.parent
    assert second.run_dir.name.startswith("x") and second.run_dir.name.endswith("2"), second.run_dir
    assert (second.run_dir / "report.json").is_file() and second.best.is_file()
    assert snapshot(first.run_dir) == first_files  # input model and first run untouched


def test_exist_ok_never_overwrites_the_input_model(first_run, tmp_path):
    import shutil

    kw, first = first_run
    project = tmp_path / "runs"
    src = project / "x" / "weights" / "best.pt"
    src.parent.mkdir(parents=True)
    shutil.copy2(first.best, src)
    before = (src.stat().st_mtime_ns, src.read_bytes())
    try:
        YOLOLDAC(str(src)).prune(**{**kw, "project": str(project), "exist_ok": True})
    except LDACError:
        pass  # refusing is fine too
    assert (src.stat().st_mtime_ns, src.read_bytes()) == before
