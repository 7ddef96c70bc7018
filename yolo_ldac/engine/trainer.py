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
