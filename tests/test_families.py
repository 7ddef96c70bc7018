"""Every Ultralytics 8.4 detector family: split rewrites (and that a wrong one is caught), pruning to 0.3 with the
FLOPs Ultralytics counts, end-to-end heads, the full prune -> train -> reload -> ONNX pipeline, and NCNN export."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import _calibrate_batchnorm, load_script, save_checkpoint, tiny_pruned_model

from yolo_ldac.errors import LDACError
from yolo_ldac.nn import adapter
from yolo_ldac.nn.adapter import (
    load_detection_model,
    outputs_difference,
    protected_layers,
    raw_head_outputs,
    rewrite_split_blocks,
    ultralytics_gflops,
)
from yolo_ldac.nn.modules import C2fCIBSplit, C2fSplit, C3k2Split, ELAN1Split, RepNCSPELAN4Split

FAMILIES = load_script("benchmarks/families.py").FAMILIES
HAS_NCNN = importlib.util.find_spec("ncnn") is not None and importlib.util.find_spec("pnnx") is not None

# (yaml, Ultralytics block name, its split form, how many the nano/tiny model has)
SPLIT_BLOCKS = [
    ("yolov8n.yaml", "C2f", C2fSplit, 8),
    ("yolo11n.yaml", "C3k2", C3k2Split, 8),
    ("yolov10n.yaml", "C2fCIB", C2fCIBSplit, 1),
    ("yolov9t.yaml", "RepNCSPELAN4", RepNCSPELAN4Split, 7),
    ("yolov9t.yaml", "ELAN1", ELAN1Split, 1),
]
X = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _detector(cfg: str, seed: int = 0):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    return DetectionModel(cfg, nc=3, verbose=False).float().eval()


def _swapped_halves(from_block):
    """A deliberately wrong rewrite: the two halves of the first convolution exchanged."""
    def rewrite(block):
        new = from_block(block)
        new.cv0, new.cv1 = new.cv1, new.cv0
        return new
    return rewrite


@pytest.mark.parametrize("cfg,name,split_cls,count", SPLIT_BLOCKS, ids=[c[1] for c in SPLIT_BLOCKS])
def test_split_rewrite_is_exact_and_a_wrong_one_is_caught(cfg, name, split_cls, count, monkeypatch):
    model = _detector(cfg)
    wrong = copy.deepcopy(model)
    before = raw_head_outputs(model, X)
    rewrite_split_blocks(model)
    assert sum(type(m) is split_cls for m in model.model) == count
    assert not any(type(m).__name__ == name for m in model.modules())
    assert outputs_difference(before, raw_head_outputs(model, X)) <= adapter.REWRITE_ATOL
    # on these bare random weights the check sees a wrong rewrite of this one block type
    rewrites = adapter.split_rewrites()
    block_cls = next(cls for cls in rewrites if cls.__name__ == name)
    monkeypatch.setattr(adapter, "split_rewrites", lambda: {**rewrites, block_cls: _swapped_halves(rewrites[block_cls])})
    with pytest.raises(LDACError, match="changed the model's outputs"):
        rewrite_split_blocks(wrong)


def test_raw_head_outputs_see_past_the_bias_init():
    """The decoded scores of a yaml-built model are set by the class bias (sigmoid ~ 0); its raw maps are not."""
    model = _detector("yolo11n.yaml")
    y = model(X)[0]
    raw = raw_head_outputs(model, X)
    x2 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    scores_moved = float((model(x2)[0][:, 4:] - y[:, 4:]).abs().max())
    raw_moved = outputs_difference(raw, raw_head_outputs(model, x2))
    assert scores_moved < 1e-3 < raw_moved


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_prunes_to_ultralytics_flops(family):
    """0.3 of the FLOPs as Ultralytics counts them, within 1 point; the pruned model runs; protected convs kept."""
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.criteria import build_criterion
    from yolo_ldac.pruning.engine import ChannelPruner

    torch.manual_seed(0)
    model = load_detection_model(f"{family}.yaml")
    original = ultralytics_gflops(model)
    rewrite_split_blocks(model)
    prot = protected_layers(model)
    widths = {id(c): c.out_channels for c in prot}
    dense = measure(model, 640, protected=prot, flops_fn=ultralytics_gflops)
    pruner = ChannelPruner(model, build_criterion("l2"), dense, layer_channels(model), prot, imgsz=640,
                           compensate="none", flops_fn=ultralytics_gflops)
    result = pruner.step(0.3)
    assert abs((1 - ultralytics_gflops(model) / original) - 0.3) <= 0.01
    assert abs(result.reached_ratio - 0.3) <= 0.01
    assert all(c.out_channels == widths[id(c)] for c in prot)
    with torch.no_grad():
        y = model.eval()(X)[0]
    assert y.shape[1] == 4 + 80 or y.shape[-1] == 6


@pytest.mark.parametrize("family", ["yolo26n", "yolov10n"])
def test_end_to_end_head_branches_stay_consistent(family):
    """Both branches read the same pruned neck widths; their final convs keep their widths; each branch's inner
    convs are pruned as groups of their own (the graph does not couple them with their twins)."""
    model = tiny_pruned_model(f"{family}.yaml", nc=3, seed=0, n_groups=12)
    head = model.model[-1]
    for many, one in ((head.cv2, head.one2one_cv2), (head.cv3, head.one2one_cv3)):
        for a, b in zip(many, one):
            first_a = next(m for m in a.modules() if isinstance(m, nn.Conv2d))
            first_b = next(m for m in b.modules() if isinstance(m, nn.Conv2d))
            assert first_a.in_channels == first_b.in_channels
            assert a[-1].out_channels == b[-1].out_channels
    prot = {id(m) for m in protected_layers(model)}
    assert all(id(b[-1]) in prot for b in (*head.one2one_cv2, *head.one2one_cv3))
    raw = raw_head_outputs(model, X)
    assert len(raw) == 2 * (2 + len(head.cv2)) and all(torch.isfinite(t).all() for t in raw)


def test_adown_producer_is_protected():
    """YOLOv9-c's ADown splits its input in halves: the convolution writing that input keeps its channels."""
    from ultralytics.nn.modules.block import ADown

    model = load_detection_model("yolov9c.yaml")
    rewrite_split_blocks(model)
    prot = {id(m) for m in protected_layers(model)}
    seq = model.model
    adowns = [i for i, m in enumerate(seq) if type(m) is ADown]
    assert adowns
    for i in adowns:
        assert id(seq[i - 1].cv2.conv) in prot
        assert id(seq[i].cv1.conv) not in prot


