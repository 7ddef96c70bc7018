"""What a compression run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CompressResult:
    """What a compress/prune/finetune run produced: paths, metrics and complexity before and after."""

    run_dir: Path
    best: Path
    portable: Path | None
    before: dict
    after: dict
    removed: dict
    layers: list[dict]
    rounds: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    resumed: bool = False

    @property
    def table(self) -> str:
        from yolo_ldac.report import format_table

        return format_table(self.report)
