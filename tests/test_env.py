import os

from yolo_ldac.utils.env import machine_info, setup_offline_env


def test_fonts_are_local(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    import sys

    monkeypatch.delitem(sys.modules, "ultralytics.utils", raising=False)  # as before ultralytics is imported
    target = setup_offline_env(offline=True)
    assert target == tmp_path / "cfg" / "Ultralytics"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (target / name).stat().st_size > 100_000
    assert os.environ["YOLO_OFFLINE"] == "1"
    assert os.environ["YOLO_AUTOINSTALL"] == "False"


def test_default_config_dir_from_yolo_ldac_home(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_CONFIG_DIR")
    monkeypatch.setenv("YOLO_LDAC_HOME", str(tmp_path))
    import sys

    monkeypatch.delitem(sys.modules, "ultralytics.utils", raising=False)
    target = setup_offline_env()
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "ultralytics")
    assert (target / "Arial.ttf").is_file()


def test_session_fonts_in_ultralytics_config_dir():
    """conftest ran setup_offline_env before ultralytics was imported: Ultralytics uses that directory."""
    from ultralytics.utils import USER_CONFIG_DIR
    from ultralytics.utils.checks import check_font

    assert check_font("Arial.ttf") == USER_CONFIG_DIR / "Arial.ttf"
    assert check_font("Arial.Unicode.ttf") == USER_CONFIG_DIR / "Arial.Unicode.ttf"


def test_machine_info():
    info = machine_info()
    assert info["cores"] >= 1 and info["cpu"]
    assert info["torch"] and info["ultralytics"] and info["python"]
    assert "gpu" in info


def test_shared_weights_dir_follows_the_environment(monkeypatch, tmp_path):
    from yolo_ldac.utils.env import shared_weights_dir

    monkeypatch.setenv("YOLO_LDAC_SHARED_WEIGHTS", str(tmp_path))
    assert shared_weights_dir() == tmp_path
    monkeypatch.delenv("YOLO_LDAC_SHARED_WEIGHTS")
    assert shared_weights_dir().parts[-2:] == ("shared", "weights")


def test_plain_ultralytics_loads_a_yolo_ldac_checkpoint_quietly(tmp_path):
    """`YOLO("best.pt")` in a process of its own imports yolo_ldac while unpickling; that prints no warning of ours
    and leaves Ultralytics' environment as the user set it."""
    import subprocess
    import sys

    from helpers import tiny_pruned_model

    from yolo_ldac.checkpoint import save_ultralytics_checkpoint

    best = save_ultralytics_checkpoint(tiny_pruned_model(), tmp_path / "best.pt", {"imgsz": 64}, half=False)
    script = ("import os, sys\nfrom ultralytics import YOLO\nYOLO(sys.argv[1])\n"
              "print('imported' if 'yolo_ldac' in sys.modules else 'not imported', os.environ.get('YOLO_CONFIG_DIR'))")
    env = {k: v for k, v in os.environ.items() if k not in {"YOLO_CONFIG_DIR", "YOLO_LDAC_HOME"}}
    env["HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", script, str(best)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["imported", "None"], out.stdout  # loaded through yolo_ldac, env untouched
    assert "setup_offline_env" not in out.stdout + out.stderr
    assert "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr
