"""LDAC's push (``push=ldac``): the location-aware discriminant loss on what stays, and the fade of what goes.

L = L_det + alpha * (-J) + beta * L_cov (:class:`yolo_ldac.ldac.loss.LDACDetectionLoss`) while the channels the
coming step removes (chosen by the run's criterion) fade to zero output (:mod:`yolo_ldac.push.fade`), so the step
is lossless. With ``fade=False`` the first version's L1 on their BN scales (``gamma``) is used instead, and the step
scores again. In the final fine-tuning the weights decay linearly to zero.

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
from yolo_ldac.push import PUSHES
from yolo_ldac.push.fade import FadingPush


@PUSHES.register("ldac")
class LDACPush(FadingPush):
    """Location-aware discriminant loss (-J, decorrelation) on what stays; the next step's channels fade out."""

    trains_before_first_step = True
    needs_data = True

    def __init__(self, seed: int = 0, alpha: float = 0.01, beta: float = 0.01, gamma: float = 1e-4,
                 pool: str = "max", background: int = 0, rho: float = 0.1, level_assign: bool = False,
                 fade: bool = True, fade_end: float = 0.5, **_: Any):
        super().__init__(seed=seed, fade=fade, fade_end=fade_end)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.samples = SampleConfig(pool=pool, background=background, rho=rho, level_assign=level_assign)
        self.align_masks: dict[str, torch.Tensor] = {}  # BN layer name -> channels the next step removes

    def after_choice(self, model: nn.Module, chosen: dict[str, list[int]]) -> None:
        """Without the fade: mark the channels the next step would remove; their BN scales get the L1."""
        if self.fade:
            self.align_masks = {}
            return
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
        super().on_epoch_start(trainer, final)
        if not final:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        crit = getattr(unwrap_model(trainer.model), "criterion", None)
        if crit is None:
            return
        scale = max(0.0, 1.0 - trainer.epoch / max(trainer.epochs, 1))
        crit.alpha, crit.beta, crit.gamma = self.alpha * scale, self.beta * scale, self.gamma * scale

    def round_info(self) -> dict:
        if self.fade:
            return super().round_info()
        return {"push_channels": int(sum(int(m.sum()) for m in self.align_masks.values()))}
