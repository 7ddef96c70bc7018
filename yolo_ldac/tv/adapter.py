"""torchvision Faster R-CNN adapted for channel pruning: build, load, trace, protect, save.

:class:`FasterRCNNAdapter` wraps a torchvision ``FasterRCNN`` so that the project's engine, criteria and
compensations work on it unchanged:

- ``adapter(images)`` (a ``(B, 3, H, W)`` tensor in [0, 1]) runs the detector's own modules in its own order
  (transform, backbone + FPN, RPN head, proposal filtering, RoI pooling, box head, box predictor) and returns the
  raw head outputs as a tuple of tensors: what torch-pruning traces, hooks measure, and
  :func:`detections_from_trace` turns back into the detector's detections (checked equal by the tests).
- ``adapter.batch_loss(batch)`` is the sum of torchvision's Faster R-CNN loss dict (RPN objectness and box, RoI
  classifier and box), computed in whatever mode the adapter is in, so the loss-based criteria (taylor, group
  Fisher, the LDAC trace) score channels with BN statistics untouched. The RoIs per image of the last pass are in
  ``roi_counts`` (Group Fisher sums the box head's per-RoI mask gradients per image with them).
- ``adapter.predict(images)`` is the detector's own inference (list of ``{boxes, labels, scores}``).
- ``complexity_mode()`` makes the box head run on exactly ``rois`` RoIs per image (the RPN's test-time post-NMS
  count, the most it runs on), so counted FLOPs do not depend on what the RPN proposes for a blank image.

``FrozenBatchNorm2d`` (torchvision's pretrained builders) becomes a plain ``BatchNorm2d`` with the same statistics
(:func:`convert_frozen_batchnorm`), which torch-pruning can prune; with pretrained weights its statistics stay frozen
in training (``frozen_stats``), as torchvision's were. The RPN's objectness/box convolutions and the box predictor's
class/box layers are never pruned (:func:`protected_layers`); everything else (backbone, FPN, RPN conv, box head)
is, through one dependency graph over the whole network.

Example:
    >>> adapter = build_adapter("fasterrcnn_mobilenet_v3_large_fpn", {0: "cat"}, imgsz=128)  # doctest: +SKIP
    >>> outs = adapter(torch.rand(1, 3, 128, 128))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolo_ldac.errors import LDACError

FORMAT = "yolo-ldac/torchvision-detection"  # the checkpoint kind this module writes


def builder_names() -> list[str]:
    """Every torchvision Faster R-CNN builder (``fasterrcnn_resnet50_fpn``, ``fasterrcnn_mobilenet_v3_large_fpn``, ...).

    Example:
        >>> "fasterrcnn_mobilenet_v3_large_fpn" in builder_names()
        True
    """
    from torchvision.models import detection, list_models

    return sorted(n for n in list_models(module=detection) if n.startswith("fasterrcnn"))


def is_builder_name(src: Any) -> bool:
    """Whether ``src`` names a torchvision Faster R-CNN builder (the name alone routes to this path)."""
    return isinstance(src, str) and src.startswith("fasterrcnn") and "/" not in src and "." not in src


def is_torchvision_source(src: Any) -> bool:
    """A torchvision Faster R-CNN builder name, a checkpoint :func:`save_checkpoint` wrote, or an adapter: what
    the facade's ``YOLOLDAC`` runs on this path."""
    return isinstance(src, FasterRCNNAdapter) or is_builder_name(src) or is_checkpoint(src)


def convert_frozen_batchnorm(module: nn.Module) -> int:
    """Replace every ``torchvision.ops.FrozenBatchNorm2d`` in ``module`` by an equal ``nn.BatchNorm2d``, in place;
    return how many were replaced. The new BN holds the same scale, shift, statistics and eps, so in eval mode it
    computes the same output; it is marked ``frozen_stats`` (its statistics stay fixed in training).

    Example:
        >>> from torchvision.ops import FrozenBatchNorm2d
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4))
        >>> convert_frozen_batchnorm(net), type(net[1]).__name__
        (1, 'BatchNorm2d')
    """
    from torchvision.ops import FrozenBatchNorm2d

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(child.weight.shape[0], eps=child.eps)
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            bn.frozen_stats = True
            bn.to(child.weight.device)
            setattr(module, name, bn)
            count += 1
        else:
            count += convert_frozen_batchnorm(child)
    return count


