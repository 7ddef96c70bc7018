"""LDAC: objective plumbing, single-class data, tracer correctness, distributed statistics, end to end."""

from __future__ import annotations

import csv
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from ultralytics.nn.modules import Conv

from yolo_ldac.ldac.criterion import DiscriminantTraceCriterion as LDACCriterion
from yolo_ldac.ldac.objective import SampleConfig, level_samples, objective_per_level
from yolo_ldac.ldac.stats import DiscriminantStats
from yolo_ldac.pruning.criteria import CRITERIA, build_criterion


def _batch(n_img: int, classes: list[int], size: int = 32) -> dict:
    """Boxes spread over the images: one box per entry of ``classes``."""
    m = len(classes)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(m, 2, generator=g) * 0.5 + 0.25
    wh = torch.full((m, 2), 0.3)
    return {"img": torch.rand(n_img, 3, size, size, generator=g), "bboxes": torch.cat([xy, wh], 1),
            "cls": torch.tensor(classes, dtype=torch.float32).view(-1, 1),
            "batch_idx": torch.arange(m) % n_img}


class ToyDetector(nn.Module):
    """Two Conv branches; only branch ``a`` feeds the head inputs ("feats"), branch ``b`` only the output."""

    def __init__(self, nc: int = 2):
        super().__init__()
        head = nn.Identity()
        head.nc = nc
        self.a, self.b = Conv(3, 8, 3, 2), Conv(3, 8, 3, 2)
        self.model = nn.ModuleList([self.a, self.b, head])
        self.register_buffer("stride", torch.tensor([2.0]))

    def forward(self, x):
        fa, fb = self.a(x), self.b(x)
        return fb.mean(), {"feats": [fa]}


def test_ldac_is_registered():
    assert "ldac" in CRITERIA
    crit = build_criterion("ldac")
    assert crit.needs_data
    from yolo_ldac.parts import resolve_parts
    from yolo_ldac.push import PUSHES

    assert resolve_parts({"method": "ldac"})["criterion"] == "ldac"
    assert PUSHES["ldac"].trains_before_first_step and PUSHES["fade"].trains_before_first_step


def test_branch_that_cannot_affect_j_scores_zero():
    torch.manual_seed(0)
    model = ToyDetector()
    crit = LDACCriterion()
    crit.prepare(model, [_batch(2, [0, 1, 0, 1])])
    sa, sb = crit.scores[model.a.conv], crit.scores[model.b.conv]
    assert torch.isfinite(sa).all() and (sa >= 0).all() and sa.sum() > 0
    assert torch.equal(sb, torch.zeros_like(sb))


def test_single_class_uses_background_without_nan():
    torch.manual_seed(0)
    model = ToyDetector(nc=1)
    crit = LDACCriterion()
    crit.prepare(model, [_batch(2, [0, 0, 0])])
    assert crit._sample_config(model).background > 0
    assert all(torch.isfinite(s).all() for s in crit.scores.values())
    assert crit.level_objective and all(j == j and j > 0 for j in crit.level_objective)  # no NaN, background helps


def test_objective_single_class_without_background_is_zero_not_nan():
    feats = [torch.randn(2, 8, 8, 8, requires_grad=True)]
    samples = level_samples(feats, [4.0], _batch(2, [0, 0]), 1, SampleConfig())
    (j,) = objective_per_level(samples, 1, SampleConfig())
    assert float(j) == 0.0
    j.backward()
    assert torch.isfinite(feats[0].grad).all()


def test_tracer_scores_every_prunable_layer_of_yolo11n(calib_batches):
    from helpers import assert_every_prunable_conv_scored

    crit = assert_every_prunable_conv_scored(LDACCriterion(), calib_batches)
    assert len(crit.level_objective) == 3 and all(j >= 0 for j in crit.level_objective)


def _worker(rank: int, world: int, port: int, xs, ys, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    st = DiscriminantStats(3, xs[0].shape[1])
    st.update(xs[rank], ys[rank])
    st.all_reduce()
    if rank == 0:
        out.put(st.objective(1e-3))
    dist.barrier()
    dist.destroy_process_group()


def test_all_reduce_in_two_process_gloo_group_equals_one_process():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    ys = [torch.randint(0, 3, (40,), generator=g) for _ in range(2)]
    single = DiscriminantStats(3, 6)
    for x, y in zip(xs, ys):
        single.update(x, y)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, xs, ys, out)) for r in range(2)]
    for p in procs:
        p.start()
    value = out.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert value == pytest.approx(single.objective(1e-3), rel=1e-9)


