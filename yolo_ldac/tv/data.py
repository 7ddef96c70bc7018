"""A YOLO-format ``data.yaml`` read into torchvision detection targets.

Images of a split are listed as Ultralytics lists them (a folder, a ``.txt`` file of paths, or a list of either,
resolved by :func:`yolo_ldac.data.check.check_data`), their label files found by Ultralytics' ``img2label_paths``.
Each image is resized so that its longer side is ``imgsz`` and padded at the bottom and right to ``imgsz`` x
``imgsz`` (boxes keep their pixel coordinates); a box ``cls cx cy w h`` (or a polygon, as its bounding box)
becomes ``boxes`` (x1, y1, x2, y2 in those pixels) and ``labels`` ``cls + 1`` (0 is torchvision's background).
A batch is ``{"img": (B, 3, imgsz, imgsz) float in [0, 1], "targets": [{"boxes", "labels"}, ...], "files": [...]}``.

Example:
    >>> from yolo_ldac.data import make_shapes_dataset
    >>> ds = YoloDetectionDataset.from_yaml(make_shapes_dataset("datasets/shapes"), "train", imgsz=128)  # doctest: +SKIP
    >>> ds[0]["targets"]["labels"]  # doctest: +SKIP
    tensor([2, 1])
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from yolo_ldac.errors import LDACError

MIN_BOX = 1.0  # boxes narrower or lower than this (pixels, after resizing) are dropped: torchvision rejects them


def split_images(data: dict, split: str) -> list[Path]:
    """The image files of ``split`` (``train`` / ``val``) of a resolved data dict, sorted."""
    from ultralytics.data.utils import IMG_FORMATS

    entries = data.get(split)
    if entries is None:
        raise LDACError(f"the dataset has no '{split}' split")
    files: list[Path] = []
    for entry in entries if isinstance(entries, (list, tuple)) else [entries]:
        p = Path(entry)
        if p.is_dir():
            files += [f for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS]
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    f = Path(line) if Path(line).is_absolute() else (p.parent / line)
                    files.append(f.resolve())
        elif p.is_file():
            files.append(p)
    if not files:
        raise LDACError(f"no images found for the '{split}' split ({entries})")
    return sorted(set(files))


def read_labels(path: Path) -> np.ndarray:
    """``(n, 5)`` ``cls cx cy w h`` (normalised) of a YOLO label file; a polygon line gives its bounding box; a
    missing file is a background image."""
    if not path.is_file():
        return np.zeros((0, 5), dtype=np.float64)
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        v = line.split()
        if not v:
            continue
        nums = [float(x) for x in v]
        if len(nums) == 5:
            rows.append(nums)
        elif len(nums) >= 7 and len(nums) % 2 == 1:
            xs, ys = nums[1::2], nums[2::2]
            x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
            rows.append([nums[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        else:
            raise LDACError(f"{path}: a label line must be 'cls cx cy w h' or a polygon, got {len(nums)} numbers")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


class YoloDetectionDataset(torch.utils.data.Dataset):
    """Images and YOLO labels of one split as torchvision targets (see the module docstring).

    Args:
        images: image files; labels are found with Ultralytics' ``img2label_paths``.
        imgsz: side of the square every image is resized and padded to.
        augment: random horizontal flips (training).
    """

    def __init__(self, images: list[Path], imgsz: int, augment: bool = False):
        from ultralytics.data.utils import img2label_paths

        self.images = [Path(p) for p in images]
        self.labels = [Path(p) for p in img2label_paths([str(p) for p in self.images])]
        self.imgsz = int(imgsz)
        self.augment = augment

    @classmethod
    def from_yaml(cls, data: str | Path | dict, split: str, imgsz: int, augment: bool = False) -> "YoloDetectionDataset":
        """The ``split`` of ``data`` (a data.yaml path, or the dict :func:`~yolo_ldac.data.check.check_data` returns)."""
        if not isinstance(data, dict):
            from yolo_ldac.data.check import check_data

            data = check_data(str(data))
        return cls(split_images(data, split), imgsz, augment)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        """Image ``i`` as a (3, imgsz, imgsz) float tensor and its target, without augmentation."""
        img = cv2.imread(str(self.images[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise LDACError(f"cannot read image {self.images[i]}")
        h0, w0 = img.shape[:2]
        s = self.imgsz / max(h0, w0)
        h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR if s != 1 else cv2.INTER_NEAREST)
        canvas = np.zeros((self.imgsz, self.imgsz, 3), dtype=np.uint8)
        canvas[:h, :w] = img[:, :, ::-1]  # BGR -> RGB
        x = torch.from_numpy(np.ascontiguousarray(canvas)).permute(2, 0, 1).float() / 255.0
        lab = read_labels(self.labels[i])
        cx, cy, bw, bh = lab[:, 1] * w, lab[:, 2] * h, lab[:, 3] * w, lab[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        ok = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX)
        target = {"boxes": torch.as_tensor(boxes[ok], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(lab[ok, 0].astype(np.int64) + 1, dtype=torch.int64)}
        return x, target

    def __getitem__(self, i: int) -> dict:
        x, target = self.load(i)
        if self.augment and torch.rand(1).item() < 0.5:
            x = x.flip(-1)
            # The image was padded on the right: flip the padded canvas, boxes mirror about its full width.
            b = target["boxes"].clone()
            b[:, [0, 2]] = self.imgsz - target["boxes"][:, [2, 0]]
            target["boxes"] = b
        return {"img": x, "targets": target, "file": str(self.images[i])}


def collate(items: list[dict]) -> dict:
    """``{"img": (B, 3, S, S), "targets": [...], "files": [...]}`` of dataset items."""
    return {"img": torch.stack([it["img"] for it in items]), "targets": [it["targets"] for it in items],
            "files": [it["file"] for it in items]}


def make_loader(dataset: YoloDetectionDataset, batch: int, shuffle: bool, seed: int = 0,
                workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` (seeded order when shuffled)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(dataset, batch_size=max(1, int(batch)), shuffle=shuffle, generator=gen,
                                       num_workers=int(workers), collate_fn=collate)


def calibration_batches(dataset: YoloDetectionDataset, batch: int, n_batches: int, seed: int = 0) -> list[dict]:
    """``n_batches`` batches of ``batch`` training images in a fixed seeded order, without augmentation (what the
    criteria and compensations measure on)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed)))
    order = order[: max(1, int(batch)) * max(1, int(n_batches))].tolist()
    out = []
    for s in range(0, len(order), max(1, int(batch))):
        items = []
        for i in order[s:s + batch]:
            x, t = dataset.load(i)
            items.append({"img": x, "targets": t, "file": str(dataset.images[i])})
        out.append(collate(items))
    return out
