"""Training a pruned detector with the real Ultralytics trainer.

Ultralytics' trainer rebuilds the model from its yaml, which would silently train a dense model. These subclasses
hand the trainer the pruned module itself. Their per-epoch weights are named ``epoch_last.pt`` / ``epoch_best.pt``
(not ``last.pt`` / ``best.pt``): inside a yolo-ldac run only ``weights/best.pt`` is a finished model.

A phase is resumed by passing ``resume_from=<that phase's epoch_last.pt>``: the module's weights, the optimizer, EMA
and epoch come from that file. Ultralytics' own ``resume`` key is never used (it takes the newest ``last.pt`` found
anywhere under the working directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from ultralytics.models.yolo.detect import DetectionTrainer

from yolo_ldac.utils.io import AtomicPath

EPOCH_LAST, EPOCH_BEST = "epoch_last.pt", "epoch_best.pt"


class PrunedDetectionTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` that trains the module it is given, never a model rebuilt from yaml.

    Example:
        >>> trainer = PrunedDetectionTrainer(pruned, overrides={"data": "shapes.yaml", "epochs": 1})  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None,
                 resume_from: str | Path | None = None, lr_scale: float = 1.0):
        self.pruned_model = model
        self.lr_scale = float(lr_scale)
        self.resume_from = Path(resume_from) if resume_from else None
        overrides = dict(overrides or {})
        overrides.setdefault("model", "pruned.pt")  # only a label: setup_model below never loads it
        overrides["resume"] = False  # see the module docstring
        csv = self.resume_from.parent.parent / "results.csv" if self.resume_from else None
        rows = csv.read_bytes() if csv is not None and csv.is_file() else None
        super().__init__(overrides=overrides, _callbacks=_callbacks)  # deletes results.csv unless resuming
        if rows is not None:  # a resumed phase continues its own results.csv
            self.csv.write_bytes(rows)
        # Atomic: a full disk mid-epoch leaves the previous epoch's weights, never a truncated file to resume from.
        self.last, self.best = AtomicPath(self.wdir) / EPOCH_LAST, AtomicPath(self.wdir) / EPOCH_BEST

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> nn.Module:
        return self.pruned_model

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer (``optimizer=auto`` picks it and its lr), every group's lr times ``lr_scale``:
        the model is already trained, and the lr Ultralytics fits for training from pretrained weights knocks it
        out of its minimum in the first steps (measured: yolo_ldac/cfg/default.yaml, ``lr_scale``)."""
        optimizer = super().build_optimizer(model, name=name, lr=lr, momentum=momentum, decay=decay,
                                            iterations=iterations)
        if self.lr_scale != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale
            self.args.lr0 = float(self.args.lr0) * self.lr_scale
        return optimizer

    def setup_model(self):
        self.pruned_model.criterion = None  # rebuilt with this run's loss gains
        self.model = self.pruned_model
        if self.resume_from is None:
            return None
        from yolo_ldac.safe_load import load_model_and_checkpoint

        weights, ckpt = load_model_and_checkpoint(self.resume_from)  # under the run's trust policy
        # As Ultralytics resumes: the module starts from the last epoch's EMA weights; optimizer, EMA, epoch and
        # best fitness are restored from the checkpoint by resume_training().
        self.pruned_model.load_state_dict(weights.float().state_dict())
        self.resume = True
        return ckpt


class PushTrainer(PrunedDetectionTrainer):
    """Trains a (pruned) detector with a push's loss (:meth:`yolo_ldac.push.Push.make_loss`); ``final`` marks the
    fine-tuning after the last prune step (a push may decay its terms there)."""

    def __init__(self, model: nn.Module, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None,
                 resume_from: str | Path | None = None, push=None, final: bool = False, lr_scale: float = 1.0):
        self.push = push
        self.final = final
        super().__init__(model, overrides=overrides, _callbacks=_callbacks, resume_from=resume_from,
                         lr_scale=lr_scale)
        if push is not None:
            self.add_callback("on_train_epoch_start", self._push_epoch_start)
            self.add_callback("on_train_batch_end", self._push_batch_end)

    def _setup_train(self):
        from ultralytics.utils.torch_utils import unwrap_model

        super()._setup_train()
        if self.push is None:
            return
        model = unwrap_model(self.model)  # on its device now, with this run's args and class weights
        loss = self.push.make_loss(model, final=self.final)
        if loss is not None:
            model.criterion = loss

    def _push_epoch_start(self, trainer) -> None:
        self.push.on_epoch_start(self, final=self.final)

    def _push_batch_end(self, trainer) -> None:
        self.push.on_batch_end(self, final=self.final)

    def optimizer_step(self):
        if self.push is not None:
            self.push.before_optimizer_step(self, final=self.final)
        super().optimizer_step()
