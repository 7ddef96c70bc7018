"""One writer per run folder: an exclusive lock file holding the writer's pid, host and start time.

The lock is ``.yolo-ldac.lock`` in the folder, held with ``flock`` on an open file for as long as the writer runs
and removed when it ends. A writer killed outright (SIGKILL, a power cut) leaves the file behind, but not the
``flock``: the next writer takes such a stale lock over, with a notice naming the process that left it. Where the
file system has no ``flock``, a lock whose pid is dead on this host is stale. A second writer while the first one
runs gets one line naming it (pid, host, since when).

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with RunLock(folder) as lock:
    ...     sorted(lock.holder())
    ['host', 'pid', 'since']
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from yolo_ldac.errors import LDACError

LOCK_FILE = ".yolo-ldac.lock"


def _flock(fd: int) -> bool | None:
    """Take an exclusive ``flock`` on ``fd`` without waiting: True taken, False held elsewhere, None unsupported."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ...: the file system cannot lock


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host.

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 123 on host h since 2026-12-03T14:00:00+00:00`` (the parts the lock file has).

    Example:
        >>> describe_holder({"pid": 7, "host": "box", "since": "2026-12-03T14:00:00+00:00"})
        'pid 7 on host box since 2026-12-03T14:00:00+00:00'
    """
    if not info:
        return "a process that has not written its pid yet"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
            + (f" since {info['since']}" if info.get("since") else ""))


class RunLock:
    """An exclusive lock on ``folder`` (a file ``.yolo-ldac.lock`` in it); a context manager.

    Args:
        folder: the run folder (it must exist).
        what: how the refusal names the folder's use, i.e. ``"run folder"``.
        hint: what the refusal suggests, i.e. ``"give another name="``.

    Raises:
        LDACError: another live process holds the lock (the message names it).
    """

    def __init__(self, folder: str | Path, what: str = "run folder", hint: str = "wait for it to end"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what, self.hint = what, hint
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the stale holder this lock replaced, if any

    # --- the lock file -------------------------------------------------------------------------------------
    def _read(self, fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 4096).decode("utf-8", "replace")
            info = json.loads(text) if text.strip() else {}
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its holder (``{}`` when there is none)."""
        if self._fd is not None:
            return self._read(self._fd)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return {}
        try:
            return self._read(fd)
        finally:
            os.close(fd)

    def _refuse(self, info: dict[str, Any]) -> LDACError:
        return LDACError(f"the {self.what} {self.folder} is in use by another yolo-ldac process "
                         f"({describe_holder(info)}): {self.hint}")

    def _stale(self, info: dict[str, Any]) -> bool:
        """Without flock: a lock is stale when its holder's pid is dead on this very host (or it names no one)."""
        if not info.get("pid"):
            return True
        if info.get("host") != socket.gethostname():
            return False  # another machine's process: cannot be checked from here
        return int(info["pid"]) != os.getpid() and not pid_alive(int(info["pid"]))

    def acquire(self) -> "RunLock":
        """Take the lock (a stale one is taken over); raise :class:`LDACError` naming a live holder."""
        if self._fd is not None:
            return self
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            got = _flock(fd)
            if got is False:
                info = self._read(fd)
                # the holder writes its pid just after taking the flock: give it a moment to, so that the
                # refusal can name it
                for _ in range(40):
                    if info:
                        break
                    time.sleep(0.05)
                    info = self._read(fd)
                os.close(fd)
                raise self._refuse(info)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our flock: try the new one
                os.close(fd)
                continue
            previous = self._read(fd)
            if got is None and previous and not self._stale(previous):
                os.close(fd)
                raise self._refuse(previous)
            self.took_over = previous or None
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            os.fsync(fd)
            self._fd = fd
            if self.took_over:
                from yolo_ldac.utils.log import LOGGER

                LOGGER.warning(f"{self.folder}: took over the lock left by {describe_holder(self.took_over)}, "
                               "which has ended")
            return self
        raise self._refuse(self.holder())

    def release(self) -> None:
        """Remove the lock file and let go of the lock (nothing happens when it is not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.unlink(self.path)  # before closing: a writer waiting for the flock then sees a new file
        except OSError:
            pass
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release (an exception path): let go
        try:
            self.release()
        except Exception:
            pass


__all__ = ["LOCK_FILE", "RunLock", "describe_holder", "pid_alive"]
