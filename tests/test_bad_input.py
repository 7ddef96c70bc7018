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
    """Nothing under ``project``: no results and no run directory (not even an empty one or its weights folder)."""
    if project.exists():
        left = [p for p in project.rglob("*") if p.name in {"report.json", "best.pt"}]
        assert not left, f"results written despite the error: {left}"
        runs = [p for p in project.rglob("*") if p.is_dir()]
        assert not runs, f"a run directory was left despite the error: {runs}"


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
                       project, "is not a model yolo-ldac prunes.*Classify")
    assert_cli_rejects(["compress", f"model={cls_checkpoint}", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                       "is not a model yolo-ldac prunes.*Classify")
    assert cls_checkpoint.read_bytes() == before


def test_segmentation_model_on_box_labels_is_refused(shared_weights, shapes_data, tmp_path, capfd):
    """A segment model is accepted (issue 24), but not on data with no polygon to learn its masks from."""
    seg = shared_weights("yolo11n-seg-coco.pt")
    project = tmp_path / "runs"
    assert_api_rejects(lambda: YOLOLDAC(str(seg)).compress(data=str(shapes_data), project=str(project), **FAST),
                       project, "has boxes but no polygon labels")
    assert_cli_rejects(["prune", f"model={seg}", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                       "has boxes but no polygon labels")


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


# ------------------------------------------------------------------------- values Ultralytics would choke on
@pytest.mark.parametrize("arg, match", [
    ("imgsz=0", r"imgsz must be a positive integer .*got 0$"),
    ("imgsz=-32", r"imgsz must be a positive integer .*got -32$"),
    ("imgsz=64.5", r"imgsz must be a positive integer .*got 64\.5$"),
    ("imgsz=[64,96]", r"imgsz must be a positive integer .*got \[64, 96\]$"),
    ("batch=0", r"batch must be an integer >= 1, got 0$"),
    ("batch=-1", r"batch must be an integer >= 1, got -1 \(Ultralytics' automatic batch size is not supported"),
    ("batch=0.5", r"batch must be an integer >= 1, got 0\.5"),
    ("workers=-1", r"workers must be an integer >= 0, got -1"),
    ("seed=-3", r"seed must be an integer >= 0, got -3"),
    ("device=gpu", r"device must be cpu, mps, a CUDA index .*got 'gpu'"),
    ("lr0=abc", r"'lr0=abc' is of invalid type str"),
    ("mosaic=1.5", r"'mosaic=1\.5' is an invalid value"),
])
def test_bad_shared_value(arg, match, shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", arg, "plots=False"], project, capfd,
                       match)
    assert not project.exists()
    key, _, value = arg.partition("=")
    from yolo_ldac.cfg import parse_value

    assert_api_rejects(lambda: YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), project=str(project),
                                                              **{key: parse_value(value)}), project, key)


def test_export_takes_an_imgsz_pair():
    from yolo_ldac.cfg import get_cfg

    assert get_cfg({"imgsz": [64, 96]}, mode="export")["imgsz"] == [64, 96]
    with pytest.raises(LDACError, match="imgsz"):
        get_cfg({"imgsz": [64, 0]}, mode="export")


@pytest.mark.parametrize("device,indices", [("cuda:0", [0]), ("0", [0]), ("0,1", [0, 1])])
def test_unavailable_gpu(device, indices, shapes_data, tmp_path, capfd):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if max(indices) < count:
        pytest.skip(f"this machine has the GPUs asked for ({count})")
    project = tmp_path / "runs"
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", f"device={device}", *FAST_ARGS],
                       project, capfd, r"device=.* is not available: this machine has")
    assert not project.exists()


ROUNDED = "imgsz=33 is not a multiple of the model's max stride 32: using imgsz=64"


@pytest.fixture
def ultralytics_log():
    """What Ultralytics' LOGGER writes during the test, read from a handler on that logger itself: it does not
    propagate to the root logger (so not to caplog), and its stream handler is bound to the stdout of import time
    (not the test's capfd)."""
    import io
    import logging

    from ultralytics.utils import LOGGER

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    LOGGER.addHandler(handler)
    try:
        yield stream
    finally:
        LOGGER.removeHandler(handler)


