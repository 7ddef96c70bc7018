#!/usr/bin/env bash
# Second research grid: around the best pair of the first (group_fisher_flops + lsq). Usage as retention_grid.sh.
set -u
BASE=$1; DATA=$2
PY=${PY:-python}
R="$PY benchmarks/retention.py --base $BASE --data $DATA --calib-batches 4 --calib-batch 8 --imgsz 160"
$R --criteria group_fisher_flops --variants lsq+ridge0.01 lsq+ridge0.1 lsq+ridge0.0001 lsq+cap0.5 lsq+cap0.25
$R --criteria group_fisher_centered_flops --variants mean lsq
$R --criteria group_fisher_flops --variants lsq+steps3 mean+steps3
# more calibration data (16 x 8 images): its own results folder, since the settings differ
OUT=benchmarks/results/retention/$(basename $(dirname $DATA))/$(basename $BASE .pt)-calib16
$PY benchmarks/retention.py --base $BASE --data $DATA --calib-batches 16 --calib-batch 8 --imgsz 160 --out $OUT \
    --criteria group_fisher_flops group_fisher --variants mean lsq
