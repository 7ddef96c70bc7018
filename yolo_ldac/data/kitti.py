"""Convert the raw KITTI 2D object labels (``label_2/*.txt``) to a YOLO detection dataset.

Ultralytics ships ``kitti.yaml`` (8 classes, 5,985 train / 1,496 val images, downloaded on first use), so
``data=kitti.yaml`` already works for users who are online; this module is for users who hold the original KITTI
download (``data_object_image_2.zip`` and ``data_object_label_2.zip``). Its default class map is exactly that
yaml's: the raw types ``Car, Van, Truck, Pedestrian, Person_sitting, Cyclist, Tram, Misc`` (matched case-
insensitively) become the yaml's lower-case names, in the yaml's order, and ``DontCare`` is dropped. The default
``val_fraction`` of 0.2 gives the yaml's split sizes on the 7,481 training images (1,496 val), though not the
same images (Ultralytics does not publish its split).

A KITTI label line has 15 space-separated fields::

    type truncated occluded alpha left top right bottom h w l x y z rotation_y

of which this converter uses ``type`` and the pixel box ``left top right bottom`` (a 16th field, the score of a
detection-results file, is accepted and ignored). Boxes are clipped to the image, whose real size is read from
the image header, and written as ``cls xc yc w h`` normalised to [0, 1].

Command line::

    python -m yolo_ldac.data.kitti ROOT OUT [--val-fraction 0.2] [--seed 0] [--split-file val_ids.txt]
                                            [--class-map Car,Van=car,Pedestrian] [--copy]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from yolo_ldac.data._common import run_cli
from yolo_ldac.errors import LDACError

from yolo_ldac.utils.log import LOGGER  # noqa: E402

# Ultralytics' kitti.yaml names, used only when the installed package has no kitti.yaml (tests check they agree).
KITTI_NAMES = ("car", "van", "truck", "pedestrian", "person_sitting", "cyclist", "tram", "misc")
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PARAMS_FILE = "kitti_conversion.json"  # parameters and counts, written beside data.yaml
SPLITS = ("train", "val")


def ultralytics_kitti_yaml() -> Path:
    """Path of the ``kitti.yaml`` shipped inside the installed Ultralytics package (it may not exist)."""
    from ultralytics.utils import ROOT

    return Path(ROOT) / "cfg" / "datasets" / "kitti.yaml"


def kitti_names() -> list[str]:
    """Class names of Ultralytics' ``kitti.yaml`` in class-index order (``KITTI_NAMES`` if it is absent)."""
    path = ultralytics_kitti_yaml()
    if not path.is_file():
        LOGGER.warning(f"{path} not found: using the built-in KITTI class names {KITTI_NAMES}")
        return list(KITTI_NAMES)
    names = yaml.safe_load(path.read_text(encoding="utf-8")).get("names")
    if isinstance(names, Mapping):
        names = [names[k] for k in sorted(names)]
    return [str(n) for n in names]


def default_class_map() -> dict[str, str]:
    """Raw KITTI type (lower case) -> class name, for every class of Ultralytics' ``kitti.yaml``; no DontCare."""
    return {name.lower(): name for name in kitti_names()}


def _normalise_class_map(class_map) -> tuple[dict[str, str], list[str]]:
    """``(raw type lower-cased -> name, names in class-index order)`` from the accepted ``class_map`` forms.

    - ``None``: the map of Ultralytics' ``kitti.yaml`` (DontCare dropped).
    - a sequence of raw types, e.g. ``["Car", "Pedestrian", "Cyclist"]``: kept types, named in lower case, in
      that order.
    - a mapping raw type -> class name (several types may share a name; ``None`` drops a type): class indices
      follow the first appearance of each name; e.g. ``{"Car": "car", "Van": "car", "Pedestrian": "person"}``.
    """
    if class_map is None:
        mapping = default_class_map()
    elif isinstance(class_map, Mapping):
        mapping = {}
        for raw, name in class_map.items():
            if not isinstance(raw, str) or not raw.strip():
                raise LDACError(f"class_map keys must be KITTI type names, got {raw!r}")
            if name is None:
                continue
            if not isinstance(name, str) or not name.strip():
                raise LDACError(f"class_map value for {raw!r} must be a class name or None, got {name!r}")
            mapping[raw.strip().lower()] = name.strip()
    elif isinstance(class_map, Sequence) and not isinstance(class_map, str):
        mapping = {}
        for raw in class_map:
            if not isinstance(raw, str) or not raw.strip():
                raise LDACError(f"class_map entries must be KITTI type names, got {raw!r}")
            mapping[raw.strip().lower()] = raw.strip().lower()
    else:
        raise LDACError(f"class_map must be None, a list of KITTI types or a dict type -> name, got {class_map!r}")
    if not mapping:
        raise LDACError("class_map keeps no class")
    names = list(dict.fromkeys(mapping.values()))
    return mapping, names


