"""Datasets that the project makes itself (no download)."""

from yolo_ldac.data.shapes import make_shapes_dataset

__all__ = ["make_shapes_dataset"]
