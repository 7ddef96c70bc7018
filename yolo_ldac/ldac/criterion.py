"""LDAC as a pruning criterion: trace the discriminant objective back to every prunable channel.

``score_c = E_batches | sum_hw a_c,hw * dJ/da_c,hw |`` for every output channel ``c`` of every prunable
convolution (its activation after BN and SiLU), where J is the summed location-aware objective at the head
inputs. Autograd carries J back through concat, residual adds and splits, so no hand-written graph walk is
needed. Scores are normalised per layer (divided by the layer's mean) and averaged over the coupled layers of a
dependency group. The head's inner convolutions lie downstream of the head inputs, where J is measured, so
J cannot rank them: their groups are scored by the group L2 norm (DepGraph) instead. The criterion only scores;
LDAC's training before each step is the ``ldac`` push (:mod:`yolo_ldac.ldac.push`).

Measured (METHOD.md, and the retention curves of benchmarks/retention.py), this trace picks worse than random inside
a layer; it is kept, registered as ``ldac_j``, for the ablation. ``criterion=ldac`` is :mod:`yolo_ldac.ldac.trace`.

Example:
    >>> from yolo_ldac.pruning.criteria import build_criterion
    >>> type(build_criterion("ldac_j")).__name__
    'DiscriminantTraceCriterion'
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch_pruning as tp

from yolo_ldac.ldac.objective import SampleConfig, head_feats, level_samples, objective_per_level, total_classes
from yolo_ldac.ldac.stats import DiscriminantStats
from yolo_ldac.pruning.criteria import OUT_FNS, Criterion, group_mean_of_channel_scores, register_criterion  # noqa: F401

SINGLE_CLASS_BACKGROUND = 16  # background cells per image when the data has one class


def conv_wrappers(model: nn.Module) -> dict[nn.Conv2d, nn.Module]:
    """Conv blocks by their inner ``nn.Conv2d`` (Ultralytics ``Conv``, torchvision conv-BN sequences and ResNet blocks:
    :func:`yolo_ldac.pruning.blocks.conv_bn_blocks`): the block output is the channel's activation."""
    from yolo_ldac.pruning.blocks import conv_bn_blocks

    return {conv: block for conv, (block, _) in conv_bn_blocks(model).items()}


def sample_config_for(model: nn.Module, samples: SampleConfig, notice: bool = False) -> SampleConfig:
    """``samples``, with background cells as the second class when the model has one class (J needs two)."""
    if int(model.model[-1].nc) >= 2 or samples.background > 0:
        return samples
    if notice:
        from ultralytics.utils import LOGGER

        LOGGER.info(f"LDAC: one class in the data, background cells ({SINGLE_CLASS_BACKGROUND} per image) "
                    "become the second class")
    return SampleConfig(samples.pool, SINGLE_CLASS_BACKGROUND, samples.rho, samples.level_assign)


