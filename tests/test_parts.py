"""The three kinds of parts (criterion x push x compensation) compose freely; registries, presets, callbacks."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolo_ldac.errors import LDACError
from yolo_ldac.parts import build_parts, describe, presets, registries, resolve_parts

REGS = registries()
CRITERIA, PUSHES, COMPENSATIONS = (sorted(REGS[k]) for k in ("criterion", "push", "compensate"))


TINY_YAML = Path(__file__).parent / "fixtures" / "models" / "yolo11-tiny.yaml"


@pytest.fixture(scope="module")
def tiny():
    """A tiny YOLO11-style detector (0.43 M params, 39 prunable groups): every block kind, fast enough for the grid."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import rewrite_split_blocks

    torch.manual_seed(0)
    model = DetectionModel(str(TINY_YAML), nc=3, verbose=False).float()
    rewrite_split_blocks(model)
    return model


@pytest.fixture(scope="module")
def grid_batches(shapes_data):
    """One calibration batch of 4 shapes images at 64 px (the grid below runs every combination of parts)."""
    from ultralytics.data.utils import check_det_dataset

    from yolo_ldac.pruning.calibration import build_calibration_batches

    return build_calibration_batches(check_det_dataset(str(shapes_data)), imgsz=64, batch=4, n_batches=1)


@pytest.mark.parametrize("compensate", COMPENSATIONS)
@pytest.mark.parametrize("push", PUSHES)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_push_compensation(criterion, push, compensate, tiny, grid_batches):
    calib_batches = grid_batches
    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.pruning.calibration import ensure_loss_args
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner

    model = copy.deepcopy(tiny)
    parts = build_parts({"method": "l2", "criterion": criterion, "push": push, "compensate": compensate, "seed": 0})
    dense = measure(model, 640, protected=protected_layers(model))
    pruner = ChannelPruner(model, parts["criterion"], dense, layer_channels(model), protected_layers(model),
                           compensate=parts["compensate"])
    # The push prepares for the coming step with the run's criterion, then trains one step with its loss.
    parts["criterion"].start_step(1)
    parts["push"].prepare(model, pruner, 0.2, calib_batches)
    ensure_loss_args(model)
    loss_fn = parts["push"].make_loss(model)
    if loss_fn is not None:
        model.criterion = loss_fn
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    loss, _ = model.loss(calib_batches[0])
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.criterion = None
    # The step: the criterion scores, the compensation folds, the engine removes.
    step = pruner.step(0.2, calib_batches)
    assert abs(step.reached_ratio - 0.2) <= 0.01
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64))
    y = y[0] if isinstance(y, (tuple, list)) else y
    assert torch.isfinite(y).all()


def test_presets_and_overrides():
    assert resolve_parts({"method": "ldac"}) == {"criterion": "ldac", "push": "none", "compensate": "lsq"}
    assert resolve_parts({"method": "group_fisher"}) == {"criterion": "group_fisher", "push": "none",
                                                         "compensate": "mean"}
    assert resolve_parts({"method": "ldac", "criterion": "group_fisher"}) == {
        "criterion": "group_fisher", "push": "none", "compensate": "lsq"}
    assert resolve_parts({"method": "l2", "push": "ldac", "compensate": False}) == {
        "criterion": "l2", "push": "ldac", "compensate": "none"}
    assert set(presets()) == set(CRITERIA)  # every criterion is a method; ldac is LDAC's preset
    with pytest.raises(LDACError, match="unknown push 'ldca'; did you mean 'ldac'"):
        resolve_parts({"method": "l2", "push": "ldca"})
    with pytest.raises(LDACError, match="unknown compensate 'meen'; did you mean 'mean'"):
        resolve_parts({"method": "l2", "compensate": "meen"})
    with pytest.raises(LDACError, match="unknown method 'tayler'; did you mean 'taylor'"):
        resolve_parts({"method": "tayler"})


def test_cfg_checks_parts():
    from yolo_ldac.cfg import get_cfg

    cfg = get_cfg({"method": "ldac", "criterion": "group_fisher", "compensate": "none"}, mode="compress")
    assert (cfg["criterion"], cfg["push"], cfg["compensate"]) == ("group_fisher", None, "none")
    with pytest.raises(LDACError, match="unknown criterion 'grup_fisher'; did you mean 'group_fisher'"):
        get_cfg({"criterion": "grup_fisher"}, mode="compress")


def test_list_prints_every_part():
    text = describe()
    for name in (*CRITERIA, *PUSHES, *COMPENSATIONS):
        assert f"    {name} " in text
    out = subprocess.run([sys.executable, "-m", "yolo_ldac.cli", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Pushes (push=)" in out.stdout and "group_fisher" in out.stdout


def test_registries_import_no_plugins_and_no_cycles():
    """A registry module imports none of its plugins; the package's list (parts.PLUGIN_MODULES) loads them on the
    first lookup. deploy/ never imports the facade."""
    code = ("import sys; import yolo_ldac.pruning.criteria as c; before = 'yolo_ldac.ldac.criterion' in sys.modules; "
            "n = len(c.CRITERIA); print(before, 'ldac' in c.CRITERIA, n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True", str(len(CRITERIA))], out.stderr
    root = Path(__file__).resolve().parents[1] / "yolo_ldac"
    facade = {root / "api.py", root / "cli.py", root / "__init__.py"}
    for path in root.rglob("*.py"):  # only the entry points know the facade: nothing calls back into it
        if path not in facade:
            assert "yolo_ldac.api" not in path.read_text(), path
    for path in (root / "pruning").glob("*.py"):
        assert "import yolo_ldac.ldac" not in path.read_text(), path


@pytest.mark.parametrize("fade", [True, False])
def test_push_marks_the_criterions_channels(fade, tiny, calib_batches):
    """push=ldac prepares for what the run's criterion would remove: with criterion=random the planned (fade) or
    L1-marked (fade=False) channels are the random criterion's picks for the coming step, reseeded per step."""
    from yolo_ldac.nn.adapter import protected_layers
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner

    model = copy.deepcopy(tiny)
    parts = build_parts({"method": "ldac", "criterion": "random", "push": "ldac", "seed": 3, "fade": fade})
    pruner = ChannelPruner(model, parts["criterion"], measure(model, 640, protected=protected_layers(model)),
                           layer_channels(model), protected_layers(model))
    parts["criterion"].start_step(1)
    parts["push"].prepare(model, pruner, 0.3, calib_batches)
    parts["criterion"].start_step(1)
    chosen = pruner.choose(0.3, calib_batches)
    if fade:
        assert parts["push"].planned() == chosen and parts["push"].release.schedule.channels >= sum(map(len, chosen.values()))
    else:
        marked = sum(int(m.sum()) for m in parts["push"].align_masks.values())
        assert marked == sum(len(v) for v in chosen.values()) > 0 and parts["push"].planned() is None


def test_method_ldac_end_to_end(shapes_data, tmp_path):
    """The default preset (LDAC's trace, no push, least-squares compensation) prunes a model to its target."""
    from yolo_ldac import YOLOLDAC

    res = YOLOLDAC("yolo11n.yaml").prune(data=str(shapes_data), ratio=0.3, rounds=1, imgsz=64, batch=8,
                                         plots=False, project=str(tmp_path))
    assert res.report["parts"] == {"criterion": "ldac", "push": "none", "compensate": "lsq"}
    assert 29 <= res.removed["flops_pct"] <= 31