def _find_dirs(root: Path) -> tuple[Path, Path]:
    """``(image_2, label_2)`` under ``root/training`` (the official layout) or directly under ``root``."""
    if not root.exists():
        raise LDACError(f"KITTI root {root} does not exist")
    if not root.is_dir():
        raise LDACError(f"KITTI root {root} is not a directory")
    for base in (root / "training", root):
        if (base / "label_2").is_dir():
            if not (base / "image_2").is_dir():
                raise LDACError(f"{base / 'label_2'} has no sibling image_2 directory")
            return base / "image_2", base / "label_2"
    raise LDACError(f"no label_2 directory in {root}/training or {root}: expected the KITTI 2D object layout")


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (PIL reads no pixels for this)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # PIL.UnidentifiedImageError, OSError
        raise LDACError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if w <= 0 or h <= 0:
        raise LDACError(f"image {path} has size {w}x{h}")
    return w, h


def _parse_label_file(path: Path) -> list[tuple[str, float, float, float, float]]:
    """``[(type, left, top, right, bottom), ...]`` of one KITTI label file."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise LDACError(f"{path}:{n}: expected 15 fields (16 with a score), got {len(fields)}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise LDACError(f"{path}:{n}: non-numeric field in {line.strip()!r}") from None
        left, top, right, bottom = values[3:7]
        rows.append((fields[0], left, top, right, bottom))
    return rows


def _yolo_box(left, top, right, bottom, w, h) -> tuple[float, float, float, float] | None:
    """Pixel corners clipped to a ``w`` x ``h`` image -> normalised ``(xc, yc, bw, bh)``; None if nothing is left."""
    x1, x2 = min(max(left, 0.0), w), min(max(right, 0.0), w)
    y1, y2 = min(max(top, 0.0), h), min(max(bottom, 0.0), h)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h


def _read_split_file(path: Path, ids: list[str]) -> set[str]:
    """Image ids listed in ``path`` (one per line: an id, a file name or a path; blank lines and # comments skipped)."""
    if not path.is_file():
        raise LDACError(f"split file {path} not found")
    val = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            val.add(Path(line).stem)
    known = set(ids)
    unknown = sorted(val - known)
    if unknown:
        raise LDACError(f"split file {path}: {len(unknown)} id(s) have no KITTI label file, first {unknown[0]!r}")
    if not val:
        raise LDACError(f"split file {path} lists no image id")
    return val


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    """Symlink ``dst`` -> ``src`` (copy when ``copy`` or when the file system refuses symlinks)."""
    if not copy:
        try:
            os.symlink(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _check_out_dir(out_dir: Path, params_file: str, inputs: Sequence[Path], who: str) -> bool:
    """Refuse an ``out_dir`` that is an input directory or holds a dataset ``who`` did not write; True if it
    holds one ``who`` wrote (marked by ``params_file``)."""
    if out_dir.resolve() in {p.resolve() for p in inputs}:
        raise LDACError(f"output directory {out_dir} must not be an input directory")
    ours = (out_dir / params_file).is_file()
    if any((out_dir / p).exists() for p in ("data.yaml", "images", "labels")) and not ours:
        raise LDACError(f"{out_dir} already holds a dataset not written by {who}: choose another output directory")
    return ours


def _prepare_out_dir(out_dir: Path, params_file: str, inputs: Sequence[Path], who: str) -> None:
    """Make ``out_dir`` ready: refuse an input directory or a foreign dataset, clear one ``who`` wrote earlier."""
    data_yaml = out_dir / "data.yaml"
    if _check_out_dir(out_dir, params_file, inputs, who):
        for p in (data_yaml, out_dir / params_file, *(out_dir / f"{s}.txt" for s in SPLITS)):
            p.unlink(missing_ok=True)
        for sub in ("images", "labels"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def convert_kitti(
    root: str | Path,
    out_dir: str | Path,
    class_map: Mapping[str, str | None] | Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_file: str | Path | None = None,
    *,
    copy: bool = False,
) -> Path:
    """Convert raw KITTI 2D object labels under ``root`` to a YOLO dataset in ``out_dir``; return its data.yaml.

    Input (the official layout; ``image_2``/``label_2`` directly under ``root`` also work)::

        root/training/image_2/000000.png ...
        root/training/label_2/000000.txt ...   # 15 fields a line, see the module docstring

    Output::

        out_dir/images/{train,val}/000000.png  # symlinks to the originals (copies if copy=True or no symlinks)
        out_dir/labels/{train,val}/000000.txt  # "cls xc yc w h" normalised; empty for images with no kept box
        out_dir/{train,val}.txt                # "./images/<split>/<file>" per line (usable as split_file)
        out_dir/data.yaml                      # path (absolute), train, val, names {index: name}
        out_dir/kitti_conversion.json          # the parameters and the counts of kept and dropped boxes

    Every label file with an image is converted; images without a label file (e.g. ``testing/``) are ignored.
    Boxes of types not in the class map (``DontCare`` by default) are dropped and counted, as are boxes with no
    area left after clipping to the image. Re-running into an ``out_dir`` written by this function replaces it.

    Args:
        root: KITTI directory (holding ``training/`` or ``image_2`` and ``label_2``).
        out_dir: output directory (created if needed).
        class_map: ``None`` for the classes of Ultralytics' ``kitti.yaml``; a list of raw types to keep (named in
            lower case, indexed in that order); or a dict raw type -> class name (types may share a name; ``None``
            drops a type; indices follow the first appearance of each name). Types match case-insensitively.
        val_fraction: fraction of images put in val when no ``split_file`` is given (0 < f < 1); the number is
            ``round(n * val_fraction)``, at least 1 and at most n - 1.
        seed: seed of the shuffle that picks the val images (sorted ids, ``random.Random(seed).shuffle``).
        split_file: text file of val image ids, one a line (ids, file names or paths; ``#`` comments); all
            other images go to train. ``val_fraction`` and ``seed`` are then unused.
        copy: copy the images instead of symlinking them.

    Returns:
        Path of ``out_dir/data.yaml``.

    Raises:
        LDACError: missing or malformed input, a label file without its image, an empty split, a bad class map,
            or an ``out_dir`` holding a dataset this function did not write.
    """
    root, out_dir = Path(root).expanduser(), Path(out_dir).expanduser()
    image_dir, label_dir = _find_dirs(root)
    inputs = (root, image_dir.parent, image_dir, label_dir)
    _check_out_dir(out_dir, PARAMS_FILE, inputs, "convert_kitti")  # fail before reading thousands of files
    mapping, names = _normalise_class_map(class_map)
    if split_file is None and not 0.0 < float(val_fraction) < 1.0:
        raise LDACError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")

    label_files = sorted(label_dir.glob("*.txt"))
    if not label_files:
        raise LDACError(f"no label files (*.txt) in {label_dir}")
    images = {}
    for p in image_dir.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(p.stem, p)
    ids = [p.stem for p in label_files]
    missing = [i for i in ids if i not in images]
    if missing:
        raise LDACError(f"{len(missing)} label file(s) in {label_dir} have no image in {image_dir}, first {missing[0]}")

    # Split
    if split_file is not None:
        val_ids = _read_split_file(Path(split_file).expanduser(), ids)
    else:
        if len(ids) < 2:
            raise LDACError(f"{label_dir} has {len(ids)} labelled image: need at least 2 for a train/val split")
        n_val = min(max(round(len(ids) * float(val_fraction)), 1), len(ids) - 1)
        order = list(ids)
        random.Random(seed).shuffle(order)
        val_ids = set(order[:n_val])
    split_of = {i: ("val" if i in val_ids else "train") for i in ids}
    if "train" not in split_of.values():
        raise LDACError(f"split file {split_file} puts every image in val: the train split would be empty")

    # Convert (everything is read and checked before the first write)
    kept, dropped, degenerate, clipped = Counter(), Counter(), 0, 0
    cls_of = {name: i for i, name in enumerate(names)}
    converted = {}  # id -> YOLO label text
    for label_file, i in zip(label_files, ids):
        w, h = _image_size(images[i])
        lines = []
        for typ, left, top, right, bottom in _parse_label_file(label_file):
            name = mapping.get(typ.lower())
            if name is None:
                dropped[typ] += 1
                continue
            box = _yolo_box(left, top, right, bottom, w, h)
            if box is None:
                degenerate += 1
                continue
            clipped += left < 0 or top < 0 or right > w or bottom > h
            kept[name] += 1
            lines.append(f"{cls_of[name]} {box[0]:.6f} {box[1]:.6f} {box[2]:.6f} {box[3]:.6f}\n")
        converted[i] = "".join(lines)

    _prepare_out_dir(out_dir, PARAMS_FILE, inputs, "convert_kitti")
    for sub in ("images", "labels"):
        for s in SPLITS:
            (out_dir / sub / s).mkdir(parents=True, exist_ok=True)
    lists = {s: [] for s in SPLITS}
    for i in ids:
        img, s = images[i], split_of[i]
        (out_dir / "labels" / s / f"{i}.txt").write_text(converted[i], encoding="utf-8")
        _link_or_copy(img.resolve(), out_dir / "images" / s / img.name, copy)
        lists[s].append(f"./images/{s}/{img.name}\n")

    for s in SPLITS:
        (out_dir / f"{s}.txt").write_text("".join(lists[s]), encoding="utf-8")
    stats = {
        "images": {s: len(lists[s]) for s in SPLITS},
        "boxes": {n: kept[n] for n in names},
        "dropped_classes": dict(sorted(dropped.items())),
        "dropped_empty_after_clip": degenerate,
        "clipped": int(clipped),
    }
    params = {
        "root": str(root.resolve()),
        "class_map": mapping,
        "val_fraction": None if split_file is not None else float(val_fraction),
        "seed": None if split_file is not None else seed,
        "split_file": None if split_file is None else str(Path(split_file).expanduser().resolve()),
        "copy": bool(copy),
        **stats,
    }
    (out_dir / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    data = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(names)),
    }
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    dropped_txt = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none"
    LOGGER.info(
        f"KITTI: {len(lists['train'])} train / {len(lists['val'])} val images, {sum(kept.values())} boxes kept; "
        f"dropped by class: {dropped_txt}; dropped empty after clipping: {degenerate}; clipped: {int(clipped)}"
    )
    return data_yaml


def _parse_class_map_arg(text: str) -> dict[str, str]:
    """``"Car,Van=car,Pedestrian=person"`` -> ``{"Car": "car", "Van": "car", "Pedestrian": "person"}``."""
    mapping = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        raw, _, name = item.partition("=")
        if not raw.strip():
            raise LDACError(f"--class-map entry {item!r} has no KITTI type")
        mapping[raw.strip()] = name.strip() or raw.strip().lower()
    return mapping


def main(argv: list[str] | None = None) -> int:
    """``python -m yolo_ldac.data.kitti ROOT OUT``: convert and print the data.yaml path."""
    parser = argparse.ArgumentParser(
        prog="python -m yolo_ldac.data.kitti",
        description="Convert raw KITTI 2D object labels (training/label_2) to a YOLO detection dataset.",
    )
    parser.add_argument("root", help="KITTI directory holding training/image_2 and training/label_2")
    parser.add_argument("out", help="output directory of the YOLO dataset")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of images in val (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val shuffle (default 0)")
    parser.add_argument("--split-file", default=None, help="text file of val image ids, one a line")
    parser.add_argument(
        "--class-map",
        default=None,
        help="comma-separated TYPE or TYPE=NAME entries, e.g. 'Car,Van=car,Pedestrian=person' "
        "(default: the 8 classes of Ultralytics' kitti.yaml, DontCare dropped)",
    )
    parser.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    args = parser.parse_args(argv)
    def build() -> Path:
        class_map = None if args.class_map is None else _parse_class_map_arg(args.class_map)
        return convert_kitti(args.root, args.out, class_map=class_map, val_fraction=args.val_fraction,
                             seed=args.seed, split_file=args.split_file, copy=args.copy)

    return run_cli(build, LOGGER)


if __name__ == "__main__":
    sys.exit(main())
