"""Pieces the benchmark scripts share (``compare.py``, ``grid.py``, ``retention.py``, ...): ONNX Runtime CPU latency
of a checkpoint, the train image count of a dataset and its short name.

Latency is measured the same way in every script: the checkpoint is exported to ONNX with the project's export
(:func:`yolo_ldac.export.export_model`, parity against PyTorch on), then timed in ONNX Runtime on the CPU at batch 1
on Ultralytics' letterboxed ``bus.jpg``: ``warmup`` untimed runs, then the median, min and p90 of ``runs`` timed
runs, once with ``intra_op_num_threads=1`` and once with ``os.cpu_count()``.

Example:
    >>> from common import onnx_latency  # doctest: +SKIP  (benchmarks/ on sys.path, as the scripts have it)
    >>> onnx_latency("runs/grid/ldac__r0.5__s0/weights/best.pt", imgsz=160, runs=50)["ms_1_thread"]  # doctest: +SKIP
    12.3
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

WARMUP = 10


def measure_latency(onnx_path: str | Path, imgsz: int, runs: int, threads: int, warmup: int = WARMUP) -> dict:
    """ONNX Runtime CPU latency of one batch-1 image: median (and spread) in ms over ``runs`` after ``warmup``."""
    import numpy as np
    import onnxruntime as ort

    from yolo_ldac.export import preprocess_image

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = preprocess_image(None, imgsz)
    if "float16" in inp.type:
        x = x.astype(np.float16)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(times[0], 3),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3), "threads": int(threads),
            "runs": runs, "warmup": warmup}


def onnx_latency(weights: str | Path, imgsz: int, runs: int, warmup: int = WARMUP) -> dict:
    """Export ``weights`` (a ``.pt``) to ONNX beside it, parity checked, and time it with 1 thread and all threads.

    Returns the ``latency`` record of a run's JSON: ``ms_1_thread`` / ``ms_all_threads`` (medians), the full
    statistics per setting (``threads_1``, ``threads_all``), the ONNX path and the export / total seconds.
    """
    from yolo_ldac.export import export_model

    t0 = time.perf_counter()
    onnx_path = export_model(str(weights), format="onnx", imgsz=int(imgsz), parity=True, device="cpu", batch=1)
    t_export = time.perf_counter() - t0
    n_all = os.cpu_count() or 1
    one = measure_latency(onnx_path, imgsz, runs, threads=1, warmup=warmup)
    every = measure_latency(onnx_path, imgsz, runs, threads=n_all, warmup=warmup)
    return {"provider": "CPUExecutionProvider", "batch": 1, "imgsz": int(imgsz), "onnx": str(onnx_path),
            "parity": "ok (max rel diff <= 1e-3 vs PyTorch on bus.jpg)",
            "threads_1": one, "threads_all": every, "all_threads": n_all,
            "ms_1_thread": one["median_ms"], "ms_all_threads": every["median_ms"],
            "export_s": round(t_export, 2), "wall_s": round(time.perf_counter() - t0, 2)}


def count_images(data: str | Path, split: str = "train") -> int | None:
    """Images in ``split`` of the dataset yaml ``data`` (``None`` when the yaml or its images cannot be read)."""
    try:
        from ultralytics.data.utils import check_det_dataset

        info = check_det_dataset(str(data))
    except Exception:
        return None
    from yolo_ldac.data._common import split_image_files

    return len(split_image_files(info.get(split)))


def data_key(data: str | Path) -> str:
    """Short dataset name: the yaml's stem, or its folder's name for the generic ``data.yaml``.

    Example:
        >>> data_key("datasets/composite-400x160/data.yaml"), data_key("kitti.yaml")
        ('composite-400x160', 'kitti')
    """
    data = Path(data)
    return data.parent.name if data.stem.lower() in {"data", "dataset"} else data.stem
