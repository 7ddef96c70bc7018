"""Run folders (issue 25): ``name=`` stays inside ``project=``, one writer per run folder (a lock), a finished run is
never overwritten, and every output is created with the umask's mode. Each refusal is one line, exit 2, with
nothing written outside ``project=`` and a finished run unchanged (mtimes and sha256)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> int:
        os.umask(mask)
        return mask

    yield set_mask
    os.umask(saved)


# ------------------------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_take_the_umask_mode(tmp_path, umask, mask):
    """mkstemp creates 0600; an atomically written output gets 0666 less the umask, as open() would give it."""
    from yolo_ldac.utils.io import AtomicPath, atomic_save, atomic_write_bytes, atomic_write_json, current_umask

    umask(mask)
    assert current_umask() == mask
    want = 0o666 & ~mask
    paths = [atomic_write_json(tmp_path / "state.json", {"a": 1}), atomic_write_bytes(tmp_path / "b.bin", b"x"),
             atomic_save(tmp_path / "c.pt", lambda p: p.write_bytes(b"y"))]
    (AtomicPath(tmp_path) / "d.pt").write_bytes(b"z")
    paths.append(tmp_path / "d.pt")
    plain = tmp_path / "plain.txt"
    plain.write_text("log")
    for p in [*paths, plain]:
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["b.bin", "c.pt", "d.pt", "plain.txt", "state.json"]


# --------------------------------------------------------------------------------------------------- helpers
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import ultralytics  # noqa: E402,F401  (its log handler binds sys.stdout at import: not a test's captured stream)

from yolo_ldac import YOLOLDAC  # noqa: E402
from yolo_ldac.cli import main  # noqa: E402
from yolo_ldac.errors import LDACError  # noqa: E402
from yolo_ldac.utils.lock import LOCK_FILE, RunLock  # noqa: E402

FAST_ARGS = ["imgsz=64", "batch=8", "plots=False"]
PRUNE_ARGS = ["ratio=0.2", "method=l1", "rounds=1", "val_steps=False", *FAST_ARGS]
DRIVER = Path(__file__).with_name("resume_driver.py")


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: (mtime, sha256)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli_error(argv: list[str], capfd, match: str) -> str:
    """Run the CLI in-process: exit 2 and exactly one line ``yolo-ldac: error: ...`` matching ``match``, no traceback."""
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("yolo-ldac: error: "), err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the helper process ended ({proc.returncode}) before {path}:\n{err[-3000:]}")
        if time.monotonic() - t > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


HOLD_LOCK = """
import sys, time
from yolo_ldac.utils.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
open(sys.argv[2], "w").write("held")
time.sleep(600)
"""


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path):
    """A live other process holding ``folder``'s lock; yields its pid. Killed (SIGKILL) on exit."""
    marker = folder.parent / f".{folder.name}.held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), str(marker)], env=env_with_repo(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, proc, timeout=60)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        marker.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def finished_run(shapes_data, tmp_path_factory):
    """A finished compress run (no training: rounds=1, no epochs) started with no mode at all, under umask 022."""
    project = tmp_path_factory.mktemp("finished") / "runs"
    saved = os.umask(0o022)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = main(["model=yolov8n.yaml", f"data={shapes_data}", "epochs_per_round=0", "finetune_epochs=0",
                       *PRUNE_ARGS, f"project={project}", "name=done"])
    finally:
        os.umask(saved)
    return SimpleNamespace(rc=rc, err=err.getvalue(), project=project, run_dir=project / "done")


# ---------------------------------------------------------------------------------------------- no mode given
def test_no_mode_runs_the_default_and_says_so(finished_run):
    assert finished_run.rc == 0, finished_run.err
    notices = [ln for ln in finished_run.err.splitlines() if "no mode given" in ln]
    assert len(notices) == 1 and "running 'compress' (the default; modes: compress, prune" in notices[0], \
        finished_run.err
    assert json.loads((finished_run.run_dir / "report.json").read_text())["mode"] == "compress"
    assert not (finished_run.run_dir / LOCK_FILE).exists()  # released at the end


