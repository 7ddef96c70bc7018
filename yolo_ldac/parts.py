"""The parts a compression run is assembled from, and the one list of modules that define them.

Three kinds, each with its own registry and configuration key:

==============  ======================================  =====================================================
key             registry                                what a part does
==============  ======================================  =====================================================
``criterion=``  :data:`yolo_ldac.pruning.criteria.CRITERIA`     scores channels (torch-pruning ``Importance``)
``push=``       :data:`yolo_ldac.push.PUSHES`                   the training before each prune step
``compensate=`` :data:`yolo_ldac.pruning.compensate.COMPENSATIONS`  what is done for removed channels' consumers
==============  ======================================  =====================================================

``method=NAME`` is a named preset of the three (:func:`presets`): ``method=ldac`` is LDAC's criterion and
compensation with plain training between the steps (``criterion=ldac push=none compensate=lsq``);
``method=<any other criterion>`` is that criterion with ``push=none`` and ``compensate=mean``.
Explicit keys override the preset: ``method=ldac criterion=group_fisher`` is LDAC's compensation with Group
Fisher's scores; ``method=ldac push=ldac`` adds LDAC's push.

Example:
    >>> resolve_parts({"method": "ldac", "criterion": "group_fisher", "push": None, "compensate": None})
    {'criterion': 'group_fisher', 'push': 'none', 'compensate': 'lsq'}
"""

from __future__ import annotations

import importlib
from typing import Any

from yolo_ldac.errors import LDACError

# Every module that registers parts. Registries load this list on first use; nothing else imports plugins.
PLUGIN_MODULES = (
    "yolo_ldac.pruning.criteria",  # random, l1, l2, bn, taylor
    "yolo_ldac.pruning.rank_criteria",  # hrank, chip
    "yolo_ldac.pruning.fisher_px",  # group_fisher, group_fisher_flops, px
    "yolo_ldac.pruning.fisher_variants",  # group_fisher_centered, group_fisher_centered_flops
    "yolo_ldac.ldac.criterion",  # ldac_j (the first version's discriminant trace)
    "yolo_ldac.ldac.trace",  # ldac (criterion)
    "yolo_ldac.push",  # none (push)
    "yolo_ldac.push.fade",  # fade (push)
    "yolo_ldac.push.handoff",  # handoff (push)
    "yolo_ldac.ldac.push",  # ldac (push)
    "yolo_ldac.pruning.compensate",  # none, mean, lsq
)

# Presets that are not simply "this criterion, no push, mean fold".
_SPECIAL_PRESETS = {
    # Measured (BENCHMARKS.md, benchmarks/grid.py; mean over seeds): LDAC's push (the handoff and the pooled
    # discriminant loss) makes every prune step exact, but its rounds lose in the push phases what plain training
    # loses after the steps, and the finished models were no better: composite 50 % 0.216 vs 0.216 (push none), 30 %
    # 0.198 vs 0.212, pedestrian 30 % 0.468 vs 0.490, 50 % 0.484 vs 0.491. So the preset does not push.
    "ldac": {"criterion": "ldac", "push": "none", "compensate": "lsq"},
}
PART_KEYS = ("criterion", "push", "compensate")

_loaded = False


def load_plugins() -> None:
    """Import every module of :data:`PLUGIN_MODULES` once (they register their parts on import)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    try:
        for name in PLUGIN_MODULES:
            importlib.import_module(name)
    except BaseException:
        _loaded = False
        raise


def registries() -> dict[str, Any]:
    """``{"criterion": CRITERIA, "push": PUSHES, "compensate": COMPENSATIONS}``."""
    from yolo_ldac.pruning.compensate import COMPENSATIONS
    from yolo_ldac.pruning.criteria import CRITERIA
    from yolo_ldac.push import PUSHES

    return {"criterion": CRITERIA, "push": PUSHES, "compensate": COMPENSATIONS}


def presets() -> dict[str, dict[str, str]]:
    """Every ``method=`` name and the parts it stands for."""
    from yolo_ldac.pruning.criteria import CRITERIA

    out = {name: {"criterion": name, "push": "none", "compensate": "mean"} for name in CRITERIA}
    out.update(_SPECIAL_PRESETS)
    return out


def _normalise_compensate(value: Any) -> Any:
    if value is True:
        return "mean"
    if value is False:
        return "none"
    return value


def resolve_parts(cfg: dict) -> dict[str, str]:
    """The criterion, push and compensation of a configuration: ``method``'s preset, overridden by any of the
    keys ``criterion``, ``push``, ``compensate`` that are set. Unknown names raise :class:`LDACError`."""
    method = cfg.get("method")
    table = presets()
    if method not in table:
        from yolo_ldac.cfg import closest

        hint = closest(method, table) if isinstance(method, str) else None
        raise LDACError(f"unknown method '{method}'" + (f"; did you mean '{hint}'?" if hint else "")
                        + f" (available: {', '.join(sorted(table))})")
    parts = dict(table[method])
    regs = registries()
    for key in PART_KEYS:
        value = _normalise_compensate(cfg.get(key)) if key == "compensate" else cfg.get(key)
        if value is not None:
            regs[key].get_class(value)  # raises with a suggestion
            parts[key] = value
    return parts


def build_parts(cfg: dict, parts: dict[str, str] | None = None) -> dict[str, Any]:
    """Instantiate ``resolve_parts(cfg)``: ``{"criterion": Criterion, "push": Push, "compensate": Compensation}``."""
    parts = parts or resolve_parts(cfg)
    settings = dict(seed=int(cfg.get("seed") or 0), alpha=cfg.get("ld_alpha", 0.01), beta=cfg.get("cov_beta", 0.01),
                    gamma=cfg.get("align_gamma", 1e-4), pool=cfg.get("pool", "max"),
                    background=cfg.get("background", 0), rho=cfg.get("rho", 0.1),
                    tracer=cfg.get("tracer", "gradient"), level_assign=cfg.get("level_assign", False),
                    fade=cfg.get("fade", True), fade_end=cfg.get("fade_end", 0.5),
                    release=cfg.get("release", "handoff"), pooled=cfg.get("ld_pooled", True),
                    check=cfg.get("ld_check", 2.0))
    regs = registries()
    return {key: regs[key].build(parts[key], **settings) for key in PART_KEYS}


def describe() -> str:
    """The text ``yolo-ldac list`` prints: every registered part and every ``method=`` preset."""
    regs = registries()
    lines = []
    for key, title in (("criterion", "Criteria (criterion=): which channels go"),
                       ("push", "Pushes (push=): what training before each prune step does"),
                       ("compensate", "Compensations (compensate=): what is done for removed channels")):
        lines.append(title)
        for name, doc in regs[key].describe():
            lines.append(f"    {name:<20} {doc}")
        lines.append("")
    lines.append("Methods (method=): presets of the three; explicit keys override")
    for name, p in sorted(presets().items()):
        lines.append(f"    {name:<20} criterion={p['criterion']} push={p['push']} compensate={p['compensate']}")
    return "\n".join(lines) + "\n"
