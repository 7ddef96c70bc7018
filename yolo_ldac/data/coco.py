"""Convert COCO-format instances json files to a YOLO detection dataset with Ultralytics' own converter.

``ultralytics.data.converter.convert_coco`` writes only label files (``<save_dir>/labels/<split>/<file>.txt``,
the split being the json file name without ``instances_``, e.g. ``val2017``), leaves ``<save_dir>/images``
empty, writes no data.yaml, names no class, maps category ids either through the 91 -> 80 COCO table or as
``category_id - 1``, and increments ``save_dir`` (``dir-2``) when it already exists. This module adds what a
training run needs around it:

- category ids that are not COCO's 80 (any ids, non-contiguous, starting at 0 or 1) are renumbered 1..N in
  sorted-id order in a temporary copy of the json, so that ``category_id - 1`` gives contiguous classes;
  COCO's own 80 ids go through ``cls91to80`` unchanged (the same order: sorted ids);
- the images of each split are linked (or copied) into ``out_dir/images/<split>`` beside the labels;
- ``data.yaml`` gets ``path``, ``train``/``val`` (the splits whose names hold "train"/"val") and ``names`` from
  the json categories, sorted by id.

Command line::

    python -m yolo_ldac.data.coco JSON_DIR_OR_FILE IMAGES_DIR OUT [--copy] [--segments]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from yolo_ldac.data.kitti import _check_out_dir, _link_or_copy, _prepare_out_dir
from yolo_ldac.data._common import run_cli
from yolo_ldac.errors import LDACError

from yolo_ldac.utils.log import LOGGER  # noqa: E402

PARAMS_FILE = "coco_conversion.json"  # parameters and counts, written beside data.yaml


def _json_files(json_dir: Path) -> list[Path]:
    """The instances json files to convert: ``json_dir`` itself if a file, else its ``instances_*.json`` (or all
    ``*.json`` when it has none)."""
    if not json_dir.exists():
        raise LDACError(f"COCO annotations {json_dir} do not exist")
    if json_dir.is_file():
        if json_dir.suffix.lower() != ".json":
            raise LDACError(f"{json_dir} is not a .json file")
        return [json_dir]
    files = sorted(json_dir.glob("instances_*.json")) or sorted(json_dir.glob("*.json"))
    if not files:
        raise LDACError(f"no .json files in {json_dir}")
    return files


def _split_name(json_file: Path) -> str:
    """The split (labels folder) name Ultralytics' converter gives ``json_file``: its stem without ``instances_``."""
    return json_file.stem.replace("instances_", "")


def _load(json_file: Path) -> dict:
    """Load and check one instances json (images with id/file_name/width/height, annotations with bbox, categories)."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LDACError(f"cannot read {json_file}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise LDACError(f"{json_file} is not a COCO instances json (no 'images' and 'annotations' lists)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise LDACError(f"{json_file} has no 'categories'")
    try:
        cat_ids = [int(c["id"]) for c in data["categories"] if isinstance(c["name"], str)]
        if len(cat_ids) != len(data["categories"]):
            raise LDACError(f"{json_file}: a category name is not a string")
        image_ids = {int(im["id"]) for im in data["images"]}
        for im in data["images"]:
            if not isinstance(im["file_name"], str) or not im["file_name"]:
                raise LDACError(f"{json_file}: image {im['id']} has no file_name")
            if int(im["width"]) <= 0 or int(im["height"]) <= 0:
                raise LDACError(f"{json_file}: image {im['id']} has size {im['width']}x{im['height']}")
        for ann in data["annotations"]:
            if len(ann["bbox"]) != 4:
                raise LDACError(f"{json_file}: annotation {ann.get('id')} bbox is not [x, y, w, h]")
            if int(ann["image_id"]) not in image_ids:
                raise LDACError(f"{json_file}: annotation {ann.get('id')} refers to unknown image {ann['image_id']}")
    except (KeyError, TypeError, ValueError) as e:
        raise LDACError(f"{json_file}: malformed COCO entry ({type(e).__name__}: {e})") from None
    if len(set(cat_ids)) != len(cat_ids):
        raise LDACError(f"{json_file}: duplicate category ids")
    unknown = {int(a["category_id"]) for a in data["annotations"]} - set(cat_ids)
    if unknown:
        raise LDACError(f"{json_file}: annotations use category ids {sorted(unknown)} not in 'categories'")
    return data


def _coco80_ids() -> list[int]:
    """The 80 category ids of COCO detection (91-id space), in class-index order."""
    from ultralytics.data.converter import coco80_to_coco91_class

    return list(coco80_to_coco91_class())


def _image_source(images_dir: Path, split: str, data: dict, json_file: Path) -> Path:
    """``images_dir/<split>`` if it holds the json's first image, else ``images_dir`` if that does."""
    if not data["images"]:
        return images_dir
    first = data["images"][0]["file_name"]
    for base in (images_dir / split, images_dir):
        if (base / first).is_file():
            return base
    raise LDACError(f"image {first!r} of {json_file.name} is in neither {images_dir / split} nor {images_dir}")