def test_finished_outputs_have_the_umask_mode(finished_run):
    """best.pt, best.json, best.safetensors, report.json, state.json: 0644 under umask 022, as log.txt."""
    run = finished_run.run_dir
    for rel in ("weights/best.pt", "weights/best.json", "weights/best.safetensors", "report.json", "report.md",
                "state.json", "log.txt"):
        assert stat.S_IMODE((run / rel).stat().st_mode) == 0o644, (rel, oct((run / rel).stat().st_mode))


# ------------------------------------------------------------------------------------------------------ name=
@pytest.mark.parametrize("name", ["../../escape", "ABS", "a/b", "..", ".", "a\\b"])
def test_name_is_one_folder_name(name, shapes_data, tmp_path, capfd):
    project = tmp_path / "p" / "runs"
    if name == "ABS":
        name = str(tmp_path / "abs")
    line = cli_error(["prune", "model=yolov8n.yaml", f"data={shapes_data}", *PRUNE_ARGS, f"project={project}",
                      f"name={name}"], capfd, r"name must be one folder name inside project= .*put the path in "
                                              r"project= instead")
    assert repr(name) in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], list(tmp_path.rglob("*"))  # nothing, anywhere
    with pytest.raises(LDACError, match="one folder name"):
        YOLOLDAC("yolov8n.yaml").prune(data=str(shapes_data), project=str(project), name=name, ratio=0.2)
    assert list(tmp_path.rglob("*")) == []


def test_project_may_be_any_path(tmp_path):
    from yolo_ldac.utils.rundir import open_run_dir

    run_dir, lock = open_run_dir(tmp_path / "a" / ".." / "deep" / "runs", "x", exist_ok=False)
    with lock:
        assert run_dir == (tmp_path / "deep" / "runs" / "x").resolve() and (run_dir / LOCK_FILE).is_file()
    assert not (run_dir / LOCK_FILE).exists()


# -------------------------------------------------------------------------------------------- a finished run
def test_exist_ok_never_overwrites_a_finished_run(finished_run, shapes_data, tmp_path, capfd):
    run = finished_run.run_dir
    before = snapshot(run)
    assert "weights/best.pt" in before and "report.json" in before
    argv = ["prune", "model=yolov8n.yaml", f"data={shapes_data}", *PRUNE_ARGS, "exist_ok=True"]
    cli_error([*argv, f"project={finished_run.project}", "name=done"], capfd,
              r"holds a finished run \(weights/best.pt.*exist_ok=True never overwrites one: to keep it, give a new "
              r"name=; to replace it, remove that folder first")
    # the same run reached through a symlinked folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "link").symlink_to(run, target_is_directory=True)
    cli_error([*argv, f"project={other}", "name=link"], capfd, r"link \(-> .*done\) holds a finished run")
    with pytest.raises(LDACError, match="holds a finished run"):
        YOLOLDAC("yolov8n.yaml").compress(data=str(shapes_data), ratio=0.2, project=str(finished_run.project),
                                          name="done", exist_ok=True, imgsz=64, batch=8)
    assert snapshot(run) == before
    assert sorted(p.name for p in other.iterdir()) == ["link"]


def test_exist_ok_reuses_an_unfinished_folder(tmp_path):
    from yolo_ldac.utils.rundir import open_run_dir

    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "state.json").write_text(json.dumps({"status": "failed"}))
    run_dir, lock = open_run_dir(tmp_path / "runs", "x", exist_ok=True)
    lock.release()
    assert run_dir == (tmp_path / "runs" / "x").resolve()


# ------------------------------------------------------------------------------------------------- the lock
def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["since"]
    with pytest.raises(LDACError, match=rf"in use by another yolo-ldac process \(pid {os.getpid()} on host "
                                        rf"{re.escape(socket.gethostname())} since .*\): wait for it to end"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path):
        pass


