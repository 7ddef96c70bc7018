"""Test driver for interrupted runs: runs (or resumes) a tiny compression and SIGKILLs itself at a chosen point.

    python tests/resume_driver.py SPEC_JSON

SPEC_JSON: {"kwargs": {...compress kwargs...}, "mode": "compress", "resume": null | RUN_DIR,
            "kill": null | "PHASE" (at the start of that phase) | "PHASE@EPOCH" (after that epoch of a training phase),
            "pause": null | {"phase": PHASE, "marker": PATH} (at the start of that phase: write the pid to PATH, then
            sleep until killed: a run that is still running, for the lock tests)}
The kill is the test-only callback the resume tests need: SIGKILL leaves no chance to clean up, like a crash.
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(1)
    from yolo_ldac import YOLOLDAC

    kill = spec.get("kill")
    phase_kill, epoch_kill = (kill.split("@") + [None])[:2] if kill else (None, None)
    state = {"compressor": None}

    pause = spec.get("pause") or {}

    def at_phase_start(comp) -> None:
        state["compressor"] = comp
        if pause and comp.phase == pause["phase"]:
            import time
            from pathlib import Path

            Path(pause["marker"]).write_text(str(os.getpid()))
            time.sleep(600)
        if epoch_kill is None and comp.phase == phase_kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def at_epoch_end(trainer) -> None:
        comp = state["compressor"]
        if epoch_kill is not None and comp is not None and comp.phase == phase_kill and trainer.epoch == int(epoch_kill):
            os.kill(os.getpid(), signal.SIGKILL)

    runner = YOLOLDAC(spec["kwargs"].pop("model", "yolo11n.yaml"))
    runner.add_callback("on_phase_start", at_phase_start)
    runner.add_callback("on_fit_epoch_end", at_epoch_end)
    kwargs = dict(spec["kwargs"])
    if spec.get("resume"):
        kwargs = {"resume": spec["resume"]}
    getattr(runner, spec.get("mode", "compress"))(**kwargs)


if __name__ == "__main__":
    main()
