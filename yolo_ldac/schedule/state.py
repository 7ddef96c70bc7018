"""``state.json``: what a run has done, written atomically after every phase, read back by ``resume=``.

Example:
    >>> import tempfile
    >>> st = RunState.new(tempfile.mkdtemp(), mode="prune", settings={"seed": 0}, source="m.pt", phases=["prepare"])
    >>> st.next_phase()
    'prepare'
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from yolo_ldac.errors import LDACError
from yolo_ldac.utils.io import atomic_write_json

STATE_FILE = "state.json"
STATE_VERSION = 1
# Settings that may differ when a run is resumed: they change where and how verbosely it runs, not what it computes.
RESUME_MAY_CHANGE = frozenset({"device", "workers", "verbose", "resume", "exist_ok", "trusted"})


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class RunState:
    """A run's phases (planned and done), settings, seeds and the records later phases and the report need."""

    run_dir: str
    mode: str
    settings: dict
    source: str
    phases: list[str]
    done: list[dict] = field(default_factory=list)  # {"name", "checkpoint", "seconds", "ended"}
    status: str = "running"  # running | stopped | failed | finished
    current: str | None = None
    seed: int = 0
    record: dict = field(default_factory=dict)
    resumed: list[dict] = field(default_factory=list)
    created: str = field(default_factory=_now)
    version: int = STATE_VERSION

    @classmethod
    def new(cls, run_dir: str | Path, mode: str, settings: dict, source: str, phases: list[str]) -> "RunState":
        return cls(str(Path(run_dir).resolve()), mode, _json_safe(settings), str(source), list(phases),
                   seed=int(settings.get("seed") or 0))

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / STATE_FILE

    def save(self) -> Path:
        return atomic_write_json(self.path, asdict(self))

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunState":
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            raise LDACError(f"'{run_dir}' is not a yolo-ldac run directory (no {STATE_FILE})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise LDACError(f"{path} has state version {data.get('version')!r}; this yolo-ldac reads "
                                f"{STATE_VERSION}")
            data["run_dir"] = str(Path(run_dir).resolve())  # the folder may have been moved
            return cls(**data)
        except LDACError:
            raise
        except (ValueError, TypeError) as e:
            raise LDACError(f"{path} is not a readable run state ({type(e).__name__}: {e})") from None

    # --- progress ------------------------------------------------------------------------------------------
    @property
    def done_names(self) -> list[str]:
        return [d["name"] for d in self.done]

    def next_phase(self) -> str | None:
        done = set(self.done_names)
        return next((p for p in self.phases if p not in done), None)

    def last_checkpoint(self) -> Path | None:
        for d in reversed(self.done):
            if d.get("checkpoint"):
                return Path(self.run_dir) / d["checkpoint"]
        return None

    def phase_index(self, name: str) -> int:
        return self.phases.index(name)

    def phase_seed(self, name: str) -> int:
        """The seed a phase starts from: the same whether the run was interrupted or not."""
        return self.seed * 1000 + self.phase_index(name)

    def mark_done(self, name: str, checkpoint: Path | None, seconds: float) -> None:
        rel = str(Path(checkpoint).resolve().relative_to(Path(self.run_dir))) if checkpoint else None
        self.done.append({"name": name, "checkpoint": rel, "seconds": round(seconds, 2), "ended": _now()})
        self.current = None
        self.save()

    def check_resume_settings(self, overrides: dict) -> None:
        """Raise when ``overrides`` asks for a setting the run was not started with (one line naming them)."""
        conflicts = []
        for key, value in overrides.items():
            if key in RESUME_MAY_CHANGE or value is None:
                continue
            if key == "model":
                if str(value) != self.source and Path(str(value)).resolve() != Path(self.source).resolve():
                    conflicts.append(f"model={value} (the run's: {self.source})")
                continue
            if key not in self.settings or _json_safe(value) != self.settings[key]:
                conflicts.append(f"{key}={value} (the run's: {self.settings.get(key)!r})")
        if conflicts:
            raise LDACError(f"resume takes every setting from {self.path}: {', '.join(conflicts)} differ; start a "
                            "new run to change them")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def find_resumable(project: str | Path) -> Path:
    """The newest run under ``project`` whose state is not finished (``resume=True``)."""
    project = Path(project)
    candidates = []
    if project.is_dir():
        for state in project.glob(f"*/{STATE_FILE}"):
            try:
                status = json.loads(state.read_text(encoding="utf-8")).get("status")
            except (OSError, ValueError):
                continue
            if status != "finished":
                candidates.append((state.stat().st_mtime, state.parent))
    if not candidates:
        raise LDACError(f"resume=True: no unfinished yolo-ldac run under '{project}' (pass resume=RUN_DIR, or start "
                        "a new run)")
    return max(candidates)[1]
