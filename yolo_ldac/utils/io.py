"""Atomic file writes: a reader (or a crash) never sees half a file.

Every artifact of a run is written to a temporary file beside its final path and moved into place with
``os.replace``; a failure removes the temporary file. The file gets the mode a plain ``open(path, "w")`` would give
it (``0o666`` less the umask, i.e. 0644 under umask 022), not ``tempfile.mkstemp``'s private 0600.

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
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600: give the file the umask's mode
        finally:
            os.close(fd)
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


def current_umask() -> int:
    """This process's umask (read from ``/proc/self/status`` where it is there, else set and restored at once).

    Example:
        >>> 0 <= current_umask() <= 0o777
        True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
