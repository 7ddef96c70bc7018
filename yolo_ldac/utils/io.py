"""Atomic file writes: a reader (or a crash) never sees half a file.

Every artifact of a run is written to a temporary file beside its final path and moved into place with
``os.replace``; a failure removes the temporary file.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_json(p, {"x": 1}).read_text()
    '{\\n  "x": 1\\n}\\n'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError:
        raise
    except Exception as e:
        # torch.save reports a full disk as RuntimeError ("iostream error", "unexpected pos"): say what it was.
        if _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    """Whether ``folder``'s file system has less than ``margin`` bytes left for this user."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


class AtomicPath(type(Path())):
    """A path whose ``write_bytes`` / ``write_text`` are atomic: a full disk never leaves half a file under its name.

    Handed to code that writes through ``path.write_bytes`` (Ultralytics' trainer saves its per-epoch weights so).

    Example:
        >>> import tempfile
        >>> p = AtomicPath(tempfile.mkdtemp()) / "w.pt"
        >>> p.write_bytes(b"abc"), p.read_bytes()
        (3, b'abc')
    """

    def write_bytes(self, data) -> int:  # noqa: D102
        atomic_write_bytes(Path(self), bytes(data))
        return len(data)

    def write_text(self, data: str, encoding: str | None = None, errors: str | None = None,
                   newline: str | None = None) -> int:  # noqa: D102
        atomic_write_bytes(Path(self), data.encode(encoding or "utf-8", errors or "strict"))
        return len(data)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (a run not yet written)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def atomic_save(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` (e.g. ``lambda p: torch.save(obj, p)``), then move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)
