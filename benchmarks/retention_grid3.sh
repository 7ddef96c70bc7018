#!/usr/bin/env bash
# Third research grid: the best criterion of the second (group_fisher_centered_flops) with steps and more data.
set -u
BASE=$1; DATA=$2
PY=${PY:-python}
R="$PY benchmarks/retention.py --base $BASE --data $DATA --calib-batches 4 --calib-batch 8 --imgsz 160"
$R --criteria group_fisher_centered_flops --variants lsq+steps3 none
$R --criteria group_fisher_flops --variants none
OUT=benchmarks/results/retention/$(basename $(dirname $DATA))/$(basename $BASE .pt)-calib16
$PY benchmarks/retention.py --base $BASE --data $DATA --calib-batches 16 --calib-batch 8 --imgsz 160 --out $OUT \
    --criteria group_fisher_centered_flops --variants lsq
