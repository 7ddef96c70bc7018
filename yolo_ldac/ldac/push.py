"""LDAC's push (``push=ldac``): the location-aware discriminant loss, and an L1 on the BN scales of the
channels the coming step removes (chosen by the run's criterion).

L = L_det + alpha * (-J) + beta * L_cov + gamma * L1(doomed BN scales) (:class:`yolo_ldac.ldac.loss.LDACDetectionLoss`).
In the final fine-tuning the weights decay linearly to zero and the L1 has no channels to act on.

Example:
    >>> from yolo_ldac.push import build_push
    >>> p = build_push("ldac", alpha=0.01)
    >>> p.trains_before_first_step, p.alpha
    (True, 0.01)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.ldac.criterion import conv_wrappers, sample_config_for
from yolo_ldac.ldac.objective import SampleConfig
from yolo_ldac.push import PUSHES, Push


@PUSHES.register("ldac")
class LDACPush(Push):
    """Location-aware discriminant push (-J, decorrelation) + L1 on the BN scales of the next step's channels."""

    trains_before_first_step = True
    needs_data = True

    def __init__(self, seed: int = 0, alpha: float = 0.01, beta: float = 0.01, gamma: float = 1e-4,
                 pool: str = "max", background: int = 0, rho: float = 0.1, level_assign: bool = False, **_: Any):
        super().__init__(seed=seed)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.samples = SampleConfig(pool=pool, background=background, rho=rho, level_assign=level_assign)
        self.align_masks: dict[str, torch.Tensor] = {}  # BN layer name -> channels the next step removes

    def prepare(self, model: nn.Module, pruner, next_ratio: float, batches: list[dict]) -> None:
        """Mark the channels the next step would remove (by the run's criterion): their BN scales get the L1."""
        chosen = pruner.choose(next_ratio, batches)
        modules = dict(model.named_modules())
        names = {m: n for n, m in modules.items()}
        wrappers = conv_wrappers(model)
        masks: dict[str, torch.Tensor] = {}
        for root_name, idxs in chosen.items():
            root = modules.get(root_name)
            if root in wrappers:
                bn = wrappers[root].bn
                mask = masks.setdefault(names[bn], torch.zeros(bn.num_features, dtype=torch.bool))
                mask[torch.as_tensor(idxs, dtype=torch.long)] = True
        self.align_masks = masks

    def make_loss(self, model: nn.Module, final: bool = False):
        from yolo_ldac.ldac.loss import LDACDetectionLoss

        modules = dict(model.named_modules())
        align = [] if final else [(modules[n], m) for n, m in self.align_masks.items() if n in modules]
        return LDACDetectionLoss(model, alpha=self.alpha, beta=self.beta, gamma=self.gamma, align=align,
                                 samples=sample_config_for(model, self.samples))

    def on_epoch_start(self, trainer, final: bool = False) -> None:
        if not final:
            return
        crit = getattr(getattr(trainer, "model", None), "criterion", None)
        if crit is None:
            return
        scale = max(0.0, 1.0 - trainer.epoch / max(trainer.epochs, 1))
        crit.alpha, crit.beta, crit.gamma = self.alpha * scale, self.beta * scale, self.gamma * scale

    def round_info(self) -> dict:
        return {"push_channels": int(sum(int(m.sum()) for m in self.align_masks.values()))}
