"""Run folders: ``project/name``, where ``name`` is one folder name, a new run never lands in a finished one, and
one process at a time writes a folder (:class:`yolo_ldac.utils.lock.RunLock`).

* ``name=`` is one folder name (no ``/``, no ``..``, not absolute): a run stays inside ``project=`` (which may be
  any path). :func:`check_run_name` runs with the other key checks, before anything is written.
* ``exist_ok=False`` (the default) creates ``project/name``, or ``name2``, ``name3``, ... with an atomic ``mkdir``:
  two runs started at once get two folders.
* ``exist_ok=True`` reuses ``project/name``, unless it holds a finished run (its ``weights/best.pt``, its report or
  a finished ``state.json``): that is refused with one line, as Ultralytics' resume refuses a finished run. A
  symlinked folder is judged by what it points to.
* The folder is locked for the run's whole life; a second writer (a second ``exist_ok=True`` run, a ``resume=``
  of a run that is still running) is refused with one line naming the holder.

Example:
    >>> import tempfile
    >>> project = tempfile.mkdtemp()
    >>> run_dir, lock = open_run_dir(project, "exp", exist_ok=False)
    >>> run_dir.name, lock.held
    ('exp', True)
    >>> lock.release()
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from yolo_ldac.errors import LDACError
from yolo_ldac.utils.lock import RunLock

STATE_FILE = "state.json"  # yolo_ldac.schedule.state.STATE_FILE (not imported: that package imports torch)


def check_run_name(name: Any) -> None:
    """Raise :class:`LDACError` unless ``name`` is one folder name, so that ``project/name`` stays in ``project``.

    Example:
        >>> check_run_name("exp")
        >>> check_run_name("../escape")
        Traceback (most recent call last):
        yolo_ldac.errors.LDACError: name must be one folder name inside project= (no '/', no '..', not an absolute path), got '../escape'; put the path in project= instead
    """
    if not isinstance(name, str) or not name.strip():
        raise LDACError(f"name must be a folder name (a non-empty string), got {name!r}")
    bad = (os.path.isabs(name) or "/" in name or "\\" in name or (os.altsep and os.altsep in name)
           or name.strip() in (".", "..") or "\0" in name)
    if bad:
        raise LDACError(f"name must be one folder name inside project= (no '/', no '..', not an absolute path), got "
                        f"{name!r}; put the path in project= instead")


def finished_marks(run_dir: str | Path) -> list[str]:
    """What makes ``run_dir`` a finished run: the files it holds that only a finished run has, or a finished state.

    Example:
        >>> finished_marks("no/such/run")
        []
    """
    run_dir = Path(run_dir)
    marks = [rel for rel in ("weights/best.pt", "weights/best.safetensors", "report.json") if (run_dir / rel).is_file()]
    try:
        if json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8")).get("status") == "finished":
            marks.append(f"{STATE_FILE} (status finished)")
    except (OSError, ValueError, AttributeError):
        pass
    return marks


def refuse_finished(run_dir: str | Path, given: str | Path | None = None) -> None:
    """Raise :class:`LDACError` when ``run_dir`` holds a finished run (``exist_ok=True`` never overwrites one).

    Example:
        >>> refuse_finished("no/such/run")
    """
    marks = finished_marks(run_dir)
    if marks:
        shown = f"{given} (-> {run_dir})" if given is not None and Path(given) != Path(run_dir) else str(run_dir)
        raise LDACError(f"{shown} holds a finished run ({', '.join(marks[:2])}) and exist_ok=True never overwrites one: "
                        "to keep it, give a new name=; to replace it, remove that folder first")


def _candidates(base: Path):
    """``base``, then ``base2``, ``base3``, ... (Ultralytics' ``increment_path`` names)."""
    yield base
    for n in range(2, 10000):
        yield base.with_name(f"{base.name}{n}")


def open_run_dir(project: str | Path, name: str, exist_ok: bool, keep_finished: bool = True,
                 what: str = "run folder") -> tuple[Path, RunLock]:
    """Create (or, with ``exist_ok``, reuse) ``project/name``, check that it is writable and lock it.

    Args:
        project: the folder of runs (any path; created when missing).
        name: one folder name (:func:`check_run_name`).
        exist_ok: reuse ``project/name`` instead of incrementing the name.
        keep_finished: refuse to reuse a folder holding a finished run (:func:`refuse_finished`).
        what: how messages name the folder.

    Returns:
        The resolved folder and its held :class:`RunLock` (release it when the run ends).

    Raises:
        LDACError: a bad name, a finished run in the way, an unwritable project, or a folder another process holds.
    """
    check_run_name(name)
    base = Path(project) / name
    created = False
    try:
        if exist_ok:
            run_dir = base.resolve()
            if keep_finished:
                refuse_finished(run_dir, base)
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            Path(project).mkdir(parents=True, exist_ok=True)
            for candidate in _candidates(base):
                try:
                    candidate.mkdir()  # atomic: of two runs started at once, each gets its own folder
                except FileExistsError:
                    continue
                run_dir, created = candidate.resolve(), True
                break
            else:
                raise LDACError(f"project={project}: {base} and 9998 numbered folders after it exist; give another "
                                "name=")
    except OSError as e:
        raise LDACError(f"project={project}: cannot create the run directory ({e.strerror or e})") from e
    try:
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if created:  # a failed run leaves no run directory of its own behind
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise LDACError(f"project={project}: cannot write the run directory {run_dir} "
                        f"({e.strerror or type(e).__name__})") from e
    hint = "wait for it to end, or give another name=" if exist_ok else "give another name="
    lock = RunLock(run_dir, what=what, hint=hint)
    try:
        lock.acquire()
        if keep_finished and exist_ok:
            refuse_finished(run_dir, base)  # finished while we waited for the folder
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    return run_dir, lock


def lock_run_dir(run_dir: str | Path, hint: str = "wait for it to end") -> RunLock:
    """Lock an existing run folder (``resume=``); raise :class:`LDACError` naming the process that holds it.

    Example:
        >>> import tempfile
        >>> lock_run_dir(tempfile.mkdtemp()).release()
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LDACError(f"'{run_dir}' is not a yolo-ldac run directory (no such folder)")
    try:
        return RunLock(run_dir, hint=hint).acquire()
    except OSError as e:
        raise LDACError(f"cannot lock the run directory {run_dir} ({e.strerror or e})") from e


__all__ = ["check_run_name", "finished_marks", "lock_run_dir", "open_run_dir", "refuse_finished"]
