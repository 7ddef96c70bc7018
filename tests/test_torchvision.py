"""torchvision Faster R-CNN compressed with the project's parts (yolo_ldac.tv): a tiny
fasterrcnn_mobilenet_v3_large_fpn (no backbone weights, 128 px, few RoIs) from scratch on the shapes set."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError

BUILDER = "fasterrcnn_mobilenet_v3_large_fpn"
NAMES = {0: "square", 1: "circle", 2: "triangle"}
# Few proposals and sampled RoIs: the box head's 12544 x 1024 layer dominates the CPU time otherwise.
TINY = dict(rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, box_batch_size_per_image=64,
            rpn_pre_nms_top_n_test=100)


@pytest.fixture(scope="module")
def tiny():
    from yolo_ldac.tv.adapter import build_adapter

    return build_adapter(BUILDER, NAMES, imgsz=128, rois=20, seed=0, **TINY)


@pytest.fixture(scope="module")
def calib(shapes_data):
    from yolo_ldac.tv.data import YoloDetectionDataset, calibration_batches

    return calibration_batches(YoloDetectionDataset.from_yaml(str(shapes_data), "train", 128), 4, 1)


def _x(n=2, seed=1):
    return torch.rand(n, 3, 128, 128, generator=torch.Generator().manual_seed(seed))


def _same_detections(a: list[dict], b: list[dict], box_px: float = 0.0, score: float = 0.0) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p["boxes"].shape == q["boxes"].shape and len(p["boxes"]) > 0
        assert torch.equal(p["labels"], q["labels"])
        assert float((p["boxes"] - q["boxes"]).abs().max()) <= box_px
        assert float((p["scores"] - q["scores"]).abs().max()) <= score


# --- adapter -------------------------------------------------------------------------------------------------------
def test_builders_and_unknown_name():
    from yolo_ldac.tv.adapter import build_detector, builder_names

    names = builder_names()
    assert {"fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", BUILDER} <= set(names)
    with pytest.raises(LDACError, match="did you mean 'fasterrcnn_resnet50_fpn'"):
        build_detector("fasterrcnn_resnet50_fp", 3, 128)


def test_frozen_batchnorm_becomes_prunable_bn_with_the_same_outputs(tiny):
    """A detector with torchvision's FrozenBatchNorm2d (as its pretrained builders make) gives the same detections
    after the adapter turned them into BatchNorm2d, whose statistics then stay frozen in training."""
    from torchvision.ops import FrozenBatchNorm2d

    from yolo_ldac.tv.adapter import FasterRCNNAdapter

    det = copy.deepcopy(tiny.detector)
    gen = torch.Generator().manual_seed(0)

    def freeze(module):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                f = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                n = child.num_features
                f.weight.copy_(0.5 + torch.rand(n, generator=gen))
                f.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                f.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                f.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                setattr(module, name, f)
            else:
                freeze(child)

    freeze(det)
    n_frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in det.modules())
    assert n_frozen > 30
    det.eval()
    x = _x()
    with torch.no_grad():
        ref = det(list(x))
    adapter = FasterRCNNAdapter(det, BUILDER, NAMES, 128, frozen_stats=True)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in adapter.modules())
    bns = [m for m in adapter.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == n_frozen and all(m.frozen_stats for m in bns)
    # the same up to float round-off (FrozenBatchNorm2d folds its scale before multiplying; BatchNorm2d does not)
    _same_detections(adapter.predict(x), ref, box_px=1e-3, score=1e-5)
    adapter.train()
    assert all(not m.training for m in bns) and adapter.detector.rpn.training


def test_trace_forward_is_the_detectors_computation(tiny):
    """What torch-pruning traces and the hooks measure (adapter(x)) gives exactly the detector's own detections."""
    from yolo_ldac.tv.adapter import detections_from_trace

    tiny.eval()
    x = _x()
    with torch.no_grad():
        outs = tiny(x)
    assert outs[-2].shape[-1] == len(NAMES) + 1
    _same_detections(detections_from_trace(tiny, outs), tiny.predict(x))


def test_graph_prunes_backbone_fpn_rpn_conv_box_head_and_protects_predictors(tiny):
    from yolo_ldac.pruning.engine import build_graph
    from yolo_ldac.tv.adapter import protected_layers

    graph = build_graph(tiny)
    prot = protected_layers(tiny)
    names = {m: n for n, m in tiny.named_modules()}
    roots = {names[g[0].dep.target.module] for g in graph.get_all_groups(ignored_layers=prot,
                                                                         root_module_types=[nn.Conv2d, nn.Linear])}
    for expected in ("detector.rpn.head.conv.0.0", "detector.backbone.fpn.layer_blocks.0.0",
                     "detector.backbone.fpn.inner_blocks.0.0", "detector.roi_heads.box_head.fc6",
                     "detector.roi_heads.box_head.fc7", "detector.backbone.body.0.0"):
        assert expected in roots
    assert not roots & {names[m] for m in prot}


