"""The label audit: every label file of a split read once before a run, broken files named with their lines.

Ultralytics silently drops an image whose label file it cannot use (a class id beyond ``names``, a NaN or
out-of-range coordinate, a wrong column count) and trains on the rest. The audit applies the same rules
(``ultralytics.data.utils.verify_image_label``) up front, so that a run either stops with one line naming the
broken files (``strict_labels=True``) or knows how many images each split loses (``strict_labels=False``).

A label line is a box ``cls cx cy w h`` (5 columns) or a polygon ``cls x1 y1 ... xn yn`` (1 + 2n columns, n >= 3),
which Ultralytics turns into its bounding box. A file must not mix the two (Ultralytics would read the box as a
two-point polygon, so it refuses such files). For a pose model (``kpt_shape`` (k, d) given) a line is the box and
its k keypoints, ``cls cx cy w h x1 y1 [v1] ...`` (5 + k*d columns); for an obb model (``obb``) it is the four
corners of the rotated box, ``cls x1 y1 ... x4 y4`` (9 columns). Coordinates are normalised to [0, 1], with Ultralytics' tolerance of
0.01 either side (w and h never negative); class ids are integers in ``0 .. nc - 1``. A missing or empty label file
is a background image, not a broken one. Pure numpy: nothing here imports torch or Ultralytics.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.txt").write_text("0 0.5 0.5 0.2 0.2\\n3 0.5 0.5 0.2 0.2\\n")
    >>> [str(p) for p in check_label_file(d / "a.txt", nc=2)]
    ['a.txt:2: class 3 is not an integer in 0..1 (names has 2)']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Ultralytics' tolerance on normalised coordinates (verify_image_label: max <= 1.01, min >= -0.01).
COORD_TOL = 0.01
MAX_EXAMPLES = 3


@dataclass(frozen=True)
class LabelProblem:
    """One broken line (``line`` 1-based; 0 when the file as a whole is the problem)."""

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file.name}:{self.line}: {self.reason}" if self.line else f"{self.file.name}: {self.reason}"


@dataclass
class SplitAudit:
    """What the audit found in one split: images, label files read, and the broken ones."""

    split: str
    images: int = 0
    label_files: int = 0
    broken: dict[Path, list[LabelProblem]] = field(default_factory=dict)
    polygon_files: int = 0  # label files with polygon lines (a segment model's masks)

    @property
    def dropped(self) -> int:
        """Images Ultralytics will leave out (one per broken label file)."""
        return len(self.broken)

    def as_dict(self) -> dict:
        return {"images": self.images, "label_files": self.label_files, "dropped": self.dropped,
                "used": self.images - self.dropped,
                "examples": [str(p) for ps in list(self.broken.values())[:MAX_EXAMPLES] for p in ps[:1]]}


def label_path(image: str | Path) -> Path:
    """The label file Ultralytics reads for ``image``: the last ``/images/`` becomes ``/labels/``, suffix ``.txt``.

    Example:
        >>> label_path("data/images/train/a.jpg").as_posix()
        'data/labels/train/a.txt'
    """
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(Path(image))
    return Path(sb.join(s.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _bad_rows(values: np.ndarray, nc: int | None, kpt_dim: int = 0) -> list[tuple[int, str]]:
    """(row index, reason) for every row of ``values`` (cls + coordinates) that breaks a rule; vectorised.
    ``kpt_dim``: the rows are pose rows (box, then keypoints of that many values; a third one, the visibility,
    is no coordinate)."""
    cls, xy = values[:, 0], values[:, 1:]
    if kpt_dim:
        kpts = values[:, 5:].reshape(len(values), -1, kpt_dim)[:, :, :2].reshape(len(values), -1)
        xy = np.concatenate([values[:, 1:5], kpts], axis=1)
    with np.errstate(invalid="ignore"):
        bad_cls = ~np.isfinite(cls) | (cls % 1 != 0) | (cls < 0)
        if nc is not None:
            bad_cls |= cls >= nc
        checks = [
            (bad_cls, None),
            (~np.isfinite(xy).all(axis=1), "non-finite coordinate"),
            ((xy < -COORD_TOL).any(axis=1) | (xy > 1 + COORD_TOL).any(axis=1), "coordinate outside [0, 1]"),
        ]
        if values.shape[1] == 5 or kpt_dim:
            checks.append(((xy[:, 2:4] < 0).any(axis=1), "negative width or height"))
    allowed = f"an integer in 0..{nc - 1} (names has {nc})" if nc is not None else "an integer >= 0"
    out: dict[int, str] = {}
    for mask, reason in checks:
        for i in np.flatnonzero(mask):
            out.setdefault(int(i), reason or f"class {cls[i]:g} is not {allowed}")
    return sorted(out.items())


def check_label_file(path: str | Path, nc: int | None, single_cls: bool = False,
                     kpt_shape: tuple[int, int] | None = None, obb: bool = False) -> list[LabelProblem]:
    """The broken lines of one label file (empty when Ultralytics would use it as it is).

    Args:
        path: the label file; a missing file is a background image (no problem).
        nc: the number of classes (``len(names)``); class ids must be below it. None skips the range check.
        single_cls: Ultralytics' ``single_cls=True`` maps every class to 0: ids are not range-checked.
        kpt_shape: (keypoints, values per keypoint) of a pose dataset: every line is a box and its keypoints.
        obb: an obb dataset: every line is the 4 corners of a rotated box.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "p.txt"
        >>> _ = f.write_text("0 0.5 0.5 0.2 0.2 0.5 0.5 2\n")
        >>> [str(p) for p in check_label_file(f, nc=1, kpt_shape=(2, 3))]
        ['p.txt:1: 8 columns (a pose line is cls cx cy w h and 2 keypoints of 3 values: 11 columns)']
    """
    return _read_and_check(Path(path), nc, single_cls, kpt_shape, obb)[1]


def _read_and_check(path: Path, nc: int | None, single_cls: bool, kpt_shape: tuple[int, int] | None = None,
                    obb: bool = False, counts: SplitAudit | None = None) -> tuple[bool, list[LabelProblem]]:
    """(whether the file exists, its problems); ``counts`` gets a file with polygon lines counted."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        return False, []
    except (OSError, UnicodeDecodeError) as e:
        return True, [LabelProblem(path, 0, f"unreadable ({type(e).__name__})")]
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        return True, []
    problems: list[LabelProblem] = []
    widths = np.array([len(tokens) for _, tokens in rows])
    polygon = (widths > 6) & (widths % 2 == 1)
    if kpt_shape:
        k, d = (int(v) for v in kpt_shape)
        wrong = widths != 5 + k * d
        why = f"a pose line is cls cx cy w h and {k} keypoints of {d} values: {5 + k * d} columns"
        polygon = np.zeros_like(wrong)
    elif obb:
        wrong = widths != 9
        why = "an oriented box is cls x1 y1 x2 y2 x3 y3 x4 y4: 9 columns"
        polygon = np.zeros_like(wrong)
    else:
        wrong = ~((widths == 5) | polygon)
        why = "a box is cls cx cy w h; a polygon cls x1 y1 ... xn yn, n >= 3"
    problems += [LabelProblem(path, rows[i][0], f"{widths[i]} columns ({why})") for i in np.flatnonzero(wrong)]
    if counts is not None and polygon.any():
        counts.polygon_files += 1
    if (widths == 5).any() and polygon.any():
        first = rows[int(np.flatnonzero(polygon)[0])][0]
        problems.append(LabelProblem(path, first, "mixes box lines (5 columns) and polygon lines"))
    for width in np.unique(widths[~wrong]):
        idx = np.flatnonzero(widths == width)
        try:
            values = np.array([rows[i][1] for i in idx], dtype=np.float64)
        except ValueError:  # a token that is no number: find which lines, one by one
            values = np.full((len(idx), width), np.nan)
            for j, i in enumerate(idx):
                try:
                    values[j] = np.array(rows[i][1], dtype=np.float64)
                except ValueError:
                    problems.append(LabelProblem(path, rows[i][0], "a value that is not a number"))
                    values[j] = 0.0  # reported once, not again as non-finite
        bad = _bad_rows(values, None if single_cls else nc, int(kpt_shape[1]) if kpt_shape else 0)
        problems += [LabelProblem(path, rows[idx[j]][0], reason) for j, reason in bad]
    return True, sorted(problems, key=lambda p: p.line)


