"""Tests of the compression report (json, markdown, chart, terminal table)."""

from __future__ import annotations

import json

import pytest

from yolo_ldac.report import format_markdown, format_summary, format_table, write_report


def _report():
    return {
        "model": "yolo11n.pt",
        "data": "coco8.yaml",
        "method": "ldac",
        "target": "flops",
        "ratio": 0.5,
        "before": {"map50_95": 0.4521, "map50": 0.6213, "flops_g": 6.543, "params_m": 2.582},
        "after": {"map50_95": 0.4398, "map50": None, "flops_g": 3.251, "params_m": 1.407},
        "removed": {"flops_pct": 50.31, "params_pct": 45.51},
        "layers": [
            {"name": "model.0.conv", "before": 16, "after": 8},
            {"name": "model.1.conv", "before": 32, "after": 24},
            {"name": "model.2.cv0.conv", "before": 16, "after": 16},
        ],
        "rounds": [
            {"round": 1, "ratio_reached": 0.25, "map50_95_before_step": 0.4521, "map50_95_after_step": 0.3012,
             "map50_95_after_train": 0.4456, "flops_g": 4.907, "params_m": 1.981},
            {"round": 2, "ratio_reached": 0.503, "map50_95_before_step": 0.4456, "map50_95_after_step": None,
             "map50_95_after_train": 0.4398, "flops_g": 3.251, "params_m": 1.407},
        ],
        "timings": {"prune": 12.5, "finetune": 3600.0, "val": 45.25},
        "paths": {"best": "runs/x/best.pt", "portable": "runs/x/best.safetensors", "run_dir": "runs/x"},
        "settings": {"epochs": 10, "round_to": 8, "imgsz": 640, "model": "other.pt"},
    }


def test_write_report_files_and_numbers(tmp_path):
    report = _report()
    paths = write_report(tmp_path / "run", report)
    assert set(paths) == {"json", "md", "png"}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert json.loads(paths["json"].read_text()) == report  # round-trips

    md = paths["md"].read_text()
    for text in ("0.4521", "0.6213", "0.4398", "6.543", "3.251", "2.582", "1.407",  # before/after values
                 "50.3% removed", "45.5% removed", "-1.23 pts",  # changes
                 "| `model.1.conv` | 32 | 24 | 75.0 |",  # channels table
                 "0.3012", "0.4456", "0.503",  # rounds
                 "| prune | 12.5 |", "1:00:00",  # timings
                 "`round_to`", "`ratio` | 0.5", "best.safetensors"):
        assert text in md, text
    # The before column is the model the user passed, and its name wins over a settings entry of the same key.
    assert "*before*: the input model `yolo11n.pt` as passed on `coco8.yaml`" in md
    assert "| `model` | yolo11n.pt |" in md and "| `model` | other.pt |" not in md
    # None renders as '-': after mAP50 (and so its change), and a missing round value.
    assert "| mAP50 | 0.6213 | - | - |" in md
    assert "| 2 | 0.503 | 0.4456 | - | 0.4398 |" in md


def test_none_values_and_minimal_report(tmp_path):
    report = {"model": "m.pt", "before": {"map50_95": None, "map50": None, "flops_g": 8.0, "params_m": 3.0},
              "after": {"map50_95": None, "map50": None, "flops_g": 4.0, "params_m": 2.0}}
    paths = write_report(tmp_path, report)
    md = paths["md"].read_text()
    assert "| mAP50-95 | - | - | - |" in md
    assert "50.0% removed" in md  # computed from before/after when 'removed' is absent
    assert "33.3% removed" in md
    assert "## Rounds" not in md and paths["png"].is_file()
    table = format_table(report)
    assert table.splitlines()[1].split() == ["mAP50-95", "-", "-", "-"]


def test_total_timing_is_not_a_phase(tmp_path):
    md = format_markdown({"timings": {"prune": 30.0, "train": 60.0, "total": 100.0}})
    assert "| prune | 30.0 | 0:00:30 | 30.0 |" in md
    assert "| **total** | 100.0 | 0:01:40 | 100.0 |" in md
    assert "| total |" not in md


def test_format_table_fixed_width():
    lines = format_table(_report()).splitlines()
    assert len(lines) == 5 and len({len(l) for l in lines}) == 1  # aligned columns
    assert lines[0].split() == ["metric", "before", "after", "change"]
    assert lines[1].split() == ["mAP50-95", "0.4521", "0.4398", "-1.23", "pts"]
    assert lines[3].split()[:3] == ["FLOPs", "(G)", "6.543"] and "50.3% removed" in lines[3]


def test_markdown_escapes_pipes():
    md = format_markdown({"model": "a|b", "settings": {"note": "x|y"}})
    assert "x\\|y" in md and "a\\|b" in md


def test_wall_time_phases_add_up_and_inside_time_is_apart():
    """Phases are disjoint (shares add to 100 %); what happens inside them (training, validation) is a second
    table, not more phases."""
    timings = {"prepare": 1.0, "validate_base": 2.0, "prune": 3.0, "train_between_steps": 10.0, "finetune": 20.0,
               "validate_final": 2.0, "train": 28.0, "validate": 5.0, "total": 40.0}
    md = format_markdown({"timings": timings, "timings_within": ["train", "validate"]})
    phases, inside = md.split("## Wall time")[1].split("Inside those phases")
    shares = [float(line.split("|")[4]) for line in phases.splitlines()
              if line.startswith("| ") and "share %" not in line and "**total**" not in line and "---" not in line]
    assert sum(shares) == pytest.approx(100.0, abs=0.2)
    assert "| other (between phases) | 2.0 |" in phases  # 40 s total, 38 s of phases
    assert "| train |" not in phases and "| training (push, train between steps, fine-tune) | 28.0 |" in inside
    assert "| validation (base, after each step, final) | 5.0 |" in inside


def test_format_summary_labels_flops_at_the_run_size():
    report = {"mode": "compress", "before": {"map50_95": 0.5, "flops_g": 6.4, "params_m": 2.6},
              "after": {"map50_95": 0.48, "flops_g": 3.2, "params_m": 1.3}, "flops_imgsz": 640,
              "paths": {"run_dir": "runs/ldac/exp", "best": "runs/ldac/exp/weights/best.pt"}}
    lines = format_summary(report, imgsz=160).splitlines()
    assert lines[0] == "yolo-ldac compress: before -> after"
    assert lines[2].split()[:6] == ["GFLOPs", "(160", "px)", "0.400", "->", "0.200"]  # 6.4 G at 640 px = 0.4 at 160
    assert lines[3].split()[:4] == ["mAP50-95", "0.5000", "->", "0.4800"] and "-2.00 pts" in lines[3]
    assert lines[-1] == ("Results saved to runs/ldac/exp (model: runs/ldac/exp/weights/best.pt, report: "
                         "runs/ldac/exp/report.md)")
    assert format_markdown(report).count("GFLOPs (640 px)") == 1  # report.md's table says where it counted