def test_local_state_dict_weights_and_offline_download(tiny, tmp_path):
    """weights= a local state dict: loaded, the box predictor replaced for another class count; a torchvision
    weights name offline is one line naming the way out."""
    from yolo_ldac.tv.adapter import build_adapter, torchvision_state_dict

    path = tmp_path / "frcnn.pth"
    torch.save(torchvision_state_dict(tiny.detector), path)  # what torchvision's own model.state_dict() holds
    two = build_adapter(BUILDER, {0: "a", 1: "b"}, imgsz=128, rois=20, weights=str(path), **TINY)
    assert two.frozen_stats and two.detector.roi_heads.box_predictor.cls_score.out_features == 3
    old, new = tiny.detector.state_dict(), two.detector.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old if "box_predictor" not in k)
    with pytest.raises(LDACError, match="offline: pass a local state dict file"):
        build_adapter(BUILDER, NAMES, imgsz=128, weights="COCO_V1")
    with pytest.raises(LDACError, match="not found"):
        build_adapter(BUILDER, NAMES, imgsz=128, weights=str(tmp_path / "missing.pth"))


@pytest.mark.slow
def test_resnet50_fpn_four_pooled_levels_trace_prune_reload(tmp_path):
    """ResNet-50 FPN (four pooled levels, Bottleneck blocks): the trace is the detector's computation, a prune step
    reaches its target and the saved widths reload to the same detections."""
    from yolo_ldac.parts import build_parts
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.engine import ChannelPruner
    from yolo_ldac.tv.adapter import (ConvFC, build_adapter, detections_from_trace, load_checkpoint,
                                      protected_layers, save_checkpoint)

    a = build_adapter("fasterrcnn_resnet50_fpn", {0: "a", 1: "b"}, imgsz=64, rois=5, seed=0)
    assert isinstance(a.detector.roi_heads.box_head.fc6, ConvFC)
    a.eval()
    x = _x(1)[:, :, :64, :64]
    with torch.no_grad():
        outs = a(x)
    _same_detections(detections_from_trace(a, outs), a.predict(x))
    crit = build_parts({"seed": 0}, {"criterion": "l1", "push": "none", "compensate": "none"})["criterion"]
    prot = protected_layers(a)
    pruner = ChannelPruner(a, crit, measure(a, 64, protected=prot), layer_channels(a), prot, imgsz=64,
                           compensate="none", root_types=(nn.Conv2d, nn.Linear), round_to=64)
    assert abs(pruner.step(0.1).reached_ratio - 0.1) <= 0.01
    b = load_checkpoint(save_checkpoint(a, tmp_path / "r50.pt"))
    _same_detections(b.predict(x), a.predict(x))


# --- data and mAP --------------------------------------------------------------------------------------------------
def test_yolo_labels_become_torchvision_targets(shapes_data):
    from yolo_ldac.tv.data import YoloDetectionDataset, read_labels

    ds = YoloDetectionDataset.from_yaml(str(shapes_data), "train", 128)
    x, t = ds.load(0)
    lab = read_labels(ds.labels[0])
    assert x.shape == (3, 128, 128) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert t["labels"].tolist() == (lab[:, 0].astype(int) + 1).tolist()
    cx, cy, w, h = (lab[0, 1:] * 128).tolist()
    assert t["boxes"][0].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], abs=1e-3)
    flipped = YoloDetectionDataset(ds.images, 128, augment=True)
    torch.manual_seed(0)
    for _ in range(6):  # some draws flip: boxes mirror with the image
        item = flipped[0]
        if not torch.equal(item["img"], x):
            assert torch.equal(item["img"], x.flip(-1))
            assert item["targets"]["boxes"][0, 0].item() == pytest.approx(128 - t["boxes"][0, 2].item())


