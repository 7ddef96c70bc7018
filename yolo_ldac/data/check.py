"""Checking a dataset yaml before a run: it resolves, names its classes, its train and val splits hold images,
and (:func:`audit_dataset`) their label files are usable."""

from __future__ import annotations

from pathlib import Path

from yolo_ldac.errors import LDACError


def check_data(data: str | None, trusted: bool | None = None) -> dict:
    """Resolve a dataset yaml with Ultralytics (downloading it when Ultralytics knows how and is online) and
    check that its train and val image folders exist and hold images; raise :class:`LDACError` otherwise.

    A ``download:`` value that is not an archive URL is Python or a bash script that Ultralytics runs when the
    images are missing: it is run only when ``trusted`` (default: the :func:`yolo_ldac.safe_load.policy` in force).
    """
    if not data:
        raise LDACError("data=... is required (a dataset yaml, i.e. coco8.yaml)")
    path = Path(str(data))
    if path.suffix not in {".yaml", ".yml"}:
        raise LDACError(f"data '{data}' must be a dataset .yaml file")
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.checks import check_file

    try:
        resolved = check_file(str(data))
    except Exception:
        raise LDACError(f"data file '{data}' not found") from None
    _check_keys(data, resolved)
    from yolo_ldac.safe_load import TRUST_HINT, is_trusted

    code = _download_is_code(resolved) and not (is_trusted() if trusted is None else bool(trusted))
    try:
        info = check_det_dataset(str(data), autodownload=not code)
    except Exception as e:
        msg = str(e).strip().splitlines()
        why = msg[0] if msg else type(e).__name__
        if code:
            why += f"; its 'download:' script was not run ({TRUST_HINT})"
        raise LDACError(f"data '{data}' is not a usable dataset: {why}") from None
    from yolo_ldac.data._common import split_image_files

    for split in ("train", "val"):
        folders = info.get(split)
        folders = folders if isinstance(folders, list) else [folders]
        if not split_image_files(folders):
            raise LDACError(f"data '{data}': the {split} split ({', '.join(map(str, folders))}) holds no images")
    return info


def _download_is_code(resolved: str | Path) -> bool:
    """Whether the yaml's ``download:`` is something Ultralytics would execute (not an archive URL it fetches)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(resolved).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True  # unreadable here: assume the worst
    s = raw.get("download") if isinstance(raw, dict) else None
    if not s:
        return False
    from ultralytics.utils import clean_url

    archives = (".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2", ".txz", ".tbz2")  # Ultralytics' own URL test
    return not (isinstance(s, str) and s.lower().startswith("http") and clean_url(s).lower().endswith(archives))


def _check_keys(data: str, resolved: str | Path) -> None:
    """Name the missing key of a data yaml (Ultralytics says only "key missing")."""
    import yaml

    try:
        raw = yaml.safe_load(Path(resolved).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # Ultralytics reports it, with its own words
    if not isinstance(raw, dict):
        return
    for key, what in (("train", "the train images folder"), ("val", "the val images folder")):
        if key not in raw and not (key == "val" and "validation" in raw):
            raise LDACError(f"data '{data}' has no '{key}' key ({what}, relative to 'path')")
    if raw.get("names") is None and raw.get("nc") is None:
        raise LDACError(f"data '{data}' has no 'names' key: list the class names, i.e. names: {{0: person, 1: car}} "
                        "(or give nc: the number of classes)")
    names = raw.get("names")
    if names is not None and (not isinstance(names, (list, dict)) or not names):
        raise LDACError(f"data '{data}': names must be a non-empty list or {{id: name}} mapping, got {names!r}")


def audit_dataset(info: dict, data: str, splits: tuple[str, ...] = ("train", "val"), strict: bool = True,
                  single_cls: bool = False, task: str = "detect") -> dict:
    """Read every label file of ``splits`` of a resolved dataset (``check_data(data)``) once, with the label format
    of ``task`` (the model's: pose lines have keypoints, obb lines four corners).

    A pose model on data without ``kpt_shape``, and a segment model on data whose labels have no polygon (boxes
    only: nothing to learn masks from), raise :class:`LDACError` whatever ``strict``.

    Returns ``{split: {"images", "label_files", "dropped", "used", "examples"}}``. With ``strict`` a broken file
    raises :class:`LDACError` (one line naming the first files and lines); otherwise a warning says how many images
    each split loses (Ultralytics skips them). See :mod:`yolo_ldac.data.labels` for the rules.

    Example:
        >>> audit_dataset(check_data("shapes/data.yaml"), "shapes/data.yaml")["train"]["dropped"]  # doctest: +SKIP
        0
    """
    from yolo_ldac.data._common import split_image_files
    from yolo_ldac.data.labels import audit_split, broken_labels_message

    nc = len(info["names"]) if info.get("names") is not None else None
    kpt_shape = None
    if task == "pose":
        kpt_shape = info.get("kpt_shape")
        if not (isinstance(kpt_shape, (list, tuple)) and len(kpt_shape) == 2 and int(kpt_shape[1]) in (2, 3)):
            raise LDACError(f"data '{data}' has no kpt_shape: [keypoints, 2 or 3] (a pose model needs keypoint "
                            "labels; see Ultralytics' pose dataset format)")
    audits = []
    for split in splits:
        folders = info.get(split)
        audits.append(audit_split(split, split_image_files(folders if isinstance(folders, list) else [folders]),
                                  nc, single_cls=single_cls, kpt_shape=kpt_shape, obb=task == "obb"))
    if task == "segment":
        labelled = [a for a in audits if a.label_files]
        if labelled and not any(a.polygon_files for a in labelled):
            raise LDACError(f"data '{data}' has boxes but no polygon labels: a segment model learns its masks from "
                            "polygons (cls x1 y1 ... xn yn); use a detection model, or segmentation labels")
    message = broken_labels_message(audits, data)
    if message and strict:
        raise LDACError(message)
    if message:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"strict_labels=False: {message.split('; fix them')[0]}; those images are left out")
    return {a.split: a.as_dict() for a in audits}


def require_train_labels(info: dict, data: str, audit: dict) -> None:
    """Raise :class:`LDACError` when the train split has no label file at all (``audit``: :func:`audit_dataset`'s
    result). Ultralytics' trainer stops on it with ``ValueError: No labels found`` once the run is under way; a
    run that trains is told here, before its run directory exists, where the labels were looked for.

    Example:
        >>> require_train_labels({}, "d.yaml", {"train": {"images": 4, "label_files": 2}})
    """
    split = audit.get("train") or {}
    if not split.get("images") or split.get("label_files"):
        return
    from yolo_ldac.data._common import split_image_files
    from yolo_ldac.data.labels import label_path

    folders = info.get("train")
    images = split_image_files(folders if isinstance(folders, list) else [folders])
    where = f", i.e. {label_path(images[0])} for {images[0].name}" if images else ""
    raise LDACError(f"data '{data}': the train split has {split['images']} images and no label file (Ultralytics "
                    f"reads them from the labels/ folder beside images/{where}); training needs labels")