@pytest.mark.slow
def test_imgsz_rounded_up_to_the_stride(shapes_data, tmp_path, ultralytics_log):
    """imgsz=33 used to end in a shape mismatch inside the LDAC trace: it is rounded up to 64, with a notice."""
    res = YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), ratio=0.2, method="l1", rounds=1, val_steps=False,
                                         project=str(tmp_path / "runs"), imgsz=33, batch=8, plots=False)
    assert res.report["settings"]["imgsz"] == 64
    assert ROUNDED in ultralytics_log.getvalue()


def _run_cli(argv: list[str], capfd, log) -> tuple[int, str]:
    """Exit status and everything printed (streams and Ultralytics' log) by the CLI run in-process."""
    capfd.readouterr()
    rc = main(argv)
    out = capfd.readouterr()
    return rc, out.out + out.err + log.getvalue()


def test_info_rounds_imgsz_up_to_the_stride(capfd, ultralytics_log):
    rc, text = _run_cli(["info", "model=yolov8n.yaml", "imgsz=33"], capfd, ultralytics_log)
    assert rc == 0, text
    assert ROUNDED in text and "Traceback" not in text
    assert "GFLOPs at 64 px" in text


@pytest.mark.parametrize("imgsz", [0, -32, 64.5])
def test_info_from_python_checks_imgsz(imgsz):
    """``YOLOLDAC.info(imgsz=...)`` is checked as the CLI's imgsz= is: 0 is refused, not silently 640."""
    with pytest.raises(LDACError, match="imgsz must be a positive integer"):
        YOLOLDAC("yolov8n.yaml").info(imgsz=imgsz)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A yolov8n (random weights) saved as an Ultralytics checkpoint: something to export."""
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint
    from yolo_ldac.nn.adapter import load_detection_model

    return save_ultralytics_checkpoint(load_detection_model("yolov8n.yaml"),
                                       tmp_path_factory.mktemp("small") / "small.pt", {})


def test_export_rounds_imgsz_up_to_the_stride(small_checkpoint, capfd, ultralytics_log):
    """Ultralytics' exporter rounds 33 to 64 itself; the parity check must then use 64 too, not 33."""
    rc, text = _run_cli(["export", f"model={small_checkpoint}", "format=onnx", "imgsz=33"], capfd,
                        ultralytics_log)
    assert rc == 0, text
    assert ROUNDED in text and "Traceback" not in text
    import onnx

    model = onnx.load(str(small_checkpoint.with_suffix(".onnx")))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == [64, 64]


def test_benchmark_rounds_imgsz_up_to_the_stride(small_checkpoint, tmp_path, capfd, ultralytics_log):
    rc, text = _run_cli(["benchmark", f"model={small_checkpoint}", "formats=onnx", "precisions=fp32", "imgsz=33",
                         "runs=1", "warmup=0", "threads=1", f"project={tmp_path}", "plots=False"], capfd, ultralytics_log)
    assert rc == 0, text
    assert ROUNDED in text and "Traceback" not in text


def test_data_yaml_without_names(shapes_data, tmp_path, capfd):
    root = shapes_data.parent
    data = tmp_path / "nonames.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n")
    project = tmp_path / "runs"
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={data}", *FAST_ARGS], project, capfd,
                       r"has no 'names' key")
    data.write_text(f"path: {root}\ntrain: images/train\nnames: [a]\n")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={data}", *FAST_ARGS], project, capfd,
                       r"has no 'val' key")