def test_coco_map_hand_checked_cases():
    from yolo_ldac.tv.evaluate import coco_map

    gt = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 100.0, 110.0]]),
           "labels": torch.tensor([1, 1])}]
    perfect = [{"boxes": gt[0]["boxes"].clone(), "labels": torch.tensor([1, 1]), "scores": torch.tensor([0.9, 0.8])}]
    assert coco_map(perfect, gt, 2) == {"map50_95": 1.0, "map50": 1.0}
    # One of two boxes found: precision 1 up to recall 0.5, then nothing; COCO's 101 recall points give 51/101.
    half = [{"boxes": gt[0]["boxes"][:1].clone(), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    out = coco_map(half, gt, 2)
    assert out["map50"] == pytest.approx(51 / 101) and out["map50_95"] == pytest.approx(51 / 101)
    wrong_class = [{"boxes": gt[0]["boxes"].clone(), "labels": torch.tensor([2, 2]), "scores": torch.tensor([0.9, 0.8])}]
    assert coco_map(wrong_class, gt, 2) == {"map50_95": 0.0, "map50": 0.0}


# --- pruning with the registry's parts -----------------------------------------------------------------------------
def test_every_criterion_reaches_the_flops_target_or_says_it_cannot_apply(tiny, calib):
    from yolo_ldac.parts import build_parts
    from yolo_ldac.pruning.complexity import layer_channels, measure
    from yolo_ldac.pruning.criteria import CRITERIA
    from yolo_ldac.pruning.engine import ChannelPruner
    from yolo_ldac.tv.adapter import protected_layers
    from yolo_ldac.tv.compress import UNSUPPORTED, check_parts

    reached = {}
    for name in sorted(CRITERIA):
        parts = {"criterion": name, "push": "none", "compensate": "mean"}
        if name in UNSUPPORTED["criterion"]:
            with pytest.raises(LDACError, match=f"criterion={name} cannot apply to a torchvision Faster R-CNN"):
                check_parts(parts)
            continue
        model = copy.deepcopy(tiny)
        built = build_parts({"seed": 0}, parts)
        prot = protected_layers(model)
        dense = measure(model, 128, protected=prot)
        pruner = ChannelPruner(model, built["criterion"], dense, layer_channels(model), prot, imgsz=128,
                               compensate=built["compensate"], root_types=(nn.Conv2d, nn.Linear))
        step = pruner.step(0.3, calib)
        reached[name] = step.reached_ratio
        model.eval()
        assert model.predict(_x(1))[0]["boxes"].shape[-1] == 4  # still a working detector
    assert len(reached) >= 12
    assert all(abs(r - 0.3) <= 0.01 for r in reached.values()), reached


def test_ldac_samples_come_from_the_level_the_roi_pooler_assigns(tiny):
    """Each box's sample is taken on the FPN level torchvision's LevelMapper gives it; J > 0 for separable classes."""
    from yolo_ldac.ldac.sampling import box_samples
    from yolo_ldac.tv.ldac import FPNDiscriminantTerm, box_levels, level_samples

    tiny.eval()
    with torch.no_grad():
        tiny(_x(1))  # the pooler sets its scales on its first call
    pooler = tiny.detector.roi_heads.box_roi_pool
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 128.0, 128.0], [8.0, 8.0, 40.0, 40.0]])
    levels = box_levels(pooler, [boxes])
    k_min = pooler.map_levels.k_min
    import math

    expected = [min(max(math.floor(4 + math.log2(math.sqrt(float((b[2] - b[0]) * (b[3] - b[1]))) / 224) + 1e-6),
                        k_min), pooler.map_levels.k_max) - k_min for b in boxes]
    assert levels.tolist() == expected
    feats = {n: torch.randn(1, 8, 8 // (2 ** i), 8 // (2 ** i)) for i, n in enumerate(pooler.featmap_names)}
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2, 1])}]
    out = level_samples(feats, targets, pooler)
    for (x, y), lvl in zip(out, sorted(set(expected))):
        sel = torch.tensor(expected) == lvl
        stride = int(round(1 / pooler.scales[lvl]))
        ref = box_samples(feats[pooler.featmap_names[lvl]], stride, boxes[sel], torch.zeros(int(sel.sum())))
        assert torch.equal(x, ref) and y.tolist() == (targets[0]["labels"][sel] - 1).tolist()
    # two well separated classes on one level: J > 0, the term is -alpha * J
    name = pooler.featmap_names[0]
    f = torch.zeros(1, 4, 8, 8)
    f[0, 0, :4] = 1.0  # class-1 boxes sit in the top half, where channel 0 is on
    f[0, 1, 4:] = 1.0
    f = f + 0.01 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    small = torch.tensor([[0.0, 0.0, 30.0, 30.0], [60.0, 0.0, 90.0, 30.0], [0.0, 80.0, 30.0, 110.0],
                          [60.0, 80.0, 90.0, 110.0]])
    feats = {n: (f if n == name else torch.zeros(1, 4, 2, 2)) for n in pooler.featmap_names}
    term = FPNDiscriminantTerm(tiny, alpha=0.5)
    loss = term(feats, [{"boxes": small, "labels": torch.tensor([1, 1, 2, 2])}], None)["loss_ldac"]
    assert box_levels(pooler, [small]).tolist() == [0, 0, 0, 0]
    assert term.last_j and term.last_j[0] > 1.0 and float(loss) == pytest.approx(-0.5 * term.last_j[0], rel=1e-5)


