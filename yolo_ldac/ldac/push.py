"""LDAC's push (``push=ldac``): the location-aware discriminant loss on what stays, and the release of what goes.

L = L_det + alpha * (-J) + beta * L_cov (:class:`yolo_ldac.ldac.loss.LDACDetectionLoss`) while the channels the
coming step removes (chosen by the run's criterion) are released by ``release``: ``handoff`` (their consumers move to
a least-squares prediction of them from the kept channels, :mod:`yolo_ldac.push.handoff`) or ``fade`` (they fade to
zero output, :mod:`yolo_ldac.push.fade`); either way the step removes exactly them and is lossless. With
``fade=False`` nothing is released: the first version's L1 on their BN scales (``gamma``) is used instead, and the
step scores again.

J comes from pooled statistics (``pooled``: an EMA of the scatter sums over batches, :mod:`yolo_ldac.ldac.pooled`);
before each push, J with the true labels is compared with J with shuffled labels on the calibration batches, and a
level whose ratio is below ``check`` gets no discriminant term in that push (with a notice; ``check=0`` skips the
check). In the final fine-tuning the weights decay linearly to zero.

Example:
    >>> from yolo_ldac.push import build_push
    >>> p = build_push("ldac", alpha=0.01)
    >>> p.trains_before_first_step, p.alpha, type(p.release).__name__
    (True, 0.01, 'HandoffPush')
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.ldac.criterion import conv_wrappers, sample_config_for
from yolo_ldac.ldac.objective import SampleConfig
from yolo_ldac.push import PUSHES, Push
from yolo_ldac.utils.log import LOGGER

RELEASES = ("handoff", "fade")


@torch.no_grad()
def calibration_signal(model: nn.Module, batches: list[dict], samples: SampleConfig, seed: int = 0
                       ) -> list[tuple[float, float]]:
    """Per level, J with the true labels and with shuffled labels over all calibration ``batches`` (pooled)."""
    from yolo_ldac.ldac.objective import head_feats, level_samples, total_classes
    from yolo_ldac.ldac.pooled import label_signal

    nc = int(model.model[-1].nc)
    cfg = sample_config_for(model, samples)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    per_level: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    try:
        for batch in batches:
            _, preds = model(batch["img"].to(device).float())
            for li, (x, y) in enumerate(level_samples(head_feats(preds), model.stride.tolist(), batch, nc, cfg)):
                while len(per_level) <= li:
                    per_level.append([])
                per_level[li].append((x.detach().double().cpu(), y.cpu()))
    finally:
        model.train(was_training)
    pooled = [(torch.cat([x for x, _ in lv]), torch.cat([y for _, y in lv])) for lv in per_level]
    return label_signal(pooled, total_classes(nc, cfg), rho=cfg.rho, seed=seed)


@PUSHES.register("ldac")
class LDACPush(Push):
    """Location-aware discriminant loss (-J from pooled statistics, decorrelation) on what stays; the next step's
    channels are released (handoff or fade) so that the step is lossless."""

    trains_before_first_step = True
    needs_data = True

    def __init__(self, seed: int = 0, alpha: float = 0.01, beta: float = 0.01, gamma: float = 1e-4,
                 pool: str = "max", background: int = 0, rho: float = 0.1, level_assign: bool = False,
                 fade: bool = True, fade_end: float = 0.5, release: str = "handoff", pooled: bool = True,
                 check: float = 2.0, **_: Any):
        super().__init__(seed=seed)
        from yolo_ldac.errors import LDACError

        if release not in RELEASES:
            raise LDACError(f"release={release!r} is not one of {', '.join(RELEASES)}")
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.fade = bool(fade)
        self.samples = SampleConfig(pool=pool, background=background, rho=rho, level_assign=level_assign)
        self.pooled, self.check = bool(pooled), float(check)
        self.release = PUSHES.build(release, seed=seed, fade_end=fade_end) if self.fade else None
        self.align_masks: dict[str, torch.Tensor] = {}  # BN layer name -> channels the next step removes (fade=False)
        self.levels: list[bool] | None = None
        self.signal: list[tuple[float, float]] = []

    def prepare(self, model: nn.Module, pruner, next_ratio: float, batches: list[dict]) -> None:
        if self.alpha and self.check > 0 and batches:
            from yolo_ldac.ldac.pooled import real_levels

            self.signal = calibration_signal(model, batches, self.samples, seed=self.seed)
            self.levels = real_levels(self.signal, self.check)
            off = [f"P{li + 3} ({t:.3g} vs {s:.3g} shuffled)" for li, ((t, s), on) in
                   enumerate(zip(self.signal, self.levels)) if not on]
            if off:
                LOGGER.info(f"push=ldac: J with true labels is below {self.check:g}x J with shuffled labels at "
                            f"{', '.join(off)}: no discriminant term there in this push")
        if self.release is not None:
            self.release.prepare(model, pruner, next_ratio, batches)
            self.align_masks = {}
            return
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

    def planned(self) -> dict[str, list[int]] | None:
        return self.release.planned() if self.release is not None else None

    def make_loss(self, model: nn.Module, final: bool = False):
        from yolo_ldac.ldac.loss import LDACDetectionLoss

        modules = dict(model.named_modules())
        align = [] if final else [(modules[n], m) for n, m in self.align_masks.items() if n in modules]
        return LDACDetectionLoss(model, alpha=self.alpha, beta=self.beta, gamma=self.gamma, align=align,
                                 samples=sample_config_for(model, self.samples), pooled=self.pooled,
                                 levels=None if final else self.levels)

    def on_epoch_start(self, trainer, final: bool = False) -> None:
        if self.release is not None:
            self.release.on_epoch_start(trainer, final)
        if not final:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        crit = getattr(unwrap_model(trainer.model), "criterion", None)
        if crit is None:
            return
        scale = max(0.0, 1.0 - trainer.epoch / max(trainer.epochs, 1))
        crit.alpha, crit.beta, crit.gamma = self.alpha * scale, self.beta * scale, self.gamma * scale

    def before_optimizer_step(self, trainer, final: bool = False) -> None:
        if self.release is not None:
            self.release.before_optimizer_step(trainer, final)

    def on_batch_end(self, trainer, final: bool = False) -> None:
        if self.release is not None:
            self.release.on_batch_end(trainer, final)

    def round_info(self) -> dict:
        info = {"ld_levels_on": [bool(v) for v in self.levels]} if self.levels is not None else {}
        if self.signal:
            info["ld_signal"] = [[round(t, 4), round(s, 4)] for t, s in self.signal]
        if self.release is not None:
            return {**info, **self.release.round_info()}
        return {**info, "push_channels": int(sum(int(m.sum()) for m in self.align_masks.values()))}