# ------------------------------------------------------------------------------------ the output folder, the disk
def test_project_under_a_regular_file(shapes_data, tmp_path, capfd):
    """project= below a file: mkdir fails for root too."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    project = blocker / "runs"
    line = assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                              r"project=.*file/runs: cannot (create|write) the run directory")
    assert "Traceback" not in line


def test_read_only_project(shapes_data, tmp_path, capfd):
    import os

    project = tmp_path / "ro"
    project.mkdir()
    project.chmod(0o555)
    try:
        if os.access(project, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing: see test_project_under_a_regular_file")
        assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                           r"project=.*: cannot (create|write) the run directory .*(Permission denied|Read-only)")
        assert list(project.iterdir()) == []
    finally:
        project.chmod(0o755)


def test_run_directory_write_probe_refused(shapes_data, tmp_path, capfd, monkeypatch):
    """The run directory's write probe failing with EACCES (what a read-only project gives a non-root user; chmod
    cannot make one for root): one line, exit 2, and the directory just made is removed again."""
    real_write = Path.write_bytes

    def refuse_probe(self, data):
        if self.name.startswith(".write-test-"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse_probe)
    project = tmp_path / "runs"
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", *FAST_ARGS], project, capfd,
                       r"project=.*: cannot write the run directory .*\(Permission denied\)")


def test_torch_save_runtime_error_on_a_full_folder_is_enospc(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError: atomic_save turns it into OSError(ENOSPC) when the folder's
    file system is (here: reported) full, leaves no temporary file, and keeps other RuntimeErrors as they are."""
    import errno
    import os
    from types import SimpleNamespace

    from yolo_ldac.utils import io

    def fail(p: Path) -> None:
        p.write_bytes(b"\0" * 16)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    with pytest.raises(RuntimeError, match="unexpected pos"):  # space left: not called a full disk
        io.atomic_save(tmp_path / "a.pt", fail)
    monkeypatch.setattr(os, "statvfs", lambda _: SimpleNamespace(f_bavail=3, f_frsize=4096))
    with pytest.raises(OSError) as info:
        io.atomic_save(tmp_path / "a.pt", fail)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def _check_failed_run(run_dir: Path, phase: str | None) -> None:
    """state.json names the phase the run stopped in (``phase``; None: any) and nothing looks finished. A disk
    with no byte left may keep the state saved at that phase's start (status running): it still says where."""
    import json

    assert run_dir.is_dir()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["current"] and state["current"] == (phase or state["current"]), state
    if phase is not None:
        assert state["status"] == "failed" and "No space left on device" in state["record"]["error"], state
    else:
        assert state["status"] in ("failed", "running"), state
    left = [p.relative_to(run_dir) for p in run_dir.rglob("*")
            if p.name.endswith(".tmp") or p.name.startswith(("best.", "report."))]
    assert not left, f"a failed run left {left}"


def _prune_failing_at_best_save(shapes_data, project: Path, name: str, capfd, monkeypatch, code: int, text: str,
                                partial: bool = False) -> tuple[int, list[str]]:
    """A tiny prune run whose write of best.pt fails with OSError(``code``) (after ``partial`` writes half a file, as
    a full disk does); returns the CLI's exit status and its non-empty stderr lines."""
    real_save = torch.save

    def failing(obj, f, *a, **k):
        if ".best.pt." in str(f):  # the atomic write's temporary file of best.pt
            if partial:
                Path(f).write_bytes(b"\0" * 1024)
            raise OSError(code, text, str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing)
    capfd.readouterr()
    rc = main(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratio=0.2", "method=l1", "rounds=1",
               "val_steps=False", *FAST_ARGS, f"project={project}", f"name={name}"])
    return rc, [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]


@pytest.mark.slow
def test_full_disk_while_saving(shapes_data, tmp_path, capfd, monkeypatch):
    """A full disk (ENOSPC) while best.pt is written: one line, exit 2, no best.pt / best.tmp / report left, and
    state.json says the run stopped in phase save."""
    import errno

    project = tmp_path / "runs"
    rc, lines = _prune_failing_at_best_save(shapes_data, project, "full", capfd, monkeypatch, errno.ENOSPC,
                                            "No space left on device", partial=True)
    assert rc == 2, lines
    assert len(lines) == 1 and lines[0].startswith("yolo-ldac: error: "), lines
    assert "No space left on device" in lines[0] and "phase save" in lines[0] and "resume=" in lines[0], lines[0]
    _check_failed_run(project / "full", "save")


@pytest.mark.slow
def test_read_only_file_system_while_saving(shapes_data, tmp_path, capfd, monkeypatch):
    """EROFS while best.pt is written: the line says the file system is read-only, not "free space", and how to
    continue."""
    import errno

    rc, lines = _prune_failing_at_best_save(shapes_data, tmp_path / "runs", "ro", capfd, monkeypatch, errno.EROFS,
                                            "Read-only file system")
    assert rc == 2 and len(lines) == 1, lines
    assert "Read-only file system" in lines[0] and "read-only" in lines[0].split("records where;")[1], lines[0]
    assert "free space" not in lines[0] and "resume=" in lines[0], lines[0]