# --- the run: compress, train after pruning, reload, ONNX, the CLI -------------------------------------------------
@pytest.mark.slow
def test_compress_trains_after_pruning_reloads_and_exports(tiny, shapes_data, tmp_path):
    from yolo_ldac import YOLOLDAC
    from yolo_ldac.tv.adapter import is_checkpoint, load_checkpoint

    runner = YOLOLDAC(tiny)
    assert type(runner).__name__ == "TorchvisionLDAC"
    res = runner.compress(data=str(shapes_data), ratio=0.3, method="ldac", push="ldac", rounds=2, epochs_per_round=1,
                          finetune_epochs=1, imgsz=128, batch=4, calib_batches=1, lr0=0.01, project=str(tmp_path),
                          name="frcnn", val_steps=False)
    assert abs(res.removed["flops_pct"] - 30.0) <= 1.0
    rep = json.loads((res.run_dir / "report.json").read_text())
    assert rep["optimizer_steps"] == {"round2": 4, "finetune": 4, "total": 8}  # 16 images, batch 4
    assert "loss_ldac" in rep["history"]["round2"][0] and "loss_ldac" not in rep["history"]["finetune"][0]
    assert all(k in rep["after"] for k in ("map50_95", "map50", "flops_g"))
    assert (res.run_dir / "report.md").is_file() and (res.run_dir / "channels.png").is_file()
    assert is_checkpoint(res.best) and is_checkpoint(res.best.with_suffix(".json"))
    a = load_checkpoint(res.best)
    b = load_checkpoint(res.best.with_suffix(".json"))  # pickle-free pair
    ckpt = torch.load(res.best, weights_only=True)
    assert ckpt["meta"]["builder"] == BUILDER
    assert ckpt["state_dict"]["roi_heads.box_head.fc6.weight"].dim() == 2  # torchvision's layout (a Linear)
    x = _x(1, seed=3)
    ref = a.predict(x)
    _same_detections(b.predict(x), ref)
    assert sum(p.numel() for p in a.parameters()) == round(res.after["params_m"] * 1e6, -2) or \
        abs(sum(p.numel() for p in a.parameters()) / 1e6 - res.after["params_m"]) < 1e-3
    # the reloaded model is the runner's model now: val and ONNX export with the parity check
    assert str(runner.source) == str(res.best)
    metrics = runner.val(data=str(shapes_data), imgsz=128, batch=4)
    assert metrics["map50_95"] == pytest.approx(rep["after"]["map50_95"], abs=1e-9)
    onnx = runner.export(format="onnx", verbose=False)
    assert onnx == res.best.with_suffix(".onnx") and onnx.is_file()
    figures = runner.last_export
    assert figures["labels_equal"] and figures["detections"] == figures["onnx_detections"] > 0
    assert figures["max_box_diff_px"] <= 0.05 and figures["max_score_diff"] <= 1e-3


@pytest.mark.slow
def test_cli_prunes_a_builder_name_on_a_yolo_data_yaml(shapes_data, tmp_path, capsys):
    from yolo_ldac.cli import main

    assert main(["info", f"model={BUILDER}", "imgsz=128", "rois=20"]) == 0
    assert "RoIs per image" in capsys.readouterr().out
    code = main(["prune", f"model={BUILDER}", f"data={shapes_data}", "ratio=0.3", "method=l1", "rounds=1", "imgsz=128",
                 "batch=8", "calib_batches=1", "rois=20", "val_steps=False", f"project={tmp_path}", "name=cli"])
    assert code == 0
    rep = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert rep["detector"]["builder"] == BUILDER and abs(rep["removed"]["flops_pct"] - 30) <= 1.0
    assert main(["prune", f"model={BUILDER}", f"data={shapes_data}", "method=px", f"project={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "criterion=px cannot apply to a torchvision Faster R-CNN" in err[0]


def test_lr_scale_auto_on_the_torchvision_path():
    """auto: a quarter of lr0 from trained weights (a checkpoint or weights=), lr0 itself from scratch."""
    from yolo_ldac.tv.compress import train_settings

    assert train_settings({"lr0": 0.02, "lr_scale": "auto"}, trained=True)["lr"] == pytest.approx(0.005)
    assert train_settings({"lr0": 0.02, "lr_scale": "auto"}, trained=False)["lr"] == pytest.approx(0.02)
    assert train_settings({"lr0": 0.02, "lr_scale": 0.5}, trained=True)["lr"] == pytest.approx(0.01)
