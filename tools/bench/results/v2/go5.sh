#!/bin/bash
# keep 0.5 for the remaining detectron2 methods without a new proxy (unseen-vps needs its refill proxy: last)
source /work/main/.venv/bin/activate
cd /work/main
B="python tools/bench/bench_quality.py --work runs/bench_v2 --out tools/bench/results/v2 --epochs 6 --min-schedule 0.3"
$B --repeats 2 --keep 0.5 --methods csod vps_csod vps_iou:max+dedup0.9 vps_iou:max+stratify || exit 1
echo ALL DONE
