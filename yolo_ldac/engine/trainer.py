"""Training a pruned detector with the real Ultralytics trainer.

Ultralytics' trainer rebuilds the model from its yaml, which would silently train a dense model. This subclass
hands the trainer the pruned module itself.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from ultralytics.models.yolo.detect import DetectionTrainer


class PrunedDetectionTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` that trains the module it is given, never a model rebuilt from yaml.

    Example:
        >>> trainer = PrunedDetectionTrainer(pruned, overrides={"data": "shapes.yaml", "epochs": 1})  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        self.pruned_model = model
        overrides = dict(overrides or {})
        overrides.setdefault("model", "pruned.pt")  # only a label: setup_model below never loads it
        super().__init__(overrides=overrides, _callbacks=_callbacks)

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> nn.Module:
        return self.pruned_model

    def setup_model(self):
        self.pruned_model.criterion = None  # rebuilt with this run's loss gains
        self.model = self.pruned_model
        return None


class LDACTrainer(PrunedDetectionTrainer):
    """Trains a (pruned) detector with the LDAC push loss (:class:`yolo_ldac.ldac.loss.LDACDetectionLoss`).

    With ``decay=True`` (the final fine-tuning) the push weights fall linearly to zero over the epochs.
    """

    def __init__(self, model: nn.Module, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None,
                 push: dict | None = None, decay: bool = False):
        self.push = dict(push or {})
        self.decay = decay
        super().__init__(model, overrides=overrides, _callbacks=_callbacks)
        if decay:
            self.add_callback("on_train_epoch_start", self._decay_push)

    def _setup_train(self):
        from ultralytics.utils.torch_utils import unwrap_model

        from yolo_ldac.ldac.loss import LDACDetectionLoss

        super()._setup_train()
        model = unwrap_model(self.model)  # on its device now, with this run's args and class weights
        model.criterion = LDACDetectionLoss(model, **self.push)

    def _decay_push(self, trainer) -> None:
        crit = getattr(self.model, "criterion", None)
        if crit is None:
            return
        scale = max(0.0, 1.0 - self.epoch / max(self.epochs, 1))
        for key in ("alpha", "beta", "gamma"):
            if key in self.push:
                setattr(crit, key, self.push[key] * scale)
