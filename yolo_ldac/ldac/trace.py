"""LDAC's trace (``criterion=ldac``): how much the detector's objective at the head depends on each channel, with
object locations taken the way the head takes them (METHOD.md, "Tracing importance across layers", revised).

The objective is Ultralytics' detection loss, whose task-aligned assigner gives each box its cells/anchors on every
level (class, box and DFL terms; background cells included), so the signal is location-aware by construction. Per
image n and channel c, ``s_nc = sum_hw (a_c,hw - mu_c) dL/da_c,hw``: the loss change when the channel is replaced by
its calibration mean ``mu_c``, which is what the compensation does with a removed channel (a channel whose output is
mostly its constant part costs nothing to remove). The per-image values of the coupled channels of a dependency
group are summed, then squared and summed over images (Fisher aggregation); the score is divided by the FLOPs one
channel of the group costs, so that one global ranking compares the objective's change per FLOP in every layer,
with no per-layer normalisation. The same signal scores the head's inner convolutions.

Where this departs from the paper (METHOD.md): the paper traces the discriminant J itself; measured, that trace picked
worse than random inside a layer (``criterion=ldac_j``), while this one keeps the base's mAP50-95 up to 40 % of the
FLOPs removed in one step with ``compensate=lsq`` (benchmarks/results/retention/composite-400x160/FINDINGS.md).

Example:
    >>> from yolo_ldac.pruning.criteria import build_criterion
    >>> type(build_criterion("ldac")).__name__
    'LDACCriterion'
"""

from __future__ import annotations

from yolo_ldac.pruning.criteria import register_criterion
from yolo_ldac.pruning.fisher_variants import CenteredGroupFisherFlopsCriterion


@register_criterion("ldac")
class LDACCriterion(CenteredGroupFisherFlopsCriterion):
    """LDAC trace: Fisher of the assigner-located detection loss per channel (mean-replacement mask), per FLOP."""