def convert_coco(
    json_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    cls91to80: bool | None = None,
    use_segments: bool = False,
    copy: bool = False,
) -> Path:
    """Convert COCO instances json file(s) to a YOLO dataset in ``out_dir`` and return its ``data.yaml``.

    Input::

        json_dir/instances_train2017.json      # or json_dir = one .json file (any name)
        json_dir/instances_val2017.json
        images_dir/train2017/000000000009.jpg  # images_dir/<split>/<file_name>, or images_dir/<file_name>

    Output::

        out_dir/images/<split>/<file_name>     # symlinks to the originals (copies if copy=True or no symlinks)
        out_dir/labels/<split>/<stem>.txt      # written by Ultralytics' convert_coco; none for unlabelled images
        out_dir/data.yaml                      # path (absolute), train, val, names {index: name} (sorted by id)
        out_dir/coco_conversion.json           # the parameters and counts

    ``<split>`` is the json file name without ``instances_`` (as Ultralytics names it). ``train`` in data.yaml
    is the split(s) whose name holds "train", ``val`` those holding "val"; with a single json, or no "val"
    split, the train split serves as val too (with a warning). Every json must have the same categories.

    Args:
        json_dir: directory of instances json files (``instances_*.json`` if any, else every ``*.json``), or one
            json file.
        images_dir: directory of the images, per split (``images_dir/<split>/``) or all together.
        out_dir: output directory (created if needed); re-running into one written by this function replaces it.
        cls91to80: map COCO's 91-id space to its 80 classes (Ultralytics' table). ``None`` (default): when the
            category ids are exactly COCO's 80, else renumber the ids 1..N in sorted order (any ids work).
            ``True`` requires COCO's 80 ids; ``False`` always renumbers (same result on real COCO).
        use_segments: write polygon labels (a segmentation dataset) instead of boxes.
        copy: copy the images instead of symlinking them.

    Returns:
        Path of ``out_dir/data.yaml``.

    Raises:
        LDACError: missing or malformed json, missing images, differing categories between json files, or an
            ``out_dir`` holding a dataset this function did not write.
    """
    from ultralytics.data.converter import convert_coco as ul_convert_coco

    json_dir, images_dir, out_dir = (Path(p).expanduser() for p in (json_dir, images_dir, out_dir))
    files = _json_files(json_dir)
    if not images_dir.is_dir():
        raise LDACError(f"images directory {images_dir} does not exist")
    _check_out_dir(out_dir, PARAMS_FILE, (json_dir, images_dir), "convert_coco")  # fail before loading the json
    splits = [_split_name(f) for f in files]
    if len(set(splits)) != len(splits):
        raise LDACError(f"json files {[f.name for f in files]} give duplicate split names {splits}")

    datas = [_load(f) for f in files]
    cats = sorted((int(c["id"]), str(c["name"])) for c in datas[0]["categories"])
    for f, d in zip(files[1:], datas[1:]):
        if sorted((int(c["id"]), str(c["name"])) for c in d["categories"]) != cats:
            raise LDACError(f"{f.name} and {files[0].name} have different categories")
    ids, names = [c[0] for c in cats], [c[1] for c in cats]
    is_coco80 = sorted(ids) == sorted(_coco80_ids())
    if cls91to80 is None:
        cls91to80 = is_coco80
    elif cls91to80 and not is_coco80:
        raise LDACError(f"cls91to80=True needs COCO's 80 category ids, got {len(ids)} ids {ids[:5]}...")

    # Check every image exists before writing anything
    sources = {}
    for f, split, d in zip(files, splits, datas):
        base = _image_source(images_dir, split, d, f)
        missing = [im["file_name"] for im in d["images"] if not (base / im["file_name"]).is_file()]
        if missing:
            raise LDACError(f"{len(missing)} image(s) of {f.name} missing in {base}, first {missing[0]!r}")
        sources[split] = base

    train = [s for s in splits if "train" in s.lower()]
    val = [s for s in splits if "val" in s.lower()]
    if not train:
        if len(splits) != 1:
            raise LDACError(f"no split name holds 'train' among {splits}: rename the json files (instances_train*)")
        train = splits
    if not val:
        LOGGER.warning(f"COCO: no 'val' split among {splits}: data.yaml uses {train} for val too")
        val = train

    _prepare_out_dir(out_dir, PARAMS_FILE, (json_dir, images_dir, *sources.values()), "convert_coco")
    tmp = Path(tempfile.mkdtemp(prefix=".coco-convert-", dir=out_dir))
    try:
        jdir = tmp / "json"
        jdir.mkdir()
        remap = {cid: i + 1 for i, cid in enumerate(ids)}  # contiguous 1..N, so category_id - 1 = class index
        for f, d in zip(files, datas):
            target = jdir / f.name
            if cls91to80:  # Ultralytics reads the original file
                _link_or_copy(f.resolve(), target, copy)
            else:
                d = dict(d, annotations=[dict(a, category_id=remap[int(a["category_id"])]) for a in d["annotations"]])
                target.write_text(json.dumps(d), encoding="utf-8")
        save_dir = tmp / "converted"  # does not exist, so Ultralytics' increment_path keeps the name
        ul_convert_coco(
            labels_dir=str(jdir), save_dir=str(save_dir), use_segments=use_segments, use_keypoints=False,
            cls91to80=bool(cls91to80),
        )
        counts = {}
        for f, split, d in zip(files, splits, datas):
            src_labels = save_dir / "labels" / split
            dst_labels = out_dir / "labels" / split
            dst_labels.parent.mkdir(parents=True, exist_ok=True)
            if src_labels.is_dir():
                shutil.move(str(src_labels), str(dst_labels))
            else:  # no annotation at all in this json
                dst_labels.mkdir(parents=True)
            for im in d["images"]:
                dst = out_dir / "images" / split / im["file_name"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy((sources[split] / im["file_name"]).resolve(), dst, copy)
            n_labels = sum(1 for _ in dst_labels.rglob("*.txt"))
            counts[split] = {
                "images": len(d["images"]),
                "label_files": n_labels,
                "annotations": len(d["annotations"]),
                "crowd_skipped": sum(1 for a in d["annotations"] if a.get("iscrowd", False)),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    params = {
        "json": [str(f.resolve()) for f in files],
        "images_dir": str(images_dir.resolve()),
        "cls91to80": bool(cls91to80),
        "use_segments": bool(use_segments),
        "copy": bool(copy),
        "category_ids": ids,
        "splits": counts,
    }
    (out_dir / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    data = {
        "path": str(out_dir.resolve()),
        "train": f"images/{train[0]}" if len(train) == 1 else [f"images/{s}" for s in train],
        "val": f"images/{val[0]}" if len(val) == 1 else [f"images/{s}" for s in val],
        "names": dict(enumerate(names)),
    }
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    LOGGER.info(
        f"COCO: {len(names)} classes ({'91->80 table' if cls91to80 else 'ids renumbered in sorted order'}); "
        + "; ".join(f"{s}: {c['images']} images, {c['label_files']} label files" for s, c in counts.items())
    )
    return data_yaml


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m yolo_ldac.data.coco JSON IMAGES OUT``: convert and print the data.yaml path."""
    parser = argparse.ArgumentParser(
        prog="python -m yolo_ldac.data.coco",
        description="Convert COCO instances json to a YOLO detection dataset (Ultralytics' converter + data.yaml).",
    )
    parser.add_argument("json", help="directory of instances_*.json files, or one .json file")
    parser.add_argument("images", help="directory of the images (per split: IMAGES/<split>/, or all together)")
    parser.add_argument("out", help="output directory of the YOLO dataset")
    parser.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    parser.add_argument("--segments", action="store_true", help="write polygon (segmentation) labels")
    args = parser.parse_args(argv)
    return run_cli(lambda: convert_coco(args.json, args.images, args.out, use_segments=args.segments,
                                        copy=args.copy), LOGGER)


if __name__ == "__main__":
    sys.exit(main())
