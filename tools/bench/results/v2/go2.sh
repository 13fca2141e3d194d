#!/bin/bash
# benchmark v2, goal ratios first: keep 0.3 and 0.1 (detectron2 + unseen), then the cross-framework rows, then 0.5
source /work/main/.venv/bin/activate
cd /work/main
B="python tools/bench/bench_quality.py --work runs/bench_v2 --out tools/bench/results/v2 --epochs 6 --repeats 2 --min-schedule 0.3"
M="random vps_iou:max vps_iou:max+stratify vps_iou:max+dedup0.9 vps_csod csod vps_conf:max cb_scs unseen-vps"
X="random@mmdet vps_iou:max@mmdet csod@mmdet"
$B --keep 0.3 --methods $M || exit 1
$B --keep 0.1 --methods $M || exit 1
$B --keep 0.3 --methods $X || exit 1
$B --keep 0.5 --methods $M $X || exit 1
echo ALL DONE
