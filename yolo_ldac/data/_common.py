"""Pieces the dataset builders, converters and readers share: clearing a rebuilt layout, the small CLI wrapper,
and listing the images of a split."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from yolo_ldac.errors import LDACError


def clear_split_files(out_dir: Path, subdirs: tuple[str, ...] = ("images", "labels")) -> None:
    """Delete the files (not folders) of ``out_dir/<subdir>/{train,val}`` before a dataset is rebuilt there."""
    for sub in subdirs:
        for split in ("train", "val"):
            d = Path(out_dir) / sub / split
            if d.is_dir():
                for f in d.iterdir():
                    if f.is_file():
                        f.unlink()


def split_image_files(folders: str | Path | list | None) -> list[Path]:
    """The images of one split of a resolved dataset (``check_det_dataset(data)[split]``): every image file under
    its folder(s), sorted, and the paths listed in a list file (one a line).

    Example:
        >>> split_image_files(None)
        []
    """
    from ultralytics.data.utils import IMG_FORMATS

    found: list[Path] = []
    for folder in folders if isinstance(folders, list) else [folders] if folders else []:
        p = Path(str(folder))
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif p.is_file():  # a list of image paths
            found += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
    return found


def run_cli(build: Callable[[], Path], logger: logging.Logger) -> int:
    """Run a builder from a ``python -m`` entry point: log to stderr, print the data.yaml path, and turn an
    :class:`LDACError` into one ``error:`` line and exit status 2."""
    if not logger.handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build()
    except LDACError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
