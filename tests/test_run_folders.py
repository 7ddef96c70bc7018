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
