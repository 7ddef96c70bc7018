"""Training a pruned detector with the real Ultralytics trainer.

Ultralytics' trainer rebuilds the model from its yaml, which would silently train a dense model. These subclasses
train the module they are given (``model=``, or ``trainer.model`` set before ``train()``). Their per-epoch weights
are named ``epoch_last.pt`` / ``epoch_best.pt`` (not ``last.pt`` / ``best.pt``): inside a yolo-ldac run only
``weights/best.pt`` is a finished model.

A phase is resumed by passing ``resume_from=<that phase's epoch_last.pt>``: the module's weights, the optimizer, EMA
and epoch come from that file. Ultralytics' own ``resume`` key is never used (it takes the newest ``last.pt`` found
anywhere under the working directory).

Multi-GPU (``device=0,1``): Ultralytics' launcher (``ultralytics.utils.dist.generate_ddp_file``) pickles, with
cloudpickle, ``type(trainer)``, ``vars(trainer.args)``, ``trainer.model`` and ``trainer.callbacks``, and every worker
runs ``Cls(cfg=cfg, overrides=args, _callbacks=callbacks)``, then ``trainer.model = model`` and ``train()``. So the
constructors take Ultralytics' arguments first, the module is ``trainer.model`` from construction on (the parent
pickles it), and what Ultralytics' args cannot hold (``lr_scale``, ``resume_from``, the push and ``final``) travels
in the callbacks dict as a :class:`TrainerExtras` (a no-op callback), from which a worker's constructor restores it.
The push's hooks are module-level functions of the trainer they are called with (a bound method would pickle the
parent's trainer with it), and the push loss is built in :meth:`PushTrainer._setup_train`, which runs in every worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, RANK

from yolo_ldac.errors import LDACError
from yolo_ldac.utils.io import AtomicPath, atomic_write_text

EPOCH_LAST, EPOCH_BEST = "epoch_last.pt", "epoch_best.pt"
SCHEDULE_FILE = "schedule.json"  # in the phase folder: optimizer steps and the lr the training used
EXTRAS_EVENT = "on_pretrain_routine_start"  # the callback list a TrainerExtras rides in (called once, a no-op)


@dataclass
class TrainerExtras:
    """A trainer's settings beyond Ultralytics' args. A callable no-op, so that it can ride in the callbacks dict,
    the part of a trainer that Ultralytics' DDP launcher pickles and hands to every worker's constructor.

    Example:
        >>> extras = TrainerExtras(lr_scale=0.25)
        >>> extras(None) is None, TrainerExtras.find({"on_pretrain_routine_start": [extras]}).lr_scale
        (True, 0.25)
    """

    lr_scale: float = 1.0
    resume_from: str | None = None
    push: Any = None
    final: bool = False

    def __call__(self, trainer) -> None:
        return None

    @staticmethod
    def find(callbacks: dict | None) -> "TrainerExtras | None":
        for fn in (callbacks or {}).get(EXTRAS_EVENT, []):
            if isinstance(fn, TrainerExtras):
                return fn
        return None


class PrunedTrainerMixin:
    """Makes an Ultralytics task trainer train the module it is given, never a model rebuilt from yaml; mixed into
    each task's trainer (:class:`PrunedDetectionTrainer`, ... : :func:`trainer_class`).

    Args:
        cfg, overrides, _callbacks: as for Ultralytics' trainers (the signature its DDP workers call).
        model: the (pruned) module to train; it can also be set as ``trainer.model`` before ``train()``.
        resume_from: a phase's ``epoch_last.pt`` to continue from.
        lr_scale: every optimizer group's lr is multiplied by it.

    Example:
        >>> trainer = PrunedDetectionTrainer(model=pruned, overrides={"data": "shapes.yaml", "epochs": 1})  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None,
                 model: nn.Module | None = None, resume_from: str | Path | None = None, lr_scale: float = 1.0,
                 **extra: Any):
        if isinstance(cfg, nn.Module):
            raise LDACError("pass the module as model=..., the first argument is Ultralytics' cfg")
        extras = TrainerExtras.find(_callbacks)
        if extras is None:  # built here, not rebuilt in a DDP worker: record what the workers will need
            extras = TrainerExtras(lr_scale=float(lr_scale), resume_from=str(resume_from) if resume_from else None,
                                   **extra)
            _callbacks = dict(_callbacks) if _callbacks else _default_callbacks()
            _callbacks[EXTRAS_EVENT] = [*_callbacks.get(EXTRAS_EVENT, []), extras]
        self.extras = extras
        self.lr_scale = float(extras.lr_scale)
        self.resume_from = Path(extras.resume_from) if extras.resume_from else None
        overrides = dict(overrides or {})
        overrides.setdefault("model", "pruned.pt")  # only a label: setup_model below never loads it
        overrides["resume"] = False  # see the module docstring
        csv = self.resume_from.parent.parent / "results.csv" if self.resume_from else None
        rows = csv.read_bytes() if csv is not None and csv.is_file() else None
        super().__init__(cfg=cfg, overrides=overrides, _callbacks=_callbacks)  # deletes results.csv unless resuming
        if rows is not None and RANK in {-1, 0}:  # a resumed phase continues its own results.csv
            self.csv.write_bytes(rows)
        # Ultralytics' DDP launch removes save_dir unless resuming; a resumed phase keeps its epoch_last.pt there.
        self.resume = self.resume_from is not None
        # Atomic: a full disk mid-epoch leaves the previous epoch's weights, never a truncated file to resume from.
        self.last, self.best = AtomicPath(self.wdir) / EPOCH_LAST, AtomicPath(self.wdir) / EPOCH_BEST
        if model is not None:
            self.model = model  # what the DDP launcher pickles for its workers

    @property
    def pruned_model(self) -> nn.Module:
        if not isinstance(self.model, nn.Module):
            raise LDACError(f"{type(self).__name__} trains a given module: pass model=... or set trainer.model")
        return self.model

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

    def final_eval(self):
        self.write_schedule()  # before Ultralytics strips the EMA and its update count from the checkpoints
        super().final_eval()

    def write_schedule(self) -> None:
        """Write ``schedule.json`` (optimizer steps = EMA updates, lr0 and optimizer after ``optimizer=auto`` and
        ``lr_scale``) in the phase folder: under multi-GPU the launching process trained nothing itself and reads
        what its workers did from there."""
        if RANK not in {-1, 0}:
            return
        ema = getattr(self, "ema", None)
        atomic_write_text(self.save_dir / SCHEDULE_FILE, json.dumps({
            "updates": int(getattr(ema, "updates", 0) or 0), "lr0": float(self.args.lr0),
            "optimizer": str(self.args.optimizer), "world_size": int(self.world_size)}))

    def setup_model(self):
        model = self.pruned_model
        model.criterion = None  # rebuilt with this run's loss gains
        if self.resume_from is None:
            return None
        from yolo_ldac.safe_load import load_model_and_checkpoint

        weights, ckpt = load_model_and_checkpoint(self.resume_from)  # under the run's trust policy
        # As Ultralytics resumes: the module starts from the last epoch's EMA weights; optimizer, EMA, epoch and
        # best fitness are restored from the checkpoint by resume_training().
        model.load_state_dict(weights.float().state_dict())
        return ckpt


