#!/usr/bin/env bash
# Issue 22's grid: does asking for a measured speed-up (`speedup=2.0`, ONNX Runtime fp32 and OpenVINO int8) keep
# more mAP than `target=flops` at the same measured latency? The grid's user flow (benchmarks/grid.py, cpu preset:
# 160 px, 600+ optimizer steps) on both data sets, 2 seeds: LDAC at 50, 60 and 70 % of the FLOPs (the curve the
# speed-up runs are compared against) and LDAC with each speed-up target, every setting a user would type (README).
# Then benchmarks/equal_latency.py times every run's best.pt against the base, interleaved, in both runtimes at the
# grid's imgsz and 1 thread, and reads the FLOPs curve's mAP at each speed-up run's measured latency.
#
# Resumable (grid.py reads finished runs back). Separate folders (results/grid-latency, runs/grid-latency): the
# bases are retrained for it, so its runs are not the main grid's. Wall time on 2 cores: 20 runs x 200-300 s, one
# data set per core (~45 min), then the timing (~10 min).
# Usage: COMPOSITE_BASE=... PEDESTRIAN_BASE=... bash benchmarks/latency_grid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-$PWD/.cache/ultralytics}
CB=${COMPOSITE_BASE:-runs/base/yolo11n-composite400-e50-last.pt}
CD=${COMPOSITE_DATA:-datasets/composite-400x160/data.yaml}
PB=${PEDESTRIAN_BASE:-runs/base/yolo11n-pedestrian-e60.pt}
PD=${PEDESTRIAN_DATA:-datasets/pedestrian-e1x160/data.yaml}
OUT="--out benchmarks/results/grid-latency --project runs/grid-latency --no-latency --seeds 0 1"
G="$PY benchmarks/grid.py $OUT"
S="ldac:speedup=2.0:runtime=onnxruntime ldac:speedup=2.0:runtime=openvino:precision=int8"
C="--base $CB --data $CD"
P="--base $PB --data $PD --epochs 18"   # as benchmarks/core_grid.sh: 35 steps per epoch, 630 steps

train() {  # one data set on one core: the FLOPs curve, then the speed-up runs
  taskset -c "$1" $G $2 --ratios 0.5 0.6 0.7 --methods ldac && taskset -c "$1" $G $2 --ratios 0.5 --methods $S
}
case "${ONLY:-both}" in
  composite) train 1 "$C" ;;
  pedestrian) train 0 "$P" ;;
  both) train 1 "$C" & train 0 "$P" & wait ;;
  timing) ;;
esac
[ "${ONLY:-both}" = both ] || [ "${ONLY:-both}" = timing ] || exit 0

for set in "$C" "$P"; do
  taskset -c 1 $PY benchmarks/equal_latency.py $set --results benchmarks/results/grid-latency \
      --project runs/grid-latency --benchmarks-md
done
