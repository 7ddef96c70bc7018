"""The graph a detector is exported in: the forms the runtimes are fast on, with the same outputs.

Two rewrites, both checked by the export's parity check like any export:

- the head's ``DFL`` becomes :class:`~yolo_ldac.nn.modules.DFLExp` (no Softmax node: ONNX Runtime's took 10 % of a
  YOLO11n's time at 640 px, dense or pruned); on by default (``deploy_graph=True``);
- with ``fuse_splits``, every split block's two first convolutions (``cv0``, ``cv1`` of
  :class:`~yolo_ldac.nn.modules.C2fSplit` and its subclasses, which read the same input) become one convolution and
  a split again (:class:`~yolo_ldac.nn.modules.SplitConvBlock`), the dense graph's shape. Off by default: measured,
  the fused form of a pruned YOLO11n was slower in ONNX Runtime fp32 (1.59x against 1.78x over the dense model: the
  split makes ONNX Runtime leave its blocked layout), OpenVINO fp32 and int8
  (``benchmarks/results/profile/yolo11n-640-splits.md``).

The model is copied; the checkpoint a run saves keeps the trainable two-convolution form.
"""

from __future__ import annotations

import copy

import torch.nn as nn

from yolo_ldac.nn.modules import C2fSplit, DFLExp, SplitConvBlock


def _conv_shape(conv: nn.Module) -> tuple:
    c = conv.conv
    return (c.in_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups, c.bias is not None,
            type(getattr(conv, "act", None)), hasattr(conv, "bn"))


def deploy_form(model: nn.Module, fuse_splits: bool = False, fast_dfl: bool = True) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` in its export form, and how many layers each rewrite changed.

    Example:
        >>> from ultralytics import YOLO
        >>> from yolo_ldac.nn.adapter import rewrite_split_blocks
        >>> model = YOLO("yolo11n.yaml").model.eval()
        >>> _ = rewrite_split_blocks(model)
        >>> deployed, counts = deploy_form(model, fuse_splits=True)
        >>> counts
        {'split_blocks': 8, 'dfl': 1}
    """
    from ultralytics.nn.modules.block import DFL

    model = copy.deepcopy(model)
    counts = {"split_blocks": 0, "dfl": 0}
    layers = getattr(model, "model", None)
    if fuse_splits and isinstance(layers, nn.Sequential):
        for i, layer in enumerate(layers):
            if isinstance(layer, C2fSplit) and _conv_shape(layer.cv0) == _conv_shape(layer.cv1):
                layers[i] = SplitConvBlock.from_split(layer)
                counts["split_blocks"] += 1
    if fast_dfl:
        for module in model.modules():
            dfl = getattr(module, "dfl", None)
            if type(dfl) is DFL:
                module.dfl = DFLExp(dfl.c1)
                counts["dfl"] += 1
    return model, counts