@pytest.mark.parametrize("code,words", [("ENOSPC", "free space"), ("EACCES", "writable"), ("EROFS", "read-only"),
                                        ("EIO", "fix that")])
def test_os_error_remedy_by_errno(code, words):
    import errno

    from yolo_ldac.schedule.compressor import _os_remedy

    remedy = _os_remedy(OSError(getattr(errno, code), "x"))
    assert words in remedy and (code == "ENOSPC") == ("free space" in remedy)


def test_full_disk_on_a_real_tmpfs(shapes_data, tmp_path, capfd):
    """A real small tmpfs as project=, where this runner may mount one."""
    import shutil
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); see test_full_disk_while_saving")
    try:
        project = mnt / "runs"
        capfd.readouterr()
        rc = main(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratio=0.2", "method=l1", "rounds=1",
                   "val_steps=False", *FAST_ARGS, f"project={project}", "name=full"])
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
        if (project / "full" / "state.json").is_file():
            _check_failed_run(project / "full", None)
        assert not list(project.rglob("best.pt")) and not list(project.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_traceback_only_with_explicit_verbose(tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capfd.readouterr()
    assert main(["info", "model=absent.pt", "verbose=True"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("yolo-ldac: error: "), err
    assert main(["info", "model=absent.pt"]) == 2
    assert len(capfd.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------- issue 25: one clear line for each of these
# (the run-folder cases: name=, the lock, exist_ok over a finished run, permissions are in test_run_folders.py)
@pytest.mark.parametrize("content", ["hello world\n", "0.5\n", "[1, 2]\n", "model: yolo11n\n"])
def test_text_file_named_pt(content, tmp_path, capfd):
    """A text file named .pt: 'KeyError: 101' or 'IndexError: pop from empty list' before; now what it is."""
    path = tmp_path / "notes.pt"
    path.write_text(content)
    line = assert_cli_rejects(["info", f"model={path}"], tmp_path / "runs", capfd,
                              r"model file '.*notes\.pt' is not a loadable checkpoint: a text file, not a "
                              r"torch\.save\(\) archive")
    assert "Error:" not in line
    with pytest.raises(LDACError, match="a text file"):
        YOLOLDAC(str(path))


def _bad_yaml(tmp_path: Path, old: str, new: str) -> Path:
    from ultralytics.utils import ROOT

    text = (ROOT / "cfg" / "models" / "v8" / "yolov8.yaml").read_text()
    assert old in text
    path = tmp_path / "bad-yolov8n.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,match", [
    ("[-1, 1, Conv, [64, 3, 2]]", "[-1, 1, Conv, [sixty, 3, 2]]",
     r"layer 0 \(Conv\) has argument 1 = 'sixty', where Ultralytics expects a number"),
    ("[-1, 3, C2f, [128, True]]", "[-1, three, C2f, [128, True]]",
     r"layer 2 \(C2f\) has repeats = 'three', where Ultralytics expects an integer >= 1"),
])
def test_model_yaml_with_a_string_for_a_number(old, new, match, shapes_data, tmp_path, capfd):
    """Ultralytics' parser said "TypeError: '<' not supported between instances of 'int' and 'str'"."""
    path = _bad_yaml(tmp_path, old, new)
    line = assert_cli_rejects(["info", f"model={path}"], tmp_path / "runs", capfd, rf"model yaml '.*': {match}")
    assert line.count("yolo-ldac: error") == 1
    assert_cli_rejects(["prune", f"model={path}", f"data={shapes_data}", *FAST_ARGS], tmp_path / "runs", capfd, match)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov10n.yaml", "yolo12n.yaml",
                                  "yolov9t.yaml", "yolov5nu.yaml", "yolov3-tinyu.yaml", "yolov6n.yaml"])
def test_yaml_layer_check_passes_every_shipped_family(name):
    """No false alarm: every family's own yaml (string arguments such as 'nearest' and 'nc' included) is fine."""
    from ultralytics.nn.tasks import yaml_model_load

    from yolo_ldac.nn.adapter import yaml_layer_problem

    assert yaml_layer_problem(yaml_model_load(name)) is None


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_command(shapes_data, tmp_path, capfd, monkeypatch):
    """Ctrl-C during a run: exit 130 and one line with the command that continues it (as a full disk's line)."""
    from yolo_ldac.schedule.compressor import Compressor

    def interrupt(self, model, rnd):
        raise KeyboardInterrupt

    monkeypatch.setattr(Compressor, "_phase_validate_final", interrupt)
    project = tmp_path / "runs"
    capfd.readouterr()
    rc = main(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratio=0.2", "method=l1", "rounds=1",
               "val_steps=False", *FAST_ARGS, f"project={project}", "name=cc"])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("\r", "\x1b"))]
    errors = [ln for ln in lines if "yolo-ldac: error" in ln]
    assert rc == 130 and len(errors) == 1 and "Traceback" not in err, err
    run = (project / "cc").resolve()
    assert errors[0].endswith(f"interrupted in phase validate_final; {run / 'state.json'} records where; continue "
                              f"with `yolo-ldac prune resume={run}`"), errors[0]
    assert not (run / "weights" / "best.pt").exists() and not (run / ".yolo-ldac.lock").exists()
    monkeypatch.undo()
    command = errors[0].rsplit("`", 2)[1].split()[1:]  # the command it printed, as given
    assert main(command) == 0
    assert (run / "weights" / "best.pt").is_file()


