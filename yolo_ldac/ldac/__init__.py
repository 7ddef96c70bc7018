"""LDAC math: discriminant statistics and location-aware samples (pure torch, no Ultralytics import)."""

from yolo_ldac.ldac.sampling import box_samples
from yolo_ldac.ldac.stats import DiscriminantStats, batch_objective

__all__ = ["DiscriminantStats", "batch_objective", "box_samples"]