def audit_split(split: str, images: list[Path], nc: int | None, single_cls: bool = False,
                kpt_shape: tuple[int, int] | None = None, obb: bool = False) -> SplitAudit:
    """Read the label file of every image of one split once; see :func:`check_label_file`.

    Example:
        >>> audit_split("val", [], nc=3).as_dict()["dropped"]
        0
    """
    audit = SplitAudit(split, images=len(images))
    for image in images:
        lp = label_path(image)
        found, problems = _read_and_check(lp, nc, single_cls, kpt_shape, obb, audit)
        audit.label_files += found
        if problems:
            audit.broken[lp] = problems
    return audit


def broken_labels_message(audits: list[SplitAudit], data: str) -> str | None:
    """One line naming the first few broken files and lines of ``audits``, or None when there are none.

    Example:
        >>> broken_labels_message([SplitAudit("train", images=4)], "d.yaml") is None
        True
    """
    broken = [(a, f, ps) for a in audits for f, ps in a.broken.items()]
    if not broken:
        return None
    counts = ", ".join(f"{a.dropped} of {a.images} {a.split}" for a in audits if a.dropped)
    examples = "; ".join(f"{f}:{ps[0].line}: {ps[0].reason}" if ps[0].line else f"{f}: {ps[0].reason}"
                         for _, f, ps in broken[:MAX_EXAMPLES])
    more = f" (and {len(broken) - MAX_EXAMPLES} more files)" if len(broken) > MAX_EXAMPLES else ""
    return (f"data '{data}': broken label files ({counts} images), e.g. {examples}{more}; fix them, or pass "
            "strict_labels=False to train and validate without those images")


__all__ = ["LabelProblem", "SplitAudit", "audit_split", "broken_labels_message", "check_label_file", "label_path"]