def test_unknown_optimizer(shapes_data, tmp_path, capfd):
    """optimizer=Foo was Ultralytics' NotImplementedError, a traceback once the run trained."""
    assert_cli_rejects(["compress", "model=yolov8n.yaml", f"data={shapes_data}", "optimizer=Foo", *FAST_ARGS],
                       tmp_path / "runs", capfd,
                       r"optimizer='Foo' is not one of Ultralytics' optimizers \(Adam, .*SGD\)$")
    assert_cli_rejects(["finetune", "model=yolov8n.yaml", f"data={shapes_data}", "optimizer=SGDD", *FAST_ARGS],
                       tmp_path / "runs", capfd, r"did you mean 'SGD'")


def test_optimizer_list_is_ultralytics_own():
    """What check_optimizer accepts is what Ultralytics' build_optimizer builds (any case), and Foo it refuses."""
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    from yolo_ldac.cfg import check_optimizer, ultralytics_optimizers

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    trainer = SimpleNamespace(args=SimpleNamespace(lr0=0.01, warmup_bias_lr=0.1), data={"nc": 3})
    names = ultralytics_optimizers()
    assert {"SGD", "AdamW", "auto"} <= set(names)
    for name in names:
        BaseTrainer.build_optimizer(trainer, Tiny(), name=name.lower(), iterations=10)
        check_optimizer(name.upper())
    with pytest.raises(NotImplementedError):
        BaseTrainer.build_optimizer(trainer, Tiny(), name="Foo")
    with pytest.raises(LDACError):
        check_optimizer("Foo")


def test_train_split_without_label_files(shapes_data, tmp_path, capfd):
    """Ultralytics' "No labels found" ValueError, once training started; now before the run folder exists."""
    import shutil

    src = shapes_data.parent
    root = tmp_path / "nolabels"
    for split in ("train", "val"):
        shutil.copytree(src / "images" / split, root / "images" / split)
    shutil.copytree(src / "labels" / "val", root / "labels" / "val")  # only the val split has labels
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n  2: c\n")
    match = r"the train split has 16 images and no label file .*labels/train/.*\.txt.*training needs labels"
    assert_cli_rejects(["compress", "model=yolov8n.yaml", f"data={data}", "ratio=0.2", *FAST_ARGS],
                       tmp_path / "runs", capfd, match)
    assert_cli_rejects(["finetune", "model=yolov8n.yaml", f"data={data}", *FAST_ARGS], tmp_path / "runs", capfd,
                       match)


def _phase_checkpoint(folder: Path) -> Path:
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint
    from yolo_ldac.nn.adapter import load_detection_model

    return save_ultralytics_checkpoint(load_detection_model("yolov8n.yaml"), folder / "02-round1.step.pt", {},
                                       half=False, phase={"run": str(folder), "phase": "round1.step",
                                                          "finished": False})