@pytest.fixture(scope="module")
def ldac_run(shapes_data, tmp_path_factory):
    from yolo_ldac import YOLOLDAC

    project = tmp_path_factory.mktemp("ldac")
    # The first version of LDAC, kept for the ablation: the discriminant trace, the J push with the L1, the mean fold.
    return YOLOLDAC("yolov8n.yaml").compress(data=str(shapes_data), ratio=0.5, method="ldac", criterion="ldac_j",
                                             push="ldac", fade=False, compensate="mean", rounds=2,
                                             epochs_per_round=1, finetune_epochs=1, imgsz=128, batch=8,
                                             project=str(project), name="x", plots=True)


def test_ldac_end_to_end_meets_target(ldac_run):
    assert 49 <= ldac_run.removed["flops_pct"] <= 51


def test_ldac_loss_columns_in_results_csv(ldac_run):
    for phase in ("round1", "round2", "finetune"):
        with open(ldac_run.run_dir / phase / "results.csv") as f:
            header = next(csv.reader(f))
        header = [h.strip() for h in header]
        for col in ("train/ld_loss", "train/cov_loss", "train/align_loss"):
            assert col in header, (phase, header)


def test_ldac_checkpoint_and_report_line_per_round(ldac_run):
    report = json.loads((ldac_run.run_dir / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    state = json.loads((ldac_run.run_dir / "state.json").read_text())
    assert [d["name"] for d in state["done"] if d["name"].endswith(".step")] == ["round1.step", "round2.step"]
    for r in report["rounds"]:
        assert len(r["J_per_level"]) == 3 and all(j >= 0 for j in r["J_per_level"])
        assert r["map50_95_before_step"] is not None and r["map50_95_after_step"] is not None


def test_ldac_plots(ldac_run):
    for name in ("ldac_objective.png", "ldac_projection.png", "channels.png"):
        assert (ldac_run.run_dir / name).stat().st_size > 1000, name


def test_weights_tracer_blind_branch_zero_and_scores_finite():
    torch.manual_seed(0)
    model = ToyDetector()
    crit = LDACCriterion(tracer="weights")
    crit.prepare(model, [_batch(2, [0, 1, 0, 1])])
    sa, sb = crit.scores[model.a.conv], crit.scores[model.b.conv]
    assert torch.isfinite(sa).all() and (sa >= 0).all() and sa.sum() > 0
    assert torch.equal(sb, torch.zeros_like(sb))


def test_weights_tracer_on_yolo11n(calib_batches):
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import rewrite_split_blocks

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    rewrite_split_blocks(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    crit = LDACCriterion(tracer="weights")
    crit.prepare(model, calib_batches)
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in crit.scores.values())
    assert sum(float(s.sum()) for s in crit.scores.values()) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # hooks leave the model as it was
    model.eval()
    model(torch.rand(1, 3, 64, 64))  # and it still runs normally


def test_level_assignment_by_size():
    from yolo_ldac.ldac.objective import assigned_level

    boxes = torch.tensor([[0, 0, 32, 32], [0, 0, 100, 100], [0, 0, 300, 300]], dtype=torch.float32)
    assert assigned_level(boxes, [8.0, 16.0, 32.0], 3).tolist() == [0, 1, 2]
    feats = [torch.randn(1, 4, 40, 40), torch.randn(1, 4, 20, 20), torch.randn(1, 4, 10, 10)]
    batch = {"bboxes": torch.tensor([[0.1, 0.1, 0.05, 0.05], [0.5, 0.5, 0.5, 0.5]]), "cls": torch.tensor([[0.], [1.]]),
             "batch_idx": torch.tensor([0, 0])}
    per_level = level_samples(feats, [8.0, 16.0, 32.0], batch, 2, SampleConfig(level_assign=True))
    assert [len(y) for _, y in per_level] == [1, 0, 1]
    every = level_samples(feats, [8.0, 16.0, 32.0], batch, 2, SampleConfig())
    assert [len(y) for _, y in every] == [2, 2, 2]



def test_head_inner_convs_fall_back_to_group_norm(calib_batches):
    """J is measured at the head inputs: the head's own convolutions get no gradient from it, so they must not be
    ranked as worthless (which would prune the box and class branches first)."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_ldac.nn.adapter import protected_layers, rewrite_split_blocks
    from yolo_ldac.pruning.engine import build_graph

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    rewrite_split_blocks(model)
    crit = LDACCriterion()
    crit.prepare(model, calib_batches)
    head = model.model[-1]
    graph = build_graph(model)
    seen = 0
    for group in graph.get_all_groups(ignored_layers=protected_layers(model), root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        if any(root is m for m in head.modules()):
            assert torch.equal(crit.scores[root], torch.zeros_like(crit.scores[root]))  # the raw trace is blind
            scores = crit(group)
            assert torch.isfinite(scores).all() and scores.sum() > 0
            seen += 1
    assert seen > 0
