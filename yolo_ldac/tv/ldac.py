"""LDAC's discriminant push term on a torchvision Faster R-CNN: location-aware samples from the FPN level the RoI
pooler assigns each box to.

torchvision's ``MultiScaleRoIAlign`` maps a box to one FPN level with its ``LevelMapper`` (Lin et al.'s FPN
heuristic, ``k = floor(k0 + log2(sqrt(area) / 224))`` clamped to the levels it pools from); that is where the box
head reads the box, so that is where LDAC takes the box's sample: the max (or mean) over the level's cells whose
centres lie in the box (:func:`yolo_ldac.ldac.sampling.box_samples`). Per level, the discriminant ``J`` of those
samples with the boxes' classes (:func:`yolo_ldac.ldac.stats.batch_objective`) is computed on the training batch,
and ``-ld_alpha * J / (classes present - 1)`` summed over levels is added to torchvision's loss dict as
``loss_ldac``. With one class there is no ``J`` (the term is 0).

Example:
    >>> term = FPNDiscriminantTerm(adapter, alpha=0.01)  # doctest: +SKIP
    >>> adapter.loss_dict(images, targets, extra=term)["loss_ldac"]  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from yolo_ldac.ldac.sampling import box_samples
from yolo_ldac.ldac.stats import batch_objective


def box_levels(pooler, boxes: list[torch.Tensor]) -> torch.Tensor:
    """The level index (into ``pooler.featmap_names``) torchvision's ``MultiScaleRoIAlign`` pools each box from
    (boxes of all images concatenated). The pooler must have run once (it sets its scales on its first call)."""
    if pooler.map_levels is None:
        raise RuntimeError("the RoI pooler has not run yet: its levels are set on its first call")
    return pooler.map_levels(boxes).to(torch.long).flatten()


def level_samples(features: dict, targets: list[dict], pooler, pool: str = "max"
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per FPN level the pooler reads: ``(samples (M_l, C), labels (M_l,) 0-based)`` of the boxes it assigns
    there (``targets`` in the transform's coordinates, i.e. those the detector trains on)."""
    boxes = [t["boxes"] for t in targets]
    if sum(len(b) for b in boxes) == 0:
        return []
    levels = box_levels(pooler, boxes)
    allb = torch.cat(boxes)
    labels = torch.cat([t["labels"] for t in targets]) - 1
    bidx = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=allb.device) for i, b in enumerate(boxes)])
    out = []
    for lvl, (name, scale) in enumerate(zip(pooler.featmap_names, pooler.scales)):
        sel = levels == lvl
        if not bool(sel.any()):
            continue
        stride = int(round(1.0 / float(scale)))
        x = box_samples(features[name], stride, allb[sel], bidx[sel].to(features[name].device), pool=pool)
        out.append((x, labels[sel]))
    return out


class FPNDiscriminantTerm:
    """``extra`` of :meth:`~yolo_ldac.tv.adapter.FasterRCNNAdapter.loss_dict`: ``{"loss_ldac": -alpha * sum_l J_l /
    (classes present at l - 1)}`` on the LevelMapper-assigned samples (see the module docstring)."""

    def __init__(self, adapter, alpha: float = 0.01, rho: float = 0.1, pool: str = "max"):
        self.adapter, self.alpha, self.rho, self.pool = adapter, float(alpha), float(rho), pool
        self.last_j: list[float] = []

    def __call__(self, features: dict, targets: list[dict], image_list) -> dict[str, torch.Tensor]:
        pooler = self.adapter.detector.roi_heads.box_roi_pool
        k = self.adapter.num_classes
        anchor = next(iter(features.values()))
        total = anchor.sum() * 0.0
        self.last_j = []
        for x, y in level_samples(features, targets, pooler, self.pool):
            present = int(torch.unique(y).numel())
            if present < 2:
                continue
            j = batch_objective(x.float(), y, k, rho=self.rho)
            self.last_j.append(float(j.detach()))
            total = total - j / (present - 1)
        return {"loss_ldac": self.alpha * total}