def test_v10detect_is_accepted_and_classify_is_not():
    model = load_detection_model("yolov10n.yaml")
    assert type(model.model[-1]).__name__ == "v10Detect"
    assert type(load_detection_model("yolo11n-pose.yaml").model[-1]).__name__ == "Pose"  # a task model (issue 24)
    with pytest.raises(LDACError, match="is not a model yolo-ldac prunes"):
        load_detection_model("yolo11n-cls.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["yolov10n", "yolo26n"])
def test_family_pipeline(family, shapes_data, tmp_path):
    """prune 0.3 -> forward -> one epoch -> YOLO() reload -> ONNX parity (on real-image BatchNorm statistics)."""
    stages = load_script("benchmarks/families.py").check_pipeline(family, shapes_data, tmp_path, imgsz=64)
    failed = {k: v.get("error") for k, v in stages.items() if not v["ok"]}
    assert not failed and list(stages) == ["prune", "forward", "train", "reload", "onnx"]
    assert abs(stages["prune"]["flops_removed_pct"] - 30) <= 1.0
    assert stages["onnx"]["max_rel_diff"] <= 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NCNN, reason="pip install 'yolo-ldac[ncnn]'")
def test_ncnn_export_and_parity(tmp_path):
    from yolo_ldac.deploy.parity import check_raw_parity
    from yolo_ldac.deploy.runtimes import ModuleRuntime, format_of, load_runtime
    from yolo_ldac.export import export_checked, export_name

    model = tiny_pruned_model("yolo11n.yaml", nc=3, seed=0)
    pt = save_checkpoint(model, tmp_path / "pruned.pt")
    res = export_checked(pt, format="ncnn", imgsz=96)
    assert res.path.name == export_name("pruned", "ncnn", "fp32") == "pruned_ncnn_model"
    assert format_of(res.path) == "ncnn" and res.parity["ok"] and res.parity["max_rel_diff"] <= 1e-3
    rt = load_runtime(res.path, threads=1)
    assert rt.input_shape == (1, 3, 96, 96)
    # a model that differs in one layer fails the same check against that file
    bad = copy.deepcopy(model)
    conv = max((m for m in bad.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    with torch.no_grad():
        conv.weight.mul_(1.5)
    failed = check_raw_parity(ModuleRuntime(bad), res.path, imgsz=96, nc=3, raise_on_fail=False)
    assert not failed["ok"]
    with pytest.raises(LDACError, match="ncnn int8 is not available"):
        export_checked(pt, format="ncnn", imgsz=96, int8=True, data="x.yaml")

    # the per-layer profile runs every layer of the file once per run, one at a time
    import ncnn

    from yolo_ldac.latency.probe import ncnn_node_ms

    param = res.path / "model.ncnn.param"
    nodes = ncnn_node_ms(param, np.zeros((3, 96, 96), np.float32), runs=2, warmup=1)
    net = ncnn.Net()
    net.load_param(str(param))
    assert {t for _, t in nodes} == {L.type for L in net.layers() if L.type != "Input"}
    assert len(nodes) == sum(L.type != "Input" for L in net.layers()) and all(v >= 0 for v in nodes.values())
    assert {"Convolution", "Concat"} <= {t for _, t in nodes}


@pytest.mark.slow
def test_ldac_method_on_an_end_to_end_head(shapes_data, tmp_path):
    """LDAC's trace and push (its loss beside Ultralytics' dual loss) on YOLO26's dual head: one push epoch, one step."""
    from yolo_ldac import YOLOLDAC

    res = YOLOLDAC("yolo26n.yaml").compress(data=str(shapes_data), ratio=0.2, method="ldac", push="ldac", rounds=1,
                                            epochs_per_round=1, finetune_epochs=0, imgsz=64, batch=8, workers=0,
                                            project=str(tmp_path), name="e2e", plots=False, val_steps=False, seed=0)
    assert res.best.is_file() and "round1.push" in [p["name"] for p in res.report["phases"]]
    assert abs(res.removed["flops_pct"] - 20) <= 1.0
