#!/usr/bin/env bash
# The core grid of BENCHMARKS.md in one command (issue 11): both data sets, FLOPs ratios 0.3 and 0.5,
# dense / random / l2 / group_fisher / ldac, 3 seeds on the headline cell (composite, 0.5) and 2 elsewhere, every
# run 600+ optimizer steps; then latency of every run (on an idle machine), the grid tables and schedule plots into
# BENCHMARKS.md, and the retention curves of every registered criterion on both data sets.
#
# Resumable: finished runs and points are read back (rerun the same command after an interruption); a run made with
# other settings is refused. Wall time on 2 cores: about 41 runs x 150-380 s on one core each, two at a time (~1.5 h),
# plus the retention curves (~20 min on 2 cores). Needs the two bases; the grid never trains them (one core each):
#   COMPOSITE_BASE  the COCO YOLO11n fine-tuned 50 epochs on composite-400x160, final epoch (7 min):
#     python benchmarks/retention_base.py --data datasets/composite-400x160/data.yaml --epochs 50 --patience 50 \
#         --name yolo11n-composite400-e50          # -> runs/base/yolo11n-composite400-e50-last.pt
#   PEDESTRIAN_BASE the COCO YOLO11n fine-tuned 60 epochs on pedestrian-e1x160 (11 min):
#     python benchmarks/retention_base.py --data datasets/pedestrian-e1x160/data.yaml --epochs 60 --patience 60 \
#         --name yolo11n-pedestrian-e60 --record base_e60.json   # -> runs/base/yolo11n-pedestrian-e60.pt
# Every run trains at yolo-ldac's default lr_scale (auto: 0.25 for these bases, as for any checkpoint). The
# same grid at Ultralytics' own lr is in results/grid-lr1/ (grid.py ... --lr-scale 1 --out benchmarks/results/grid-lr1
# --project runs/grid-lr1), kept as an ablation.
# Usage: COMPOSITE_BASE=... COMPOSITE_DATA=... PEDESTRIAN_BASE=... PEDESTRIAN_DATA=... bash benchmarks/core_grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-$PWD/.cache/ultralytics}
CB=${COMPOSITE_BASE:-runs/base/yolo11n-composite400-e50-last.pt}
CD=${COMPOSITE_DATA:-datasets/composite-400x160/data.yaml}
PB=${PEDESTRIAN_BASE:-runs/base/yolo11n-pedestrian-e60.pt}
PD=${PEDESTRIAN_DATA:-datasets/pedestrian-e1x160/data.yaml}
C="--base $CB --data $CD"
P="--base $PB --data $PD --epochs 18"   # 556 frames / 16 = 35 steps per epoch: 18 epochs = 630 steps
M="dense random l2 group_fisher ldac"
G="$PY benchmarks/grid.py --no-latency"

# Training, two processes at a time (one per core).
(taskset -c 0 $G $C --ratios 0.5 --methods $M --seeds 0 1 2 && taskset -c 0 $G $C --ratios 0.3 --methods $M --seeds 0 1) &
(taskset -c 1 $G $P --ratios 0.3 --methods $M --seeds 0 1 && taskset -c 1 $G $P --ratios 0.5 --methods $M --seeds 0 1) &
wait

# Latency, one run at a time on the otherwise idle machine; then the tables, plots and BENCHMARKS.md sections.
# (each invocation times the runs it names and reports every run JSON of its data set)
$PY benchmarks/grid.py $C --ratios 0.3 --methods $M --seeds 0 1
$PY benchmarks/grid.py $C --ratios 0.5 --methods $M --seeds 0 1 2 --benchmarks-md
$PY benchmarks/grid.py $P --ratios 0.3 0.5 --methods $M --seeds 0 1 --benchmarks-md

# Retention curves: every registered criterion, its preset's compensation (mean; lsq for ldac) and lsq.
ALL=$($PY -c "from yolo_ldac.pruning.criteria import CRITERIA; print(' '.join(sorted(CRITERIA)))")
R="$PY benchmarks/retention.py --calib-batches 4 --calib-batch 8 --imgsz 160"
(taskset -c 0 $R $C --criteria $ALL --variants mean lsq --benchmarks-md) &
(taskset -c 1 $R --base $PB --data $PD --criteria $ALL --variants mean lsq --benchmarks-md) &
wait
