"""Multi-GPU readiness, checked on CPU: the trainers rebuilt exactly as Ultralytics' DDP worker script rebuilds them,
and LDAC's pooled statistics all-reduced over a 2-process gloo group."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from yolo_ldac.ldac.pooled import PooledObjective

pytestmark = pytest.mark.slow


# --- the trainer, through Ultralytics' own DDP file ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_file(shapes_data, calib_batches, tmp_path_factory):
    """A PushTrainer with LDAC's push (handoff release) on a pruned tiny YOLO11n, written by Ultralytics'
    ``generate_ddp_file``: the worker script and the cloudpickled state its workers load."""
    from helpers import channel_pruner, tiny_pruned_model
    from ultralytics.utils.dist import generate_ddp_file

    from yolo_ldac.engine.trainer import PushTrainer
    from yolo_ldac.push import build_push

    model = tiny_pruned_model("yolo11n.yaml", nc=3)
    n_params = sum(p.numel() for p in model.parameters())
    push = build_push("ldac", alpha=0.05, beta=0.01, check=0.0)
    push.prepare(model, channel_pruner(model, "l2"), 0.2, calib_batches)
    assert push.planned()
    project = tmp_path_factory.mktemp("ddp")
    overrides = dict(data=str(shapes_data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", plots=False,
                     project=str(project), name="phase", exist_ok=True, seed=0)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    trainer = PushTrainer(model=model, overrides=overrides, push=push, lr_scale=0.5)
    assert trainer.model is model  # what the launcher pickles
    script = generate_ddp_file(trainer)
    yield trainer, script, n_params, push
    os.remove(script)
    os.remove(script[:-3] + ".pt")


def test_state_rebuilds_trainer_with_push_and_settings(ddp_file):
    from ultralytics.utils import DEFAULT_CFG_DICT
    from ultralytics.utils.patches import torch_load

    from yolo_ldac.engine.trainer import PushTrainer, _push_batch_end, _push_epoch_start

    parent, script, n_params, push = ddp_file
    state = torch_load(script[:-3] + ".pt", map_location="cpu")  # as the worker script loads it
    cfg = DEFAULT_CFG_DICT.copy()
    cfg.update(save_dir="")
    trainer = state["trainer"](cfg=cfg, overrides=state["args"], _callbacks=state["callbacks"])
    trainer.model = state["model"]
    assert state["trainer"] is PushTrainer
    assert trainer.lr_scale == 0.5 and trainer.final is False and trainer.resume_from is None
    assert type(trainer.push) is type(push) and trainer.push is not push  # a copy that travelled
    assert trainer.push.planned() == push.planned()
    assert trainer.callbacks["on_train_epoch_start"].count(_push_epoch_start) == 1  # not registered twice
    assert trainer.callbacks["on_train_batch_end"].count(_push_batch_end) == 1
    assert sum(p.numel() for p in trainer.model.parameters()) == n_params
    assert str(trainer.save_dir) == str(parent.save_dir)


def test_worker_script_trains_pruned_model_with_push_loss(ddp_file):
    """Runs the very script Ultralytics' launcher starts on every GPU (here one process on CPU)."""
    from yolo_ldac.safe_load import load_model

    trainer, script, n_params, _ = ddp_file
    run = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600,
                         cwd=str(trainer.save_dir.parent))
    assert run.returncode == 0, run.stderr[-3000:]
    weights = trainer.save_dir / "weights" / "epoch_last.pt"
    assert weights.is_file()
    assert sum(p.numel() for p in load_model(weights).parameters()) == n_params
    with open(trainer.save_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = {k.strip(): v for k, v in rows[0].items()}
    assert float(row["train/ld_loss"]) < 0  # LDACDetectionLoss was built in the worker: -J of the pooled sums


# --- pooled statistics over a gloo group ---------------------------------------------------------------------------
def _batches():
    """Three batches of 2-D samples of 3 classes, each split between two ranks (rank 1 gets none of the second)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n0, n1 in ((7, 5), (6, 0), (4, 9)):
        x = torch.randn(n0 + n1, 4, generator=g, dtype=torch.float64) * 2
        y = torch.randint(0, 3, (n0 + n1,), generator=g)
        out.append((x, y, n0))
    return out


def _pooled_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        obj = PooledObjective(3, momentum=0.5)
        for x, y, n0 in _batches():
            part = slice(0, n0) if rank == 0 else slice(n0, None)
            xr = x[part].clone().requires_grad_(True)
            j = obj(xr, y[part])
            j.backward()
        # plain lists: a tensor in a queue is shared memory that can vanish when this process exits
        queue.put((rank, float(j), *(t.tolist() for t in (obj.counts, obj.sums, obj.sq, xr.grad))))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_pooled_sums_all_reduced_over_gloo_equal_one_process_over_union():
    single = PooledObjective(3, momentum=0.5)
    for x, y, _ in _batches():
        xu = x.clone().requires_grad_(True)
        j_single = single(xu, y)
        j_single.backward()
    last_n0 = _batches()[-1][2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_pooled_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r[0], r[1:]) for r in (queue.get(timeout=120), queue.get(timeout=120)))
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    for rank, (j, *lists) in results.items():
        counts, sums, sq, grad = (torch.tensor(v, dtype=torch.float64) for v in lists)
        assert torch.equal(counts, single.counts)  # every rank holds the union's pooled sums
        torch.testing.assert_close(sums, single.sums, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sq, single.sq, rtol=1e-12, atol=1e-12)
        assert j == pytest.approx(float(j_single.detach()), rel=1e-10)
        rows = slice(0, last_n0) if rank == 0 else slice(last_n0, None)
        torch.testing.assert_close(grad, xu.grad[rows], rtol=1e-9, atol=1e-12)  # its own samples' share


# --- a whole compress through Ultralytics' multi-GPU launch path ---------------------------------------------------
def test_compress_through_the_ddp_launch_path(shapes_data, tmp_path, monkeypatch):
    """The launching side of ``device=0,1`` on CPU: every training phase's trainer is marked as a DDP launcher, so
    Ultralytics' ``train()`` removes the phase folder, writes the worker script (``generate_ddp_command``) and starts
    it; ``torch.distributed.run`` is replaced by one plain process running that script (CPU has no NCCL ranks). The
    run must train the pruned model in the worker, load its weights back and record the worker's schedule."""
    import json

    import ultralytics.engine.trainer as ultra_trainer

    from yolo_ldac import YOLOLDAC
    from yolo_ldac.engine import trainer as ours

    real_run = subprocess.run
    launched = []

    def fake_run(cmd, *args, **kwargs):
        if isinstance(cmd, list) and "torch.distributed.run" in cmd:
            launched.append(cmd)
            return real_run([sys.executable, cmd[-1]], check=True)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(ultra_trainer.subprocess, "run", fake_run)
    init = ours.PushTrainer.__init__

    def launcher_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.ddp = True  # the launching process, as with device=0,1 (the worker script's process is not patched)

    monkeypatch.setattr(ours.PushTrainer, "__init__", launcher_init)
    result = YOLOLDAC("yolo11n.yaml").compress(data=str(shapes_data), ratio=0.3, method="l2", push="ldac", rounds=1,
                                               epochs_per_round=1, finetune_epochs=1, imgsz=64, batch=8,
                                               lr_scale=0.5, project=str(tmp_path), name="ddp", ld_check=0.0)
    assert result is not None and result.best.is_file()
    state = json.loads((result.run_dir / "state.json").read_text())
    record = state["record"]
    assert len(launched) == 2  # round1.push and finetune, each through the launcher
    # the launching process trained nothing itself: its steps and lr come from what the worker wrote
    assert record["optimizer_steps"]["round1"] > 0 and record["optimizer_steps"]["finetune"] > 0
    worker = json.loads((result.run_dir / "finetune" / "schedule.json").read_text())
    assert record["train_schedule"]["finetune"]["lr0"] == worker["lr0"] and worker["updates"] > 0
    with open(result.run_dir / "round1" / "results.csv") as f:
        header = next(csv.reader(f))
    assert "train/ld_loss" in [h.strip() for h in header]  # the worker trained with the push loss
