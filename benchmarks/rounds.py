"""Steps and rounds of the grid's runs against what training alone does to the same base (issue 12's round goals).

For every pruned run of a grid folder: each prune step's change (mAP50-95 right after it minus right before it, in
points) and each round's kept fraction (mAP after step k over mAP after step k-1; round 1 over the base), from the
run JSONs. Against that, the dense runs' own "rounds": the same base trained unpruned with the same settings, its
val mAP after every epoch read from the run's ``log.txt``, and every window of ``--window`` epochs (the grid's
``epochs_per_round``) as kept fraction. A pruned round inside the dense windows' range is inside what the val
measurement of a model that loses nothing already swings by.

Writes ``benchmarks/results/rounds/<out folder>-<data>.json`` and prints a summary.

Usage: python benchmarks/rounds.py --out benchmarks/results/grid --project runs/grid [--window 2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolo_ldac.utils.env import machine_info  # noqa: E402

_VAL_ALL = re.compile(r"^\s+all\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s*$")


def steps_and_rounds(rec: dict) -> dict | None:
    """``{"steps_pts": [...], "rounds_pct": [...]}`` of one pruned run's JSON; ``None`` for a run without steps.

    Example:
        >>> steps_and_rounds({"rounds": [{"map50_95_before_step": 0.5, "map50_95_after_step": 0.5},
        ...                               {"map50_95_before_step": 0.45, "map50_95_after_step": 0.4}]})
        {'steps_pts': [0.0, -5.0], 'rounds_pct': [100.0, 80.0]}
    """
    rs = rec.get("rounds") or []
    if not rs:
        return None
    steps, rounds, prev = [], [], rs[0]["map50_95_before_step"]
    for r in rs:
        before, after = r["map50_95_before_step"], r["map50_95_after_step"]
        steps.append(round(100 * (after - before), 1))
        rounds.append(round(100 * after / prev, 1) if prev else 0.0)
        prev = after
    return {"steps_pts": steps, "rounds_pct": rounds}


def epoch_maps(log: Path) -> list[float]:
    """The ``all`` rows' mAP50-95 of a run's log in order: the base's validation first, then one per epoch."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _VAL_ALL.match(line)
        if m:
            out.append(float(m.group(1)))
    return out


def windows(maps: list[float], width: int, epochs: int) -> list[float]:
    """Kept fraction (%) over every window of ``width`` epochs within the first ``epochs`` epochs (index 0 = base).

    Example:
        >>> windows([0.2, 0.18, 0.2, 0.22], 2, 3)
        [100.0, 122.2]
    """
    maps = maps[: epochs + 1]
    return [round(100 * maps[i + width] / maps[i], 1) for i in range(len(maps) - width) if maps[i]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "grid", help="grid JSON folder")
    ap.add_argument("--project", type=Path, default=ROOT / "runs" / "grid", help="grid run folders (dense logs)")
    ap.add_argument("--window", type=int, default=2, help="epochs per round (the grid's epochs_per_round)")
    args = ap.parse_args(argv)
    for data_dir in sorted(p for p in args.out.iterdir() if p.is_dir() and p.name != "superseded"):
        recs = [json.loads(f.read_text()) for f in sorted(data_dir.glob("*.json"))]
        pruned = {}
        for r in recs:
            sr = steps_and_rounds(r)
            if sr is not None:
                pruned[r["id"]] = sr
        n_rounds = max((len(v["rounds_pct"]) for v in pruned.values()), default=4)
        span = (n_rounds - 1) * args.window  # the epochs the rounds' training covers
        dense = {}
        for r in recs:
            if r["method"] != "dense":
                continue
            log = args.project / data_dir.name / r["id"] / "log.txt"
            if log.is_file():
                maps = epoch_maps(log)
                dense[r["id"]] = {"epoch_maps": maps[: span + 1], "windows_pct": windows(maps, args.window, span)}
        all_w = [w for d in dense.values() for w in d["windows_pct"]]
        result = {"data": data_dir.name, "window_epochs": args.window, "dense_epochs_covered": span,
                  "pruned": pruned, "dense": dense,
                  "dense_window_range_pct": [min(all_w), max(all_w)] if all_w else None,
                  "machine": machine_info(), "script": "benchmarks/rounds.py"}
        dest = ROOT / "benchmarks" / "results" / "rounds" / f"{args.out.name}-{data_dir.name}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"{data_dir.name}: dense {args.window}-epoch windows over epochs 0-{span}: "
              f"{result['dense_window_range_pct']} % ({len(all_w)} windows, {len(dense)} runs)")
        for rid, v in sorted(pruned.items()):
            if any(k in rid for k in ("ldac", "group_fisher")):
                worst = min(v["steps_pts"])
                print(f"  {rid:40s} steps {v['steps_pts']} (worst {worst:+.1f}) rounds {v['rounds_pct']} "
                      f"(min {min(v['rounds_pct']):.0f} %, median {statistics.median(v['rounds_pct']):.0f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
