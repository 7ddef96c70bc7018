"""Checking a dataset yaml before a run: it resolves, and its train and val splits hold images."""

from __future__ import annotations

from pathlib import Path

from yolo_ldac.errors import LDACError


def check_data(data: str | None) -> dict:
    """Resolve a dataset yaml with Ultralytics (downloading it when Ultralytics knows how and is online) and
    check that its train and val image folders exist and hold images; raise :class:`LDACError` otherwise."""
    if not data:
        raise LDACError("data=... is required (a dataset yaml, i.e. coco8.yaml)")
    path = Path(str(data))
    if path.suffix not in {".yaml", ".yml"}:
        raise LDACError(f"data '{data}' must be a dataset .yaml file")
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.checks import check_file

    try:
        check_file(str(data))
    except Exception:
        raise LDACError(f"data file '{data}' not found") from None
    try:
        info = check_det_dataset(str(data))
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise LDACError(f"data '{data}' is not a usable dataset: {msg[0] if msg else type(e).__name__}") from None
    from yolo_ldac.data._common import split_image_files

    for split in ("train", "val"):
        folders = info.get(split)
        folders = folders if isinstance(folders, list) else [folders]
        if not split_image_files(folders):
            raise LDACError(f"data '{data}': the {split} split ({', '.join(map(str, folders))}) holds no images")
    return info
