"""A pedestrian detection dataset from a real street video, with TEACHER labels (not human annotations).

The frames come from ``vtest.avi``, the 795-frame, 768x576, 10 fps street scene that Debian's ``opencv-doc``
package installs (``/usr/share/doc/opencv-doc/examples/data/vtest.avi``), or from any video given. Every
``every``-th frame is taken.

**The labels are teacher labels.** No person drew these boxes: every box is a prediction of a COCO YOLO
detector (default ``yolo11n-coco.pt``), class ``person`` (COCO id 0) with confidence >= ``conf`` (0.5),
written as class 0 ``person``. They inherit the detector's errors: missed people (small, occluded, at the
image border), false positives, and loose or merged boxes. A model trained or evaluated on this dataset is
measured against the teacher, not against ground truth, so mAP here is agreement with yolo11n, and a student
that equals the teacher scores high whether or not the teacher is right. ``pedestrian.json`` says the same in
its ``labels`` field.

The split is in time: the first 70 % of the selected frames are train, the last 30 % val, so val shows
later moments of the scene. It is the same camera and the same street, and the frames on either side of the
boundary are close in time (``every`` / fps seconds), so val measures generalisation to new moments and new
people positions, not to new scenes.

Each frame is JPEG-encoded first and the detector runs on the decoded JPEG, i.e. on exactly the pixels that
``cv2.imread`` returns for the written file, so re-running the detector on a written image gives its labels.
The detector runs on the CPU at the frame's long side rounded up to a multiple of 32 (768 for vtest.avi at
its native size), so the frames are not downscaled for labelling.

Layout::

    out_dir/images/{train,val}/frame_00000.jpg  # the number is the frame's index in the video
    out_dir/labels/{train,val}/frame_00000.txt  # "0 xc yc w h", normalised; empty file: no person detected
    out_dir/data.yaml                           # path (absolute), train, val, names {0: person}
    out_dir/pedestrian.json                     # video, frames, split boundary, detector sha256, conf, counts

A build with the same parameters (same video and weights bytes) over an existing complete output returns
at once without running the detector again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolo_ldac.data.composite import _OPENCV_DOC, _file_sha256
from yolo_ldac.data._common import clear_split_files, run_cli
from yolo_ldac.errors import LDACError

from yolo_ldac.utils.log import LOGGER  # noqa: E402

META_FILE = "pedestrian.json"
_FORMAT = 1  # bump when the builder's output changes
_VIDEO_NAME = "vtest.avi"
_TRAIN_FRAC = 0.7
_PERSON = 0  # COCO class id
_JPEG_QUALITY = 95
LABEL_NOTE = (
    "TEACHER LABELS: every box is a prediction of the COCO detector {weights} (class 'person', confidence >= "
    "{conf}); they are not human annotations and include the detector's misses and false positives."
)


def find_vtest() -> Path | None:
    """Path of ``vtest.avi`` from the Debian package ``opencv-doc``, or None when it is not installed."""
    try:
        out = subprocess.run(["dpkg", "-L", "opencv-doc"], capture_output=True, text=True, timeout=30)
        files = [Path(p) for p in out.stdout.split("\n")] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        files = []
    for path in [p for p in files if p.name == _VIDEO_NAME] + [_OPENCV_DOC / "examples" / "data" / _VIDEO_NAME]:
        if path.is_file():
            return path
    return None


def default_weights() -> Path | str:
    """``yolo11n-coco.pt`` in ``$YOLO_LDAC_SHARED_WEIGHTS`` or ``<repo>/../shared/weights`` if it is there,
    else ``"yolo11n.pt"`` (which Ultralytics finds locally or downloads, when online)."""
    from yolo_ldac.utils.env import shared_weights_dir

    path = shared_weights_dir() / "yolo11n-coco.pt"
    return path if path.is_file() else "yolo11n.pt"


def _load_detector(weights):
    """The Ultralytics model and its checkpoint path; LDACError unless it is a COCO-style person detector."""
    from ultralytics import YOLO

    if isinstance(weights, Path) or os.sep in str(weights):
        if not Path(weights).is_file():
            raise LDACError(f"detector weights not found: {weights}")
    from yolo_ldac.safe_load import check_checkpoint, is_trusted, policy

    check_checkpoint(weights)
    try:
        with policy(is_trusted()):  # weights_only unless the caller trusts the file
            model = YOLO(str(weights))
    except Exception as e:  # noqa: BLE001 - offline download, corrupt file, ...
        raise LDACError(f"could not load detector weights {weights}: {e}") from e
    if model.task != "detect":
        raise LDACError(f"{weights} is a {model.task!r} model; a detection model is needed")
    if str(model.names.get(_PERSON, "")) != "person":
        raise LDACError(f"{weights} is not a COCO detector: class {_PERSON} is {model.names.get(_PERSON)!r}, "
                        f"not 'person'")
    path = Path(getattr(model, "ckpt_path", None) or weights)
    if not path.is_file():
        raise LDACError(f"detector weights file not found: {path}")
    return model, path


def person_boxes(model, image: np.ndarray, imgsz: int, conf: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The detector's ``person`` boxes on a BGR image: (xywhn (n, 4) float32, conf (n,) float32).

    The detector runs on the CPU at ``imgsz`` with threshold ``conf``; boxes of other classes are dropped.
    This is the labelling function of :func:`build_pedestrian`.
    """
    r = model.predict(image, imgsz=imgsz, conf=conf, device="cpu", verbose=False)[0]
    cls = r.boxes.cls.cpu().numpy().reshape(-1)
    keep = (cls == _PERSON) & (r.boxes.conf.cpu().numpy().reshape(-1) >= conf)
    xywhn = r.boxes.xywhn.cpu().numpy().reshape(-1, 4)[keep].astype(np.float32)
    return xywhn, r.boxes.conf.cpu().numpy().reshape(-1)[keep].astype(np.float32)