@register_criterion("ldac_j")
class DiscriminantTraceCriterion(Criterion):
    """The first version's LDAC trace: |activation x dJ/dactivation| of the discriminant J, per layer normalised.

    Args:
        pool: "max" or "mean" pooling of a box's cells. background: background cells per image as an extra class.
        rho: ridge of the objective, relative to the mean diagonal of Sw.
        tracer: "gradient" (default) or "weights" (utility back-projection).
        level_assign: a box feeds only the pyramid level matching its size.
    """

    needs_data = True

    def __init__(self, seed: int = 0, pool: str = "max", background: int = 0, rho: float = 0.1,
                 tracer: str = "gradient", level_assign: bool = False, **kw: object):
        super().__init__(seed=seed)
        if tracer not in ("gradient", "weights"):
            from yolo_ldac.errors import LDACError

            raise LDACError(f"tracer must be gradient or weights, got {tracer!r}")
        self.tracer = tracer
        self.samples = SampleConfig(pool=pool, background=background, rho=rho, level_assign=level_assign)
        self.scores: dict[nn.Conv2d, torch.Tensor] = {}
        self.level_objective: list[float] = []
        self.projections: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (label, P3 samples, labels)

    # --- scoring ------------------------------------------------------------------------------------------
    def _sample_config(self, model: nn.Module) -> SampleConfig:
        cfg = sample_config_for(model, self.samples, notice=not getattr(self, "_noticed", False))
        self._noticed = True
        return cfg

    def prepare(self, model: nn.Module, batches: Iterable[dict], snapshot: str | None = None) -> None:
        """Trace J over ``batches``: per-channel scores of every Conv block, and J per level (the first trace is
        kept as the "first trace" snapshot of the projection plot)."""
        if snapshot is None and not self.projections:
            snapshot = "first trace"
        cfg = self._sample_config(model)
        wrappers = conv_wrappers(model)
        acts: dict[nn.Module, torch.Tensor] = {}

        def keep_output(module, _inp, out):
            acts[module] = out

        handles = [w.register_forward_hook(keep_output) for w in wrappers.values()]
        sums = {conv: torch.zeros(conv.out_channels, dtype=torch.float64) for conv in wrappers}
        k = total_classes(int(model.model[-1].nc), cfg)
        stats: list[DiscriminantStats] = []
        strides = model.stride.tolist()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        snap_x, snap_y = [], []
        try:
            for batch in batches:
                acts.clear()
                img = batch["img"].to(device).float().requires_grad_(True)  # a graph even with frozen weights
                with torch.enable_grad():
                    _, preds = model(img)
                    samples = level_samples(head_feats(preds), strides, batch, int(model.model[-1].nc), cfg)
                    if not stats:
                        stats = [DiscriminantStats(k, x.shape[1]) for x, _ in samples]
                    for st, (x, y) in zip(stats, samples):
                        if len(y):
                            st.update(x.detach().double().cpu(), y.cpu())
                    snap_x.append(samples[0][0].detach().cpu())
                    snap_y.append(samples[0][1].cpu())
                    j = sum(objective_per_level(samples, int(model.model[-1].nc), cfg))
                    if self.tracer != "gradient" or not j.requires_grad:
                        continue
                    mods = list(acts)
                    grads = torch.autograd.grad(j, [acts[m] for m in mods], allow_unused=True)
                for m, g in zip(mods, grads):
                    if g is not None:
                        contrib = (acts[m].detach() * g).sum(dim=(2, 3)).abs().sum(0)
                        sums[m.conv] += contrib.double().cpu()
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if self.tracer == "weights" and stats:
            from yolo_ldac.ldac.backproject import backproject_scores

            utilities = [st.channel_utility(rho=cfg.rho).float() if st.num_samples else
                         torch.zeros(st.sums.shape[1]) for st in stats]
            images = torch.cat([b["img"] for b in batches][:1]).to(device)
            sums = backproject_scores(model, wrappers, images, utilities)
        self.scores = {conv: (s / s.mean()).float() if s.mean() > 0 else s.float() for conv, s in sums.items()}
        # Convolutions inside the head sit downstream of the head inputs where J is measured: J cannot rank them
        # (their gradient is exactly zero), so their groups fall back to the group L2 norm (see __call__).
        self.head_convs = {m for m in model.model[-1].modules() if isinstance(m, nn.Conv2d)}
        self.level_objective = [st.objective(cfg.rho) if st.num_samples else 0.0 for st in stats]
        if snap_x:
            self.last_samples = (torch.cat(snap_x), torch.cat(snap_y), k)
            if snapshot is not None:
                self.projections.append((snapshot, *self.last_samples[:2]))

    def __call__(self, group) -> torch.Tensor:
        if group[0].dep.target.module in getattr(self, "head_convs", ()):
            return self._head_fallback(group)
        scores = group_mean_of_channel_scores(group, self.scores)
        return scores if scores is not None else torch.zeros(len(group[0].idxs))

    _head_fallback = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")

    # --- reporting ----------------------------------------------------------------------------------------
    def round_info(self) -> dict:
        return {"J_per_level": [round(float(j), 4) for j in self.level_objective]}

    def write_plots(self, run_dir, rounds: list[dict], names: dict | None = None) -> list:
        """``ldac_objective.png`` (J per level per round) and ``ldac_projection.png`` (first vs last trace)."""
        from yolo_ldac.ldac.plots import plot_objective, plot_projection

        out = [plot_objective(rounds, run_dir / "ldac_objective.png")]
        last = getattr(self, "last_samples", None)
        if last is not None:
            snaps = self.projections[:1] + [("last trace", last[0], last[1])]
            out.append(plot_projection(snaps, last[2], run_dir / "ldac_projection.png", names))
        return [p for p in out if p is not None]
