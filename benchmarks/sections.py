"""Marked sections of BENCHMARKS.md: each script rewrites its own ``<!-- section:NAME -->`` ... ``<!-- /section:NAME -->``
block and leaves the rest of the file as it is (compare.py keeps every such block when it rewrites the file)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "BENCHMARKS.md"


def write_section(name: str, body: str, report: Path = REPORT, after: str | None = None) -> Path:
    """Replace (or append) the section ``name`` of ``report`` with ``body`` (atomically); a new section goes right
    after the section ``after`` when that one exists, else at the end."""
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from yolo_ldac.utils.io import atomic_write_text

    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    text = f"{start}\n\n{body.strip()}\n\n{end}"
    old = report.read_text(encoding="utf-8") if report.is_file() else ""
    after_end = f"<!-- /section:{after} -->" if after else None
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end):]
    elif after_end and after_end in old:
        cut = old.index(after_end) + len(after_end)
        new = old[:cut] + "\n\n" + text + old[cut:]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    return atomic_write_text(report, new)
