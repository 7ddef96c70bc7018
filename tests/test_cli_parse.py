"""yolo_ldac.cli: argument parsing, help, errors and dispatch to the Python API (replaced by a recording fake)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from yolo_ldac import __version__
from yolo_ldac.cfg import DEFAULT_CFG_PATH, MODES
from yolo_ldac.cli import MODE_HELP, main, parse_args
from yolo_ldac.errors import LDACError

REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeYOLOLDAC:
    """Stands in for yolo_ldac.api.YOLOLDAC: records the constructor argument and each call."""

    calls: list = []
    raise_on_call: BaseException | None = None

    def __init__(self, model, trusted=False):
        self.model = model
        FakeYOLOLDAC.calls.append(("__init__", model, {"trusted": True} if trusted else {}))

    def _record(self, name, kwargs):
        FakeYOLOLDAC.calls.append((name, self.model, kwargs))
        if FakeYOLOLDAC.raise_on_call is not None:
            raise FakeYOLOLDAC.raise_on_call
        return {"mode": name}

    def compress(self, **kw):
        return self._record("compress", kw)

    def prune(self, **kw):
        return self._record("prune", kw)

    def finetune(self, **kw):
        return self._record("finetune", kw)

    def val(self, **kw):
        return self._record("val", kw)

    def export(self, **kw):
        return self._record("export", kw)

    def info(self, **kw):
        self._record("info", kw)
        return {"table": "LAYER TABLE", "flops_g": 1.0}


@pytest.fixture
def fake_api(monkeypatch):
    FakeYOLOLDAC.calls = []
    FakeYOLOLDAC.raise_on_call = None
    mod = types.ModuleType("yolo_ldac.api")
    mod.YOLOLDAC = FakeYOLOLDAC
    monkeypatch.setitem(sys.modules, "yolo_ldac.api", mod)
    monkeypatch.setitem(sys.modules, "yolo_ldac.pruning.criteria", None)  # method check off: no torch needed
    return FakeYOLOLDAC


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_error_line(err: str, fragment: str = ""):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("yolo-ldac: error: "), err
    assert fragment in lines[0], err


# ------------------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"], ["prune", "--help"]])
def test_help(argv, capsys, fake_api):
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and err == ""
    assert "yolo-ldac MODE key=value" in out
    for mode in MODES:
        assert mode in out
    assert str(DEFAULT_CFG_PATH) in out and "Examples" in out
    assert fake_api.calls == []


def test_every_mode_has_a_help_line():
    assert set(MODE_HELP) == set(MODES)


def test_cfg_prints_defaults(capsys):
    rc, out, _ = _run(["cfg"], capsys)
    assert rc == 0 and out == DEFAULT_CFG_PATH.read_text(encoding="utf-8")


def test_version(capsys):
    rc, out, _ = _run(["version"], capsys)
    assert rc == 0 and __version__ in out


# ---------------------------------------------------------------------------------------------------- parsing


def test_parse_args():
    mode, ov = parse_args(["prune", "ratio=0.3", "rounds=2", "compensate=false", "device=none", "imgsz=[320,320]",
                           "lr0=1e-3", "name=a,b"])
    assert mode == "prune"
    assert ov == {"ratio": 0.3, "rounds": 2, "compensate": False, "device": None, "imgsz": [320, 320],
                  "lr0": 0.001, "name": "a,b"}
    assert parse_args(["ratio=0.2"]) == (None, {"ratio": 0.2})
    assert parse_args(["mode=val", "data=x.yaml"]) == ("val", {"data": "x.yaml"})
    assert parse_args(["val", "mode=val"]) == ("val", {})
    assert parse_args(["name=__import__('os')"])[1] == {"name": "__import__('os')"}


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["prnue"], "unknown mode 'prnue'; did you mean 'prune'?"),
        (["prune", "val"], "two modes given"),
        (["prune", "mode=val"], "two modes given"),
        (["prune", "ratio", "0.3"], "'ratio' needs a value: write ratio=VALUE"),
        (["prune", "--ratio=0.3"], "write 'ratio=0.3'"),
        (["prune", "=3"], "has no key"),
    ],
)
def test_parse_args_errors(argv, fragment):
    with pytest.raises(LDACError) as e:
        parse_args(argv)
    assert fragment in str(e.value)


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["prune", "ratoi=0.3"], "unknown key 'ratoi'; did you mean 'ratio'?"),
        (["compress", "ratio=1.0"], "ratio must be in (0, 0.95], got 1.0"),
        (["compress", "ratio=abc"], "ratio must be in (0, 0.95], got 'abc'"),
        (["compres"], "did you mean 'compress'?"),
        (["mode=train"], "mode must be one of"),
        (["prune", "target=flop"], "did you mean 'flops'?"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, fragment, capsys, fake_api):
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and out == ""
    _assert_one_error_line(err, fragment)
    assert fake_api.calls == [], "nothing may run after a bad argument"


def test_api_ldac_error_is_one_line(capsys, fake_api):
    fake_api.raise_on_call = LDACError("data file 'x.yaml' not found\n(check the path)")
    rc, _, err = _run(["val", "data=x.yaml"], capsys)
    assert rc == 2
    _assert_one_error_line(err, "data file 'x.yaml' not found; (check the path)")


def test_keyboard_interrupt_exits_130(capsys, fake_api):
    fake_api.raise_on_call = KeyboardInterrupt()
    rc, _, err = _run(["val"], capsys)
    assert rc == 130
    _assert_one_error_line(err, "interrupted")


def test_other_exceptions_propagate(fake_api):
    fake_api.raise_on_call = ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        main(["val"])


# --------------------------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("mode", ["compress", "prune", "finetune", "val", "export"])
def test_dispatch_passes_only_user_overrides(mode, capsys, fake_api):
    rc, _, err = _run([mode, "model=m.pt", "data=d.yaml", "ratio=0.25", "lr0=0.002", "mosaic=0"], capsys)
    assert rc == 0, err
    assert fake_api.calls == [
        ("__init__", "m.pt", {}),
        (mode, "m.pt", {"data": "d.yaml", "ratio": 0.25, "lr0": 0.002, "mosaic": 0}),
    ]


def test_dispatch_default_mode_and_model(capsys, fake_api):
    rc, _, _ = _run(["data=d.yaml"], capsys)
    assert rc == 0
    assert fake_api.calls == [("__init__", "yolo11n.pt", {}), ("compress", "yolo11n.pt", {"data": "d.yaml"})]


def test_dispatch_mode_as_key(capsys, fake_api):
    assert _run(["mode=export", "model=m.pt", "format=onnx"], capsys)[0] == 0
    assert fake_api.calls[-1] == ("export", "m.pt", {"format": "onnx"})


def test_info_prints_table(capsys, fake_api):
    rc, out, _ = _run(["info", "model=m.pt"], capsys)
    assert rc == 0 and "LAYER TABLE" in out
    assert fake_api.calls[-1] == ("info", "m.pt", {})


# ------------------------------------------------------------------------------------------------- subprocess


def _subprocess(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, **kw)


def test_subprocess_help(tmp_path):
    p = _subprocess("-m", "yolo_ldac.cli", "help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "yolo-ldac MODE key=value" in p.stdout and p.stderr == ""


def test_subprocess_bad_key_exit_2_one_line(tmp_path):
    p = _subprocess("-m", "yolo_ldac.cli", "prune", "model=m.pt", "ratoi=0.3", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.splitlines() == ["yolo-ldac: error: unknown key 'ratoi'; did you mean 'ratio'?"]


def test_subprocess_help_and_bad_key_import_nothing_heavy(tmp_path):
    code = (
        "import sys; from yolo_ldac.cli import main; "
        "rc = (main(['help']), main(['prune', 'ratoi=1'])); "
        "print(rc, 'torch' in sys.modules, 'ultralytics' in sys.modules)"
    )
    p = _subprocess("-c", code, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "(0, 2) False False"


def test_dispatch_passes_trusted_to_the_constructor(fake_api):
    assert main(["info", "model=m.pt", "trusted=True"]) == 0
    assert fake_api.calls[0] == ("__init__", "m.pt", {"trusted": True})