def test_export_of_a_phase_checkpoint_says_it_is_not_finished(tmp_path, capfd, ultralytics_log):
    pt = _phase_checkpoint(tmp_path)
    rc, info_text = _run_cli(["info", f"model={pt}"], capfd, ultralytics_log)
    assert rc == 0
    notice = "02-round1.step.pt is not a finished model: the checkpoint of phase round1.step"
    assert notice in info_text
    rc, text = _run_cli(["export", f"model={pt}", "format=onnx", "imgsz=64"], capfd, ultralytics_log)
    assert rc == 0 and "Traceback" not in text, text
    assert text.count(notice) == 1, text
    assert (tmp_path / "02-round1.step.onnx").is_file()


def test_best_json_without_or_with_another_hash(tmp_path, capfd, ultralytics_log):
    import json as _json

    from yolo_ldac.checkpoint import save_portable
    from yolo_ldac.nn.adapter import load_detection_model

    st = save_portable(load_detection_model("yolov8n.yaml"), tmp_path / "best")
    js = st.with_suffix(".json")
    meta = _json.loads(js.read_text())
    meta.pop("safetensors_sha256")
    js.write_text(_json.dumps(meta))
    rc, text = _run_cli(["info", f"model={js}"], capfd, ultralytics_log)
    warnings = [ln for ln in text.splitlines() if "records no safetensors_sha256" in ln]
    assert rc == 0 and len(warnings) == 1 and "best.safetensors" in warnings[0], text
    other = tmp_path / "other.bin"
    other.write_bytes(b"another file")
    meta["safetensors_sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
    js.write_text(_json.dumps(meta))
    assert_cli_rejects(["info", f"model={js}"], tmp_path / "runs", capfd,
                       r"best\.safetensors' does not match '.*best\.json': the weights' hash differs")
    meta["safetensors_sha256"] = "abc"
    js.write_text(_json.dumps(meta))
    assert_cli_rejects(["info", f"model={js}"], tmp_path / "runs", capfd,
                       r"safetensors_sha256 must be the 64 hex digits of the weights' sha256, got 'abc'")


def test_key_given_twice(shapes_data, tmp_path, capfd):
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={shapes_data}", "ratio=0.3", "ratio=0.6"],
                       tmp_path / "runs", capfd, r"key 'ratio' is given twice \(ratio=0\.3 and ratio=0\.6\): give it once")
    assert_cli_rejects(["prune", "model=yolov8n.yaml", "lr0=0.1", "lr0=0.1"], tmp_path / "runs", capfd,
                       r"key 'lr0' is given twice")


def test_benchmark_int8_without_data(small_checkpoint, tmp_path, capfd):
    """It exited 0 having measured nothing (every int8 row skipped)."""
    project = tmp_path / "runs"
    assert_cli_rejects(["benchmark", f"model={small_checkpoint}", "precisions=int8", "formats=onnx"], project, capfd,
                       r"precisions=int8: int8 needs data=\.\.\. .*give data=, or leave int8 out")
    assert_cli_rejects(["benchmark", f"model={small_checkpoint}", "precisions=fp32,int8", "formats=onnx"], project,
                       capfd, r"int8 needs data=")
    assert_cli_rejects(["benchmark", f"model={small_checkpoint}", "formats=foo"], project, capfd,
                       r"benchmark formats are onnx")
    assert not project.exists()  # refused before the results folder (or project=) exists


def test_benchmark_threads_zero_says_what_it_used(small_checkpoint, tmp_path, capfd, ultralytics_log):
    import json as _json

    from yolo_ldac.utils.env import usable_cores

    rc, text = _run_cli(["benchmark", f"model={small_checkpoint}", "formats=onnx", "precisions=fp32", "imgsz=64",
                         "runs=1", "warmup=0", "threads=0", f"project={tmp_path}", "name=t0", "plots=False"], capfd,
                        ultralytics_log)
    n = usable_cores()
    assert rc == 0, text
    assert f"threads=0: timing with all {n} usable core" in text, text
    record = _json.loads((tmp_path / "t0" / "benchmark.json").read_text())
    assert record["settings"]["threads"] == [n]
