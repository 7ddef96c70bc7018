"""`make demo` (examples/demo.py): real images or one line saying how to get them; shapes only when asked for."""

from __future__ import annotations

import pytest

from helpers import load_script


@pytest.fixture
def demo(monkeypatch, tmp_path):
    module = load_script("examples/demo.py")
    monkeypatch.setattr(module, "ROOT", tmp_path)  # whatever it writes goes here
    return module


def test_without_opencv_doc_the_demo_stops_with_one_line(demo, monkeypatch, tmp_path):
    import yolo_ldac.data.composite as composite

    monkeypatch.setattr(composite, "_opencv_doc_images", lambda: [])
    built = []
    monkeypatch.setattr(composite, "build_composite", lambda *a, **k: built.append(a))
    with pytest.raises(SystemExit) as e:
        demo.demo_data(160)
    line = str(e.value)
    assert "\n" not in line and line.startswith("demo: ") and "make bench-data" in line and "--shapes" in line
    assert not built and not list(tmp_path.iterdir())  # stopped before anything was built or written


def test_without_seg_weights_the_demo_stops_with_one_line(demo, monkeypatch, tmp_path):
    import yolo_ldac.data.composite as composite

    monkeypatch.setattr(composite, "_opencv_doc_images", lambda: [tmp_path / "photo.jpg"])
    monkeypatch.setenv("YOLO_LDAC_SHARED_WEIGHTS", str(tmp_path / "no-weights"))
    with pytest.raises(SystemExit, match="yolo11n-seg") as e:
        demo.demo_data(160)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


def test_shapes_only_when_asked_for(demo, tmp_path, capsys):
    data = demo.demo_data(64, shapes=True)
    assert data.is_file() and data.parent.parent == tmp_path / "datasets"
    assert "generated shapes (--shapes)" in capsys.readouterr().out
