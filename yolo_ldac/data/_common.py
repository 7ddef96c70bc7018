"""Pieces every dataset builder and converter shares: clearing a rebuilt layout, and the small CLI wrapper."""

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
