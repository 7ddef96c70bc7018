"""The push loss: L = L_task + alpha * L_LD + beta * L_cov + gamma * L_align (METHOD.md, "The push loss").

``LDACDetectionLoss`` adds the push's terms to the model's own Ultralytics loss (``model.init_criterion()``: the
detection loss, or the segment, pose or obb loss, end-to-end heads' dual loss included): it reads the neck outputs
the head returns as ``feats`` (no hooks, so checkpoints still pickle) and reports ``ld_loss``, ``cov_loss`` and
``align_loss`` as loss items, which Ultralytics turns into progress-bar and results.csv columns.
"""

from __future__ import annotations

import torch
from ultralytics.utils.loss import v8DetectionLoss

from yolo_ldac.ldac.objective import SampleConfig, decorrelation, level_samples, objective_per_level
from yolo_ldac.ldac.pooled import distributed


class LDACDetectionLoss(v8DetectionLoss):
    """Detection loss plus the location-aware discriminant push.

    Args:
        model: the detector (de-paralleled), as for ``v8DetectionLoss``.
        alpha: weight of L_LD = -sum over levels of J (per level divided by classes present - 1).
        beta: weight of L_cov, the mean squared off-diagonal channel correlation of the samples.
        gamma: weight of the L1 penalty on the BN scales of the channels about to be pruned.
        align: ``[(bn, mask)]``: the BN layers and boolean channel masks the alignment penalty acts on.
        samples: sampling and ridge settings.
        pooled: compute J from pooled statistics (:class:`~yolo_ldac.ldac.pooled.PooledObjective`, an EMA of the
            scatter sums over batches with ``momentum``) instead of the batch alone.
        levels: per level, whether its J takes part (``None``: all); see :func:`yolo_ldac.ldac.pooled.real_levels`.
    """

    def __init__(self, model, alpha: float = 0.01, beta: float = 0.01, gamma: float = 1e-4,
                 align: list | None = None, samples: SampleConfig | None = None, pooled: bool = False,
                 momentum: float = 0.9, levels: list[bool] | None = None):
        super().__init__(model)  # strides and the output parsing the push's terms read
        # The task's own loss (masks, keypoints, angles; end-to-end heads (YOLO26, YOLOv10) train both branches with
        # Ultralytics' dual loss, and the push reads the one-to-many branch's features, which the one-to-one
        # branch sees detached).
        self.native = model.init_criterion()
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.align = align or []
        self.samples = samples or SampleConfig()
        self.num_classes = int(model.model[-1].nc)
        self.running_sw: list = []  # EMA of Sw per level, mixed in for batches with few samples per class
        self.levels = levels
        self.pooled = None
        if pooled:
            from yolo_ldac.ldac.objective import total_classes
            from yolo_ldac.ldac.pooled import PooledObjective

            k = total_classes(self.num_classes, self.samples)
            self.pooled = [PooledObjective(k, momentum=momentum, rho=self.samples.rho) for _ in self.stride]

    def update(self) -> None:
        """Ultralytics' trainer decays an end-to-end loss's branch weights once per epoch."""
        if hasattr(self.native, "update"):
            self.native.update()

    def __call__(self, preds, batch):
        out = self.parse_output(preds)
        det, items = self.native(preds, batch)
        if "one2many" in out:
            out = out["one2many"]
        feats = out["feats"]
        bs = feats[0].shape[0]
        zero = feats[0].sum() * 0
        ld = cov = zero
        if self.alpha or self.beta:
            samples = level_samples(feats, self.stride.tolist(), batch, self.num_classes, self.samples)
            if self.alpha and self.pooled is not None:
                ld = zero
                # Under DDP every rank takes part in every level's all-reduce, also one with no boxes there.
                every = distributed()
                for li, ((x, y), obj) in enumerate(zip(samples, self.pooled)):
                    if (len(y) or every) and (self.levels is None or self.levels[li]):
                        j = obj(x, y)  # updates the pooled counts: divide by the classes seen so far - 1
                        ld = ld - j / max(int((obj.counts > 0).sum()) - 1, 1)
            elif self.alpha:
                ld = -sum(objective_per_level(samples, self.num_classes, self.samples, self.running_sw))
            if self.beta:
                cov = sum(decorrelation(x) for x, _ in samples) / len(samples)
        align = zero
        if self.gamma and self.align:
            align = sum(bn.weight[mask.to(bn.weight.device)].abs().sum() for bn, mask in self.align if mask.any())
        extra = self.alpha * ld + self.beta * cov + self.gamma * align
        items = dict(items)
        items.update(ld_loss=ld.detach(), cov_loss=cov.detach(), align_loss=torch.as_tensor(align).detach())
        return torch.cat([det.reshape(-1), (extra * bs).reshape(1)]), items
