"""End-to-end tests of the command line: real runs through ``yolo_ldac.cli.main`` and the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (at collection: its log handler binds sys.stdout at import, which must
#                    not be a capsys/capfd stream that a test closes)

from yolo_ldac.cli import main

pytestmark = pytest.mark.slow


def prune_argv(data: Path, project: Path, name: str = "x") -> list[str]:
    return ["prune", "model=yolov8n.yaml", f"data={data}", "ratio=0.3", "rounds=2", "imgsz=64", "batch=8",
            f"project={project}", f"name={name}", "plots=False", "val_steps=False"]


def console_script() -> Path:
    """The installed ``yolo-ldac`` executable of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "yolo-ldac"
    if beside.is_file():
        return beside
    found = shutil.which("yolo-ldac")
    if not found:
        pytest.fail("the yolo-ldac console script is not installed (pip install -e .)")
    return Path(found)


def test_cli_prune_in_process(shapes_data, tmp_path):
    assert main(prune_argv(shapes_data, tmp_path)) == 0
    report_path = tmp_path / "x" / "report.json"
    assert report_path.is_file()
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["mode"] == "prune" and report["ratio"] == 0.3
    assert abs(report["removed"]["flops_pct"] - 30) <= 1, report["removed"]
    assert (tmp_path / "x" / "weights" / "best.pt").is_file()
    assert not list((tmp_path / "x").rglob("results.csv"))  # prune never trains


def test_cli_info_prints_table(capsys):
    assert main(["info", "model=yolov8n.yaml"]) == 0
    out = capsys.readouterr().out
    assert "out channels" in out and "model.0.conv" in out
    assert "GFLOPs" in out and "M params" in out


def test_console_script_prune(shapes_data, tmp_path):
    exe = console_script()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    env["YOLO_CONFIG_DIR"] = os.environ["YOLO_CONFIG_DIR"]
    proc = subprocess.run([str(exe), *prune_argv(shapes_data, tmp_path, name="sub")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "sub" / "report.json").is_file()
    assert "yolo-ldac: error" not in proc.stderr