def _default_callbacks() -> dict:
    from ultralytics.utils import callbacks

    return callbacks.get_default_callbacks()


def _push_epoch_start(trainer) -> None:
    trainer.push.on_epoch_start(trainer, final=trainer.final)


def _push_batch_end(trainer) -> None:
    trainer.push.on_batch_end(trainer, final=trainer.final)


class PrunedDetectionTrainer(PrunedTrainerMixin, DetectionTrainer):
    """A ``DetectionTrainer`` that trains the module it is given (:class:`PrunedTrainerMixin`)."""


class PrunedSegmentationTrainer(PrunedTrainerMixin, SegmentationTrainer):
    """A ``SegmentationTrainer`` that trains the module it is given (:class:`PrunedTrainerMixin`)."""


class PrunedPoseTrainer(PrunedTrainerMixin, PoseTrainer):
    """A ``PoseTrainer`` that trains the module it is given (:class:`PrunedTrainerMixin`)."""


class PrunedOBBTrainer(PrunedTrainerMixin, OBBTrainer):
    """An ``OBBTrainer`` that trains the module it is given (:class:`PrunedTrainerMixin`)."""


class PushTrainerMixin(PrunedTrainerMixin):
    """Trains a (pruned) model with a push's loss (:meth:`yolo_ldac.push.Push.make_loss`); ``final`` marks the
    fine-tuning after the last prune step (a push may decay its terms there).

    Example:
        >>> trainer = PushTrainer(model=pruned, overrides={"data": "shapes.yaml"}, push=build_push("ldac"))  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None,
                 model: nn.Module | None = None, resume_from: str | Path | None = None, push=None,
                 final: bool = False, lr_scale: float = 1.0):
        rebuilt = TrainerExtras.find(_callbacks) is not None  # a DDP worker: the hooks came with the callbacks
        super().__init__(cfg=cfg, overrides=overrides, _callbacks=_callbacks, model=model, resume_from=resume_from,
                         lr_scale=lr_scale, push=push, final=bool(final))
        self.push, self.final = self.extras.push, self.extras.final
        if self.push is not None and not rebuilt:
            self.add_callback("on_train_epoch_start", _push_epoch_start)
            self.add_callback("on_train_batch_end", _push_batch_end)

    def _setup_train(self):
        from ultralytics.utils.torch_utils import unwrap_model

        super()._setup_train()
        if self.push is None:
            return
        model = unwrap_model(self.model)  # on its device now, with this run's args and class weights
        loss = self.push.make_loss(model, final=self.final)
        if loss is not None:
            model.criterion = loss

    def optimizer_step(self):
        if self.push is not None:
            self.push.before_optimizer_step(self, final=self.final)
        super().optimizer_step()


class PushTrainer(PushTrainerMixin, DetectionTrainer):
    """A detector's :class:`PushTrainerMixin`."""


class PushSegmentationTrainer(PushTrainerMixin, SegmentationTrainer):
    """A segmentation model's :class:`PushTrainerMixin`."""


class PushPoseTrainer(PushTrainerMixin, PoseTrainer):
    """A pose model's :class:`PushTrainerMixin`."""


class PushOBBTrainer(PushTrainerMixin, OBBTrainer):
    """An obb model's :class:`PushTrainerMixin`."""


_TRAINERS = {"detect": (PrunedDetectionTrainer, PushTrainer), "segment": (PrunedSegmentationTrainer,
             PushSegmentationTrainer), "pose": (PrunedPoseTrainer, PushPoseTrainer), "obb": (PrunedOBBTrainer,
             PushOBBTrainer)}


def trainer_class(task: str, push: bool = True) -> type:
    """The trainer of ``task`` (``detect``, ``segment``, ``pose``, ``obb``): with ``push``, the one that takes a
    push's loss (:class:`PushTrainerMixin`), else the plain one (:class:`PrunedTrainerMixin`).

    Example:
        >>> trainer_class("segment").__name__, trainer_class("detect", push=False).__name__
        ('PushSegmentationTrainer', 'PrunedDetectionTrainer')
    """
    from yolo_ldac.tasks import task_spec

    return _TRAINERS[task_spec(task).name][1 if push else 0]