class ConvFC(nn.Conv2d):
    """A fully connected layer over flattened ``(C, r, r)`` RoI features, as the equal ``r x r`` convolution (no
    padding), flattened after: the same numbers, and torch-pruning couples its input channels with the FPN's outputs
    directly instead of through its flatten index mapping (which loops on ResNet's four pooled levels).

    Example:
        >>> fc = nn.Linear(2 * 3 * 3, 4)
        >>> conv = ConvFC.from_linear(fc, 2, 3)
        >>> x = torch.rand(5, 2, 3, 3)
        >>> bool(torch.allclose(conv(x), fc(x.flatten(1)), atol=1e-6))
        True
    """

    @classmethod
    def from_linear(cls, fc: nn.Linear, channels: int, r: int) -> "ConvFC":
        if fc.in_features != channels * r * r:
            raise LDACError(f"a box-head layer takes {fc.in_features} inputs, not {channels} x {r} x {r}")
        conv = cls(channels, fc.out_features, r, bias=fc.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(fc.weight.reshape(fc.out_features, channels, r, r))
            if fc.bias is not None:
                conv.bias.copy_(fc.bias)
        return conv.to(fc.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(1)


class ConvTwoMLPHead(nn.Module):
    """torchvision's ``TwoMLPHead`` with ``fc6`` as a :class:`ConvFC` (same state-dict names)."""

    def __init__(self, fc6: ConvFC, fc7: nn.Linear):
        super().__init__()
        self.fc6, self.fc7 = fc6, fc7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc7(torch.relu(self.fc6(x))))


def convert_box_head(detector: nn.Module) -> int:
    """Turn the box head's first fully connected layer (``TwoMLPHead.fc6``; the ``Flatten, Linear`` of
    ``FastRCNNConvFCHead``) into a :class:`ConvFC`, in place; returns how many were converted (0 or 1)."""
    from torchvision.models.detection.faster_rcnn import TwoMLPHead

    heads = detector.roi_heads
    size = heads.box_roi_pool.output_size
    r = int(size[0] if isinstance(size, (tuple, list)) else size)
    head = heads.box_head
    if isinstance(head, TwoMLPHead):
        heads.box_head = ConvTwoMLPHead(ConvFC.from_linear(head.fc6, head.fc6.in_features // (r * r), r), head.fc7)
        return 1
    if isinstance(head, nn.Sequential):
        for i in range(len(head) - 1):
            if isinstance(head[i], nn.Flatten) and isinstance(head[i + 1], nn.Linear):
                fc = head[i + 1]
                head[i] = nn.Identity()
                head[i + 1] = ConvFC.from_linear(fc, fc.in_features // (r * r), r)
                return 1
    return 0


def torchvision_state_dict(detector: nn.Module) -> dict[str, torch.Tensor]:
    """The detector's state dict in torchvision's layout (each :class:`ConvFC` weight as the Linear it stands for),
    so that the builder's own model loads it."""
    sd = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    for name, m in detector.named_modules():
        if isinstance(m, ConvFC):
            w = sd[f"{name}.weight"]
            sd[f"{name}.weight"] = w.reshape(w.shape[0], -1).contiguous()
    return sd


class FasterRCNNAdapter(nn.Module):
    """A torchvision Faster R-CNN as the project's engine sees it (see the module docstring).

    Args:
        detector: a torchvision ``FasterRCNN`` (its ``FrozenBatchNorm2d`` are converted in place).
        builder: the torchvision builder name it was made with (saved with the weights, to rebuild it).
        names: class names ``{0: name, ...}``; the detector has ``len(names) + 1`` classes, 0 the background.
        imgsz: the square input size (the detector's transform keeps it: ``min_size = max_size = imgsz``).
        frozen_stats: keep every BN's statistics fixed in training (pretrained weights).
        build_kwargs: the builder's keyword arguments besides classes, size and RoIs (saved, to rebuild it).
    """

    def __init__(self, detector: nn.Module, builder: str, names: dict[int, str], imgsz: int,
                 frozen_stats: bool = False, build_kwargs: dict | None = None):
        super().__init__()
        convert_frozen_batchnorm(detector)
        convert_box_head(detector)
        self.detector = detector
        self.builder = builder
        self.names = {int(k): str(v) for k, v in dict(names).items()}
        self.imgsz = int(imgsz)
        self.frozen_stats = bool(frozen_stats)
        self.build_kwargs = dict(build_kwargs or {})
        self.roi_counts: list[int] | None = None
        self._fixed_rois: int | None = None
        if self.frozen_stats:
            for m in detector.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.frozen_stats = True

    # --- settings the checkpoint records --------------------------------------------------------------------
    @property
    def rois(self) -> int:
        """Proposals per image the box head runs on at test time (the RPN's post-NMS count)."""
        return int(self.detector.rpn._post_nms_top_n["testing"])

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def train(self, mode: bool = True) -> "FasterRCNNAdapter":
        super().train(mode)
        if mode:
            for m in self.modules():  # pretrained statistics stay as they are (torchvision's FrozenBatchNorm2d)
                if isinstance(m, nn.BatchNorm2d) and getattr(m, "frozen_stats", False):
                    m.eval()
        return self

    @contextlib.contextmanager
    def complexity_mode(self):
        """Inside: the box head runs on exactly :attr:`rois` boxes per image (for counting FLOPs)."""
        self._fixed_rois = self.rois
        try:
            yield
        finally:
            self._fixed_rois = None

    # --- the forward passes ---------------------------------------------------------------------------------
    def _images(self, x, targets=None):
        return self.detector.transform(list(x), targets)  # a (B, 3, H, W) tensor or a list of (3, H, W) images

    def _rpn(self, image_list, features: dict, targets=None):
        """The RPN of torchvision's ``RegionProposalNetwork.forward``, with its raw head outputs returned too."""
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        rpn = self.detector.rpn
        feats = list(features.values())
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(image_list, feats)
        n = len(anchors)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        obj_flat, deltas_flat = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas_flat.detach(), anchors).view(n, -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, obj_flat, image_list.image_sizes, per_level)
        losses = {}
        if targets is not None:
            labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
            regression_targets = rpn.box_coder.encode(matched, anchors)
            loss_obj, loss_box = rpn.compute_loss(obj_flat, deltas_flat, labels, regression_targets)
            losses = {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}
        return boxes, objectness, deltas, losses

    def _fixed_boxes(self, image_sizes, n: int | None = None) -> list[torch.Tensor]:
        """``n`` (default :attr:`rois`) copies of the whole-image box per image."""
        dev = next(self.parameters()).device
        return [torch.tensor([[0.0, 0.0, float(w), float(h)]], device=dev).repeat(n or self._fixed_rois, 1)
                for h, w in image_sizes]

    def _box_head(self, features: dict, proposals: list[torch.Tensor], image_sizes):
        heads = self.detector.roi_heads
        self.roi_counts = [int(p.shape[0]) for p in proposals]
        x = heads.box_roi_pool(features, proposals, image_sizes)
        x = heads.box_head(x)
        return heads.box_predictor(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Raw head outputs ``(*rpn objectness per level, *rpn box deltas per level, class logits, box regression)``
        of images ``x`` (B, 3, H, W) in [0, 1]."""
        image_list, _ = self._images(x)
        features = self.detector.backbone(image_list.tensors)
        proposals, objectness, deltas, _ = self._rpn(image_list, features)
        if self._fixed_rois:
            proposals = self._fixed_boxes(image_list.image_sizes)
        else:  # an image with no proposal (a blank one) still runs the box head, so the graph reaches it
            full = self._fixed_boxes(image_list.image_sizes, 1)
            proposals = [p if len(p) else f for p, f in zip(proposals, full)]
        class_logits, box_regression = self._box_head(features, proposals, image_list.image_sizes)
        self._last = (proposals, image_list.image_sizes, [tuple(t.shape[-2:]) for t in x])
        return (*objectness, *deltas, class_logits, box_regression)

    def loss_dict(self, images: torch.Tensor, targets: list[dict], extra=None) -> dict[str, torch.Tensor]:
        """torchvision's Faster R-CNN loss dict for ``images`` (B, 3, H, W in [0, 1]) and ``targets`` (per image
        ``boxes`` xyxy in pixels, ``labels`` 1..C), in the adapter's current mode. ``extra(features, targets,
        image_list)`` may add terms (LDAC's push loss), computed on the same features."""
        targets = [{k: v.to(images.device) for k, v in t.items()} for t in targets]
        image_list, targets = self._images(images, targets)
        features = self.detector.backbone(image_list.tensors)
        proposals, _, _, losses = self._rpn(image_list, features, targets)
        heads = self.detector.roi_heads
        proposals, _, labels, regression_targets = heads.select_training_samples(proposals, targets)
        class_logits, box_regression = self._box_head(features, proposals, image_list.image_sizes)
        from torchvision.models.detection.roi_heads import fastrcnn_loss

        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        losses.update(loss_classifier=loss_cls, loss_box_reg=loss_box)
        if extra is not None:
            losses.update(extra(features, targets, image_list))
        return losses

    def batch_loss(self, batch: dict) -> torch.Tensor:
        """Sum of :meth:`loss_dict` on a batch ``{"img", "targets"}`` (what the loss-based criteria differentiate)."""
        device = next(self.parameters()).device
        return sum(self.loss_dict(batch["img"].to(device).float(), batch["targets"]).values())

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict]:
        """The detector's own inference on ``images`` (B, 3, H, W in [0, 1]): per image ``boxes``, ``labels``,
        ``scores`` (the adapter's mode is left as it was)."""
        was = self.training
        self.eval()
        try:
            return self.detector(list(images))
        finally:
            self.train(was)


@torch.no_grad()
def detections_from_trace(adapter: FasterRCNNAdapter, outputs: tuple[torch.Tensor, ...]) -> list[dict]:
    """The detections the detector would output, from the raw outputs of ``adapter(x)`` (its last call): the
    RoI heads' post-processing and the transform's rescaling, as ``FasterRCNN.forward`` does."""
    proposals, image_sizes, original = adapter._last
    heads = adapter.detector.roi_heads
    boxes, scores, labels = heads.postprocess_detections(outputs[-2], outputs[-1], proposals, image_sizes)
    dets = [{"boxes": b, "labels": l, "scores": s} for b, s, l in zip(boxes, scores, labels)]
    return adapter.detector.transform.postprocess(dets, image_sizes, original)


def protected_layers(adapter: FasterRCNNAdapter) -> list[nn.Module]:
    """The layers whose outputs are never pruned: the RPN's objectness and box convolutions (one output per anchor)
    and the box predictor's class and box layers (one per class)."""
    det = adapter.detector
    keep = [det.rpn.head.cls_logits, det.rpn.head.bbox_pred]
    pred = det.roi_heads.box_predictor
    keep += [pred.cls_score, pred.bbox_pred]
    return keep


# --- building and loading ----------------------------------------------------------------------------------------
def _builder(name: str):
    from torchvision.models import get_model_builder

    names = builder_names()
    if name not in names:
        from yolo_ldac.cfg import closest

        hint = closest(name, names)
        raise LDACError(f"unknown torchvision Faster R-CNN builder '{name}'" + (f"; did you mean '{hint}'?" if hint
                        else "") + f" (available: {', '.join(names)})")
    return get_model_builder(name)


def _offline() -> bool:
    return os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true") or \
        os.environ.get("YOLO_LDAC_OFFLINE", "").lower() in ("1", "true")


def load_weights(builder: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """A Faster R-CNN state dict from a local file (a state dict, or torchvision's reference-script checkpoint with
    a ``model`` key; opened with ``weights_only=True``) or from a torchvision weights name (``DEFAULT``, ``COCO_V1``
    or the full ``FasterRCNN_..._Weights.COCO_V1``), downloaded into torch's hub cache when online.

    Example:
        >>> sd = load_weights("fasterrcnn_mobilenet_v3_large_fpn", "frcnn_coco.pth")  # doctest: +SKIP
    """
    path = Path(str(weights)).expanduser()
    if path.suffix in {".pt", ".pth", ".bin", ".ckpt"} or path.exists():
        if not path.is_file():
            raise LDACError(f"weights file '{weights}' not found")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LDACError(f"weights '{weights}' is not a state dict torch can open safely "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
            sd = sd["model"]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise LDACError(f"weights '{weights}' holds no state dict (name -> tensor)")
        return sd
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    name = str(weights).split(".")[-1]
    if name not in enum.__members__ and name != "DEFAULT":
        raise LDACError(f"weights '{weights}' is neither a file nor a weights name of {builder} "
                        f"(available: DEFAULT, {', '.join(enum.__members__)})")
    w = enum.DEFAULT if name == "DEFAULT" else enum[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if _offline() and not cached.is_file():
        raise LDACError(f"weights {enum.__name__}.{w.name} must be downloaded ({w.url}) and this run is offline: "
                        "pass a local state dict file, weights=path/to/file.pth")
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # no network, a proxy error, a truncated file
        raise LDACError(f"weights {enum.__name__}.{w.name} could not be downloaded from {w.url} "
                        f"({type(e).__name__}); pass a local state dict file, weights=path/to/file.pth") from None


def build_detector(builder: str, num_classes: int, imgsz: int, rois: int | None = None, **kwargs: Any) -> nn.Module:
    """A randomly initialised torchvision Faster R-CNN ``builder`` with ``num_classes`` + 1 classes (0 the
    background), no backbone weights, its transform at ``imgsz`` (``min_size = max_size = imgsz``) and ``rois``
    proposals per image at test time (default: the builder's)."""
    fn = _builder(builder)
    extra = dict(min_size=int(imgsz), max_size=int(imgsz))
    if rois:
        extra["rpn_post_nms_top_n_test"] = int(rois)
    extra.update(kwargs)
    try:
        return fn(weights=None, weights_backbone=None, num_classes=int(num_classes) + 1, **extra)
    except TypeError as e:
        raise LDACError(f"{builder}: {e}") from None


def build_adapter(builder: str, names: dict[int, str], imgsz: int, weights: str | Path | None = None,
                  rois: int | None = None, seed: int = 0, **kwargs: Any) -> FasterRCNNAdapter:
    """A :class:`FasterRCNNAdapter` for the torchvision ``builder`` with classes ``names``.

    ``weights`` (a local state dict or a torchvision weights name, :func:`load_weights`): loaded into the detector;
    when their class count differs from ``len(names) + 1`` the box predictor is replaced by a new one for ``names``
    (seeded), everything else is kept. Without weights the detector is initialised from ``seed``.

    Example:
        >>> a = build_adapter("fasterrcnn_mobilenet_v3_large_fpn", {0: "a", 1: "b"}, imgsz=128, rois=50)
        >>> a.num_classes, a.rois
        (2, 50)
    """
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    names = {int(k): str(v) for k, v in dict(names).items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if weights is None:
            return FasterRCNNAdapter(build_detector(builder, len(names), imgsz, rois, **kwargs), builder, names, imgsz,
                                     build_kwargs=kwargs)
        sd = load_weights(builder, weights)
        key = "roi_heads.box_predictor.cls_score.weight"
        if key not in sd:
            raise LDACError(f"weights '{weights}' are not a Faster R-CNN state dict (no {key})")
        det = build_detector(builder, int(sd[key].shape[0]) - 1, imgsz, rois, **kwargs)
        _load_matching(det, sd, str(weights), builder)
        if int(sd[key].shape[0]) != len(names) + 1:
            pred = det.roi_heads.box_predictor
            det.roi_heads.box_predictor = FastRCNNPredictor(pred.cls_score.in_features, len(names) + 1)
    return FasterRCNNAdapter(det, builder, names, imgsz, frozen_stats=True, build_kwargs=kwargs)


def _load_matching(det: nn.Module, sd: dict, src: str, builder: str) -> None:
    own = det.state_dict()
    bad = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if bad or missing or unexpected:
        what = (f"shape of {bad[0]}" if bad else f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise LDACError(f"weights '{src}' do not fit {builder} ({what}; {len(bad) + len(missing) + len(unexpected)} "
                        "keys differ)")
    det.load_state_dict(sd, strict=False)


# --- checkpoints -------------------------------------------------------------------------------------------------
def checkpoint_meta(adapter: FasterRCNNAdapter) -> dict:
    """What rebuilds the architecture: builder, classes, input size, RoIs, whether BN statistics are frozen."""
    return {"format": FORMAT, "version": 1, "builder": adapter.builder, "names": adapter.names,
            "imgsz": adapter.imgsz, "rois": adapter.rois, "frozen_stats": adapter.frozen_stats,
            "build_kwargs": adapter.build_kwargs}


def save_checkpoint(adapter: FasterRCNNAdapter, path: str | Path) -> Path:
    """Write ``adapter`` to ``path`` (``.pt``: plain types and tensors only, so ``torch.load(weights_only=True)``
    opens it) and the portable pair beside it (``.safetensors`` + ``.json``), atomically. The state dict is in
    torchvision's layout (:func:`torchvision_state_dict`): the builder's model with the saved widths loads it.

    Example:
        >>> save_checkpoint(adapter, "runs/frcnn/exp/weights/best.pt")  # doctest: +SKIP
    """
    import json

    from safetensors.torch import save_file

    from yolo_ldac.utils.io import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = checkpoint_meta(adapter)
    sd = torchvision_state_dict(adapter.detector)
    import io

    buf = io.BytesIO()
    torch.save({"meta": meta, "state_dict": sd}, buf)
    atomic_write_bytes(path, buf.getvalue())
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(sd, str(tmp))
    os.replace(tmp, path.with_suffix(".safetensors"))
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    return path


def is_checkpoint(path: Any) -> bool:
    """Whether ``path`` is a checkpoint :func:`save_checkpoint` wrote (``.pt``, or its ``.json`` / ``.safetensors``),
    read without unpickling anything."""
    import json
    import zipfile

    if not isinstance(path, (str, Path)):
        return False
    p = Path(path)
    if p.suffix in {".json", ".safetensors"}:
        j = p.with_suffix(".json")
        try:
            return j.is_file() and json.loads(j.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            return False
    if p.suffix != ".pt" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as z:
            pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return pkl is not None and FORMAT.encode() in z.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False


def load_checkpoint(path: str | Path) -> FasterRCNNAdapter:
    """Rebuild a (pruned) adapter from :func:`save_checkpoint`'s ``.pt`` or its portable ``.json``/``.safetensors``
    pair: the builder's dense architecture, every layer resized to the saved shapes, then the weights.

    Example:
        >>> adapter = load_checkpoint("runs/frcnn/exp/weights/best.pt")  # doctest: +SKIP
    """
    import json

    p = Path(path)
    if p.suffix in {".json", ".safetensors"}:
        from safetensors.torch import load_file

        meta = json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
        sd = load_file(str(p.with_suffix(".safetensors")))
    else:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        meta, sd = ckpt["meta"], ckpt["state_dict"]
    if meta.get("format") != FORMAT:
        raise LDACError(f"'{path}' is not a yolo-ldac torchvision checkpoint")
    names = {int(k): v for k, v in meta["names"].items()}
    kwargs = dict(meta.get("build_kwargs") or {})
    det = build_detector(meta["builder"], len(names), meta["imgsz"], meta["rois"], **kwargs)
    resize_to_state_dict(det, sd)
    det.load_state_dict(sd, strict=True)
    return FasterRCNNAdapter(det, meta["builder"], names, meta["imgsz"], frozen_stats=meta.get("frozen_stats", False),
                             build_kwargs=kwargs)


def resize_to_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Give every Conv2d, BatchNorm2d and Linear of ``model`` the shapes its entries in ``sd`` have (a pruned model's
    widths; a depthwise convolution stays depthwise), so that ``load_state_dict(sd)`` fits."""
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        w = sd.get(pre + "weight")
        if isinstance(m, nn.Conv2d) and w is not None:
            depthwise = m.groups > 1 and m.groups == m.in_channels
            out, per_group = int(w.shape[0]), int(w.shape[1])
            if depthwise:
                m.groups = out
            m.out_channels, m.in_channels = out, per_group * m.groups
            m.weight = nn.Parameter(torch.empty_like(w))
            m.bias = nn.Parameter(torch.empty(out)) if pre + "bias" in sd else None
        elif isinstance(m, nn.BatchNorm2d):
            ref = sd.get(pre + "running_mean", w)
            if ref is None:
                continue
            n = int(ref.shape[0])
            m.num_features = n
            if m.affine:
                m.weight = nn.Parameter(torch.empty(n))
                m.bias = nn.Parameter(torch.empty(n))
            m.register_buffer("running_mean", torch.zeros(n))
            m.register_buffer("running_var", torch.ones(n))
        elif isinstance(m, nn.Linear) and w is not None:
            m.out_features, m.in_features = int(w.shape[0]), int(w.shape[1])
            m.weight = nn.Parameter(torch.empty_like(w))
            m.bias = nn.Parameter(torch.empty(int(w.shape[0]))) if pre + "bias" in sd else None
