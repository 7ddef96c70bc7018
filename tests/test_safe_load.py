"""Safe loading: untrusted checkpoints and model yamls never run code; yolo-ldac's own files load without trust."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from helpers import save_checkpoint, tiny_pruned_model
from yolo_ldac.cli import main
from yolo_ldac.errors import LDACError
from test_bad_input import assert_cli_rejects

TINY_YAML = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"


class _Payload:
    """Creates ``marker`` when unpickled (as a hostile checkpoint would run anything)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture(scope="module")
def pruned():
    model = tiny_pruned_model(str(TINY_YAML))
    model.names = {0: "square", 1: "circle", 2: "triangle"}  # the shapes dataset's classes
    return model


@pytest.fixture()
def payload_pt(pruned, tmp_path):
    """A valid tiny model checkpoint that also carries a payload; returns (checkpoint, marker the payload writes)."""
    import ultralytics

    marker = tmp_path / "pwned"
    path = tmp_path / "payload.pt"
    torch.save({"model": copy.deepcopy(pruned), "train_args": {}, "extra": _Payload(marker),
                "version": ultralytics.__version__}, path)
    return path, marker


@pytest.fixture()
def payload_yaml(tmp_path):
    """The tiny model yaml with an ``activation`` that creates a file when evaluated; returns (yaml, marker)."""
    marker = tmp_path / "pwned-yaml"
    d = yaml.safe_load(TINY_YAML.read_text())
    d["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()"
    path = tmp_path / "payload.yaml"
    path.write_text(yaml.safe_dump(d))
    return path, marker


def test_payload_checkpoint_refused_by_cli(payload_pt, tmp_path, capfd):
    path, marker = payload_pt
    line = assert_cli_rejects(["info", f"model={path}", "imgsz=64"], tmp_path / "runs", capfd, "trusted=True")
    assert "builtins.exec" in line
    assert not marker.exists()


@pytest.mark.parametrize("mode", ["val", "prune", "export", "benchmark"])
def test_payload_checkpoint_refused_in_every_mode(mode, payload_pt, shapes_data, tmp_path, capfd):
    path, marker = payload_pt
    assert_cli_rejects([mode, f"model={path}", f"data={shapes_data}", "imgsz=64"], tmp_path / "runs", capfd,
                       "needs more than the classes safe loading allows")
    assert not marker.exists()


def test_payload_checkpoint_refused_by_api(payload_pt):
    from yolo_ldac import YOLOLDAC

    path, marker = payload_pt
    with pytest.raises(LDACError, match="trusted=True"):
        YOLOLDAC(path)
    assert not marker.exists()


def test_payload_checkpoint_runs_only_when_trusted(payload_pt):
    path, marker = payload_pt
    assert main(["info", f"model={path}", "imgsz=64", "trusted=True"]) == 0
    assert marker.exists()  # the file ran: trusted=True is Ultralytics' behaviour, for files you trust


def test_payload_checkpoint_refused_by_export_api(payload_pt):
    from yolo_ldac.export import export_checked

    path, marker = payload_pt
    with pytest.raises(LDACError, match="trusted=True"):
        export_checked(path, format="onnx", imgsz=64)
    assert not marker.exists()


def test_payload_yaml_refused(payload_yaml, tmp_path, capfd):
    path, marker = payload_yaml
    assert_cli_rejects(["info", f"model={path}", "imgsz=64"], tmp_path / "runs", capfd, "unsupported activation")
    assert not marker.exists()
    assert main(["info", f"model={path}", "imgsz=64", "trusted=True"]) == 0
    assert marker.exists()


def test_checkpoint_whose_yaml_holds_code_is_refused(pruned, tmp_path, capfd):
    """A pickle-clean checkpoint can still carry a model yaml Ultralytics would evaluate when it rebuilds the head."""
    marker = tmp_path / "pwned"
    model = copy.deepcopy(pruned)
    model.yaml = dict(model.yaml, activation=f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()")
    path = save_checkpoint(model, tmp_path / "bad-yaml.pt")
    assert_cli_rejects(["info", f"model={path}", "imgsz=64"], tmp_path / "runs", capfd, "unsupported activation")
    assert not marker.exists()


@pytest.mark.parametrize("act, ok", [("nn.SiLU()", True), ("torch.nn.LeakyReLU(0.1)", True), ("nn.ReLU(inplace=True)", True),
                                     ("nn.Conv2d(3, 3, 3)", False), ("nn.SiLU", False), ("os.system('x')", False),
                                     ("nn.ReLU(print('x'))", False), ("nn.Tanh() or 1", False)])
def test_activation_spellings(act, ok):
    from yolo_ldac.safe_load import check_activation

    if ok:
        check_activation(act)
    else:
        with pytest.raises(LDACError, match="unsupported activation"):
            check_activation(act)


def test_own_pruned_checkpoint_loads_without_trust(pruned, tmp_path, monkeypatch):
    """yolo-ldac's best.pt (its C2fSplit/C3k2Split blocks) loads with weights_only=True and nothing else."""
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint
    from yolo_ldac.nn.adapter import load_detection_model
    from yolo_ldac.safe_load import unlisted_globals

    path = save_ultralytics_checkpoint(pruned, tmp_path / "best.pt", {"method": "l2", "ratio": 0.5}, half=False)
    assert unlisted_globals(path) == []
    real_load = torch.load
    seen = []

    def only_weights(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        assert kwargs.get("weights_only") is True, "a checkpoint was unpickled with weights_only=False"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", only_weights)
    model = load_detection_model(path)
    assert seen and type(model.model[2]).__name__ in {"C3k2Split", "C2fSplit"}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x)[0], pruned.eval()(x)[0])


def test_shared_ultralytics_checkpoint_loads_without_trust(shared_weights):
    from yolo_ldac.safe_load import load_model, unlisted_globals

    path = shared_weights("yolo11n-coco.pt")
    assert unlisted_globals(path) == []
    assert type(load_model(path)).__name__ == "DetectionModel"


# --- the portable pair through every mode ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def portable(pruned, tmp_path_factory) -> Path:
    from yolo_ldac.checkpoint import save_portable, portable_paths

    st = save_portable(pruned, tmp_path_factory.mktemp("portable") / "best")
    return portable_paths(st)[1]  # best.json


@pytest.mark.slow
@pytest.mark.parametrize("mode, extra", [
    ("info", []),
    ("val", ["batch=4"]),
    ("prune", ["ratio=0.1", "rounds=1", "batch=4", "calib_batches=1", "method=l2", "val_steps=False"]),
    ("finetune", ["epochs=1", "batch=4"]),
    ("compress", ["ratio=0.1", "rounds=1", "epochs_per_round=0", "finetune_epochs=1", "batch=4", "calib_batches=1",
                  "method=l2", "val_steps=False"]),
    ("export", ["format=onnx", "parity_map=False"]),
    ("benchmark", ["formats=onnx", "runs=2", "warmup=1", "threads=1"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_portable_pair_in_every_mode(mode, extra, portable, shapes_data, tmp_path, capfd):
    capfd.readouterr()
    data = [] if mode in ("info", "export") else [f"data={shapes_data}"]
    rc = main([mode, f"model={portable}", "imgsz=64", f"project={tmp_path}", "name=run", "plots=False", *data, *extra])
    err = capfd.readouterr().err
    assert rc == 0, err
    if mode in ("prune", "finetune", "compress"):
        assert (tmp_path / "run" / "weights" / "best.safetensors").is_file()
    if mode == "export":
        assert (portable.parent / "best.onnx").is_file()
    if mode == "benchmark":
        assert (tmp_path / "run" / "benchmark.json").is_file()


@pytest.mark.slow
def test_export_messages_name_no_temporary_folder(portable, capfd):
    from ultralytics.utils import LOGGER

    import logging

    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        assert main(["export", f"model={portable}", "imgsz=64", "format=onnx", "parity_map=False"]) == 0
    finally:
        LOGGER.removeHandler(handler)
    out = capfd.readouterr()
    text = "\n".join(records) + out.out + out.err
    assert "export success" in text  # Ultralytics' messages did come through
    assert "yolo-ldac-export-" not in text
    assert "Validate:" not in text
    assert str(portable.parent / "best.onnx") in text  # the summary names the final file


def test_payload_baseline_refused_by_benchmark(payload_pt, pruned, tmp_path, capfd):
    from yolo_ldac.checkpoint import save_ultralytics_checkpoint

    path, marker = payload_pt
    good = save_ultralytics_checkpoint(pruned, tmp_path / "best.pt", {"method": "l2", "ratio": 0.5})
    assert_cli_rejects(["benchmark", f"model={good}", f"baseline={path}", "imgsz=64", "formats=onnx"],
                       tmp_path / "runs", capfd, "payload.pt.*trusted=True")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x04not a checkpoint at all" * 50], ids=["empty", "garbage"])
def test_damaged_file_is_not_called_untrusted(content, tmp_path, capfd):
    """A file that is no checkpoint at all gets a message about the file, not advice to trust it."""
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    line = assert_cli_rejects(["info", f"model={path}"], tmp_path / "runs", capfd, "not a loadable checkpoint")
    assert "trusted" not in line


def test_own_checkpoint_loads_in_ultralytics_safe_mode(pruned, tmp_path):
    """Plain Ultralytics with ULTRALYTICS_SAFE_LOAD=1 opens yolo-ldac's best.pt once yolo_ldac.nn.modules is imported.
    In a fresh process: earlier tests here have registered the safe globals already, which would hide a regression."""
    import os
    import subprocess
    import sys

    from yolo_ldac.checkpoint import save_ultralytics_checkpoint

    path = save_ultralytics_checkpoint(pruned, tmp_path / "best.pt", {"method": "l2", "ratio": 0.5})
    code = ("import yolo_ldac.nn.modules\n"
            "from ultralytics import YOLO\n"
            f"print('BLOCK', type(YOLO({str(path)!r}).model.model[2]).__name__)\n")
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": "1",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(ln in {"BLOCK C3k2Split", "BLOCK C2fSplit"} for ln in proc.stdout.splitlines()), proc.stdout[-2000:]


@pytest.fixture()
def payload_data(shapes_data, tmp_path):
    """A data.yaml whose val folder is missing and whose ``download:`` (Python) creates a file; returns (yaml, marker)."""
    marker = tmp_path / "pwned-data"
    path = tmp_path / "payload-data.yaml"
    path.write_text(yaml.safe_dump({"path": str(shapes_data.parent), "train": "images/train", "val": "missing/val",
                                    "names": {0: "square", 1: "circle", 2: "triangle"},
                                    "download": f"open({str(marker)!r}, 'w').close()"}))
    return path, marker


def test_payload_data_download_not_run_untrusted(payload_data, tmp_path, capfd):
    """Ultralytics execs a data.yaml's ``download:`` when the images are missing: not unless trusted=True."""
    path, marker = payload_data
    assert_cli_rejects(["prune", "model=yolov8n.yaml", f"data={path}", "imgsz=64", "batch=8", "plots=False"],
                       tmp_path / "runs", capfd, r"missing/val.*'download:' script was not run.*trusted=True")
    assert not marker.exists()
    from yolo_ldac import YOLOLDAC

    with pytest.raises(LDACError):  # trusted: Ultralytics runs it (the val images are still missing afterwards)
        YOLOLDAC("yolov8n.yaml", trusted=True).prune(data=str(path), project=str(tmp_path / "runs"), imgsz=64,
                                                      batch=8, plots=False)
    assert marker.exists()


def test_resume_refuses_a_payload_epoch_best(pruned, tmp_path):
    """A resumed phase: Ultralytics' final_eval unpickles epoch_best.pt fully (strip_optimizer), so a stale one
    carrying a payload is refused before training, not only the epoch_last.pt resumed from."""
    import types

    import ultralytics

    from yolo_ldac.checkpoint import save_ultralytics_checkpoint
    from yolo_ldac.engine.trainer import EPOCH_BEST, EPOCH_LAST
    from yolo_ldac.safe_load import policy
    from yolo_ldac.schedule.compressor import Compressor

    weights = tmp_path / "run" / "compress" / "weights"
    weights.mkdir(parents=True)
    save_ultralytics_checkpoint(pruned, weights / EPOCH_LAST, {}, half=False)
    marker = tmp_path / "pwned-best"
    torch.save({"model": copy.deepcopy(pruned), "extra": _Payload(marker), "version": ultralytics.__version__},
               weights / EPOCH_BEST)
    fake = types.SimpleNamespace(run_dir=tmp_path / "run")
    with policy(trusted=False), pytest.raises(LDACError, match=rf"{EPOCH_BEST}.*trusted=True"):
        Compressor._train(fake, copy.deepcopy(pruned), 3, "compress", final=False)
    assert not marker.exists()