def _read_frames(video: Path, every: int, max_frames: int | None, imgsz: int | None):
    """Yield (frame index, BGR frame) of every ``every``-th frame, resized to long side ``imgsz`` if given."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise LDACError(f"cannot open video {video}")
    try:
        idx = n = 0
        while max_frames is None or n < max_frames:
            if idx % every:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if imgsz is not None and max(frame.shape[:2]) != imgsz:
                    h, w = frame.shape[:2]
                    s = imgsz / max(h, w)
                    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
                yield idx, np.ascontiguousarray(frame)
                n += 1
            idx += 1
    finally:
        cap.release()


def _cached(out_dir: Path, key: dict) -> Path | None:
    """data.yaml if ``out_dir`` holds a complete build with the same ``key``, else None."""
    meta_file, data_yaml = out_dir / META_FILE, out_dir / "data.yaml"
    if not (meta_file.is_file() and data_yaml.is_file()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    for split, frames in meta.get("frames", {}).items():
        for i in frames:
            stem = f"frame_{i:05d}"
            if not ((out_dir / "images" / split / f"{stem}.jpg").is_file()
                    and (out_dir / "labels" / split / f"{stem}.txt").is_file()):
                return None
    return data_yaml


def build_pedestrian(
    out_dir: str | Path,
    video: str | Path | None = None,
    every: int = 5,
    imgsz: int | None = None,
    conf: float = 0.5,
    weights: str | Path | None = None,
    seed: int = 0,
    max_frames: int | None = None,
) -> Path:
    """Write the pedestrian dataset (frames of a video, TEACHER labels) and return its ``data.yaml``.

    The labels are predictions of a COCO detector, not human annotations (see the module docstring): each
    frame's boxes are the detector's ``person`` boxes with confidence >= ``conf``, as class 0 ``person``.

    Args:
        out_dir: output directory; its images/labels train/val folders are rewritten.
        video: the video file; default :func:`find_vtest` (``vtest.avi`` of opencv-doc).
        every: take frames 0, every, 2*every, ... of the video.
        imgsz: resize each frame to this long side (aspect kept) before writing and labelling; None keeps
            the video's size (768x576 for vtest.avi).
        conf: least detector confidence of a kept person box.
        weights: COCO YOLO detection checkpoint (the teacher). Default :func:`default_weights`.
        seed: recorded only: frame selection, split and labelling have no randomness (CPU inference).
        max_frames: use at most this many selected frames (the first ones in time).

    The first ``round(0.7 * n)`` selected frames (in time) are train, the rest val; ``pedestrian.json``
    records the video frame index of the first val frame (``split_frame``).

    Raises:
        LDACError: no video / missing video, unreadable video, bad arguments, fewer than 2 frames, missing or
            non-COCO weights.
    """
    if every < 1 or (max_frames is not None and max_frames < 2) or not 0.0 < conf < 1.0 \
            or (imgsz is not None and imgsz < 32):
        raise LDACError(f"need every >= 1, max_frames >= 2 (or None), 0 < conf < 1 and imgsz >= 32 (or None), "
                        f"got every={every}, max_frames={max_frames}, conf={conf}, imgsz={imgsz}")
    if video is None:
        video = find_vtest()
        if video is None:
            raise LDACError(f"{_VIDEO_NAME} not found: install the Debian package opencv-doc or pass a video")
    video = Path(video).expanduser().resolve()
    if not video.is_file():
        raise LDACError(f"video not found: {video}")
    if weights is None:
        weights = default_weights()
    elif (isinstance(weights, Path) or os.sep in str(weights)) and not Path(weights).is_file():
        raise LDACError(f"detector weights not found: {weights}")
    cap = cv2.VideoCapture(str(video))
    ok = cap.isOpened()
    n_video = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
    fps = float(cap.get(cv2.CAP_PROP_FPS)) if ok else 0.0
    cap.release()
    if not ok:
        raise LDACError(f"cannot open video {video} (not a video OpenCV can read)")

    out_dir = Path(out_dir).expanduser().resolve()
    weights_sha = _file_sha256(Path(weights)) if Path(weights).is_file() else None
    key = {"format": _FORMAT, "video_sha256": _file_sha256(video), "weights_sha256": weights_sha,
           "every": every, "imgsz": imgsz, "conf": conf, "max_frames": max_frames, "seed": seed}
    if weights_sha is not None:
        hit = _cached(out_dir, key)
        if hit is not None:
            LOGGER.info(f"pedestrian: {out_dir} is up to date, not re-labelling")
            return hit

    model, weights_path = _load_detector(weights)
    if weights_sha is None:  # "yolo11n.pt" resolved by Ultralytics
        key["weights_sha256"] = weights_sha = _file_sha256(weights_path)
        hit = _cached(out_dir, key)
        if hit is not None:
            return hit

    # Read and JPEG-encode first: the split needs the number of frames.
    frames = []  # (video frame index, jpeg bytes)
    for idx, frame in _read_frames(video, every, max_frames, imgsz):
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 0])
        if not ok:
            raise LDACError(f"could not encode frame {idx} of {video}")
        frames.append((idx, buf.tobytes()))
    if len(frames) < 2:
        raise LDACError(f"{video} gave {len(frames)} frame(s) with every={every}; 2 or more are needed")
    n_train = min(len(frames) - 1, max(1, int(round(_TRAIN_FRAC * len(frames)))))

    (out_dir / META_FILE).unlink(missing_ok=True)  # an interrupted build is never taken as cached
    clear_split_files(out_dir)
    for f in (out_dir / "labels").glob("*.cache") if (out_dir / "labels").is_dir() else ():
        f.unlink()

    counts = {s: {"images": 0, "boxes": 0, "images_without_person": 0} for s in ("train", "val")}
    used = {"train": [], "val": []}
    shape = None
    det_imgsz = None
    for k, (idx, jpg) in enumerate(frames):
        split = "train" if k < n_train else "val"
        image = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)  # == cv2.imread of the file
        shape = image.shape[:2]
        det_imgsz = int(-(-max(shape) // 32) * 32)
        xywhn, _ = person_boxes(model, image, det_imgsz, conf)
        stem = f"frame_{idx:05d}"
        for sub in ("images", "labels"):
            (out_dir / sub / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "images" / split / f"{stem}.jpg").write_bytes(jpg)
        lines = "".join(f"0 {x:.8f} {y:.8f} {w:.8f} {h:.8f}\n" for x, y, w, h in xywhn.tolist())
        (out_dir / "labels" / split / f"{stem}.txt").write_text(lines)
        used[split].append(idx)
        c = counts[split]
        c["images"] += 1
        c["boxes"] += len(xywhn)
        c["images_without_person"] += int(len(xywhn) == 0)

    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(out_dir), "train": "images/train", "val": "images/val",
                                         "names": {0: "person"}}, sort_keys=False))
    meta = {
        "labels": LABEL_NOTE.format(weights=weights_path.name, conf=conf),
        "label_source": "detector",
        "human_annotations": False,
        "key": key,
        "video": str(video),
        "video_frames": n_video,
        "video_fps": fps,
        "frame_size": [int(shape[1]), int(shape[0])],
        "every": every,
        "detector": {"weights": weights_path.name, "weights_path": str(weights_path), "sha256": weights_sha,
                     "imgsz": det_imgsz, "conf": conf, "class": "person", "coco_id": _PERSON, "device": "cpu"},
        "split": f"in time: first {n_train} of {len(frames)} selected frames train, the rest val",
        "split_frame": used["val"][0],
        "frames": used,
        "counts": counts,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    LOGGER.info(f"pedestrian (teacher labels from {weights_path.name}): "
                + "; ".join(f"{s}: {c['images']} frames, {c['boxes']} boxes" for s, c in counts.items()))
    return data_yaml


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m yolo_ldac.data.pedestrian OUT``: build the dataset and print the data.yaml path."""
    parser = argparse.ArgumentParser(
        prog="python -m yolo_ldac.data.pedestrian",
        description="Frames of a street video (default: opencv-doc's vtest.avi) with TEACHER labels: person boxes "
                    "predicted by a COCO detector, not human annotations. Split in time: first 70%% train.",
    )
    parser.add_argument("out", help="output directory")
    parser.add_argument("--video", default=None, help="video file (default: vtest.avi of opencv-doc)")
    parser.add_argument("--every", type=int, default=5, help="take every N-th frame (default 5)")
    parser.add_argument("--imgsz", type=int, default=None, help="resize frames to this long side (default: keep)")
    parser.add_argument("--conf", type=float, default=0.5, help="least detector confidence (default 0.5)")
    parser.add_argument("--weights", default=None, help="COCO detector checkpoint (default yolo11n-coco.pt)")
    parser.add_argument("--max-frames", type=int, default=None, help="use at most N selected frames")
    args = parser.parse_args(argv)
    return run_cli(lambda: build_pedestrian(args.out, video=args.video, every=args.every, imgsz=args.imgsz,
                                            conf=args.conf, weights=args.weights, max_frames=args.max_frames), LOGGER)


if __name__ == "__main__":
    sys.exit(main())