def test_refusal_waits_for_the_holder_to_write_its_pid(tmp_path):
    """Two writers started at once: the second may find the flock taken before the first has written its pid.
    The refusal then waits a moment for it and names the holder, rather than 'a process that has not written'."""
    import fcntl
    import threading

    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, file still empty
    writer = threading.Timer(0.3, lambda: os.write(fd, json.dumps({"pid": 4242, "host": "h"}).encode()))
    writer.start()
    try:
        with pytest.raises(LDACError, match=r"\(pid 4242 on host h\)"):
            RunLock(tmp_path).acquire()
    finally:
        writer.join()
        os.close(fd)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    """A lock file left by a process that is gone (SIGKILL: no flock held any more, its pid dead)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "since": "earlier"}))
    with RunLock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_lock_held_by_a_live_process_then_killed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with lock_held_elsewhere(folder) as pid:
        with pytest.raises(LDACError, match=rf"\(pid {pid} on host "):
            RunLock(folder).acquire()
    with RunLock(folder) as lock:  # SIGKILLed: its lock file stays, its flock is gone
        assert lock.took_over and lock.took_over["pid"] == pid


def test_second_writer_of_a_run_folder_is_refused(shapes_data, tmp_path, capfd):
    project = tmp_path / "runs"
    folder = project / "busy"
    folder.mkdir(parents=True)
    (folder / "note.txt").write_text("the other run's")
    before = snapshot(folder)
    with lock_held_elsewhere(folder) as pid:
        before_lock = snapshot(folder)
        line = cli_error(["prune", "model=yolov8n.yaml", f"data={shapes_data}", *PRUNE_ARGS, f"project={project}",
                          "name=busy", "exist_ok=True"], capfd,
                         rf"the run folder .*busy is in use by another yolo-ldac process \(pid {pid} on host .* since ")
        assert "wait for it to end, or give another name=" in line
        assert snapshot(folder) == before_lock
    assert {k: v for k, v in snapshot(folder).items() if k != LOCK_FILE} == before
    assert sorted(p.name for p in project.iterdir()) == ["busy"]


@pytest.mark.slow
def test_two_processes_started_at_once_one_runs_one_refuses(shapes_data, tmp_path):
    project = tmp_path / "runs"
    argv = [sys.executable, "-m", "yolo_ldac.cli", "prune", "model=yolov8n.yaml", f"data={shapes_data}", *PRUNE_ARGS,
            f"project={project}", "name=same", "exist_ok=True", "workers=0"]
    procs = [subprocess.Popen(argv, env=env_with_repo(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.communicate()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], [(rc, err[-2000:]) for rc, (_, err) in results]
    err = next(e for rc, (_, e) in results if rc == 2)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"is in use by another yolo-ldac process \(pid \d+ on host|holds a finished run", lines[0]), lines
    assert sorted(p.name for p in project.iterdir()) == ["same"]
    assert (project / "same" / "weights" / "best.pt").is_file() and not (project / "same" / LOCK_FILE).exists()


@pytest.mark.slow
def test_resume_while_the_run_is_running_is_refused(shapes_data, tmp_path, capfd):
    """resume=True picks the newest unfinished run; while its process runs that is refused (one line, its pid);
    once that process is killed, resume takes its stale lock over and finishes the run."""
    project = tmp_path / "runs"
    marker = tmp_path / "paused"
    kwargs = dict(model="yolov8n.yaml", data=str(shapes_data), ratio=0.2, method="l1", rounds=1, val_steps=False,
                  imgsz=64, batch=8, plots=False, project=str(project), name="live")
    spec = {"kwargs": kwargs, "mode": "prune", "pause": {"phase": "validate_final", "marker": str(marker)}}
    proc = subprocess.Popen([sys.executable, str(DRIVER), json.dumps(spec)], env=env_with_repo(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker, proc)
        run = project / "live"
        before = snapshot(run)
        cli_error(["prune", "resume=True", f"project={project}"], capfd,
                  rf"the run folder .*live is in use by another yolo-ldac process \(pid {proc.pid} on host .*\): it "
                  r"is still running; resume it once it has stopped")
        cli_error(["prune", f"resume={run}"], capfd, rf"\(pid {proc.pid} on host ")
        assert snapshot(run) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    capfd.readouterr()
    assert main(["prune", "resume=True", f"project={project}"]) == 0, capfd.readouterr().err
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "finished" and state["resumed"], state
    assert (run / "weights" / "best.pt").is_file() and not (run / LOCK_FILE).exists()
