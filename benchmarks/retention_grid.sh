#!/usr/bin/env bash
# The research grid of the retention curves (issue 11 item 3, issue 12 items 3 and 5), in order of priority.
# Usage: bash benchmarks/retention_grid.sh BASE.pt DATA.yaml   (resumable: finished points are read back)
set -u
BASE=$1; DATA=$2
PY=${PY:-python}
R="$PY benchmarks/retention.py --base $BASE --data $DATA --calib-batches 4 --calib-batch 8 --imgsz 160"
C5="random l2 taylor group_fisher group_fisher_flops"
$R --criteria $C5 --variants mean lsq
$R --criteria random l2 group_fisher --variants none
$R --criteria group_fisher --variants mean+cap0.25 mean+cap0.5 mean+perflop lsq+cap0.25 lsq+perflop
$R --criteria group_fisher_centered --variants mean lsq
$R --criteria group_fisher --variants mean+steps3 lsq+steps3
$R --criteria l1 bn px --variants mean lsq
