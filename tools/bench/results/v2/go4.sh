#!/bin/bash
# session 4: third seed of the keep-0.3 goal cells, cross-framework rows at 0.3, in-loop retraining, keep 0.5
source /work/main/.venv/bin/activate
cd /work/main
B="python tools/bench/bench_quality.py --work runs/bench_v2 --out tools/bench/results/v2 --epochs 6 --min-schedule 0.3"
M="random vps_iou:max vps_conf:max cb_scs unseen-vps csod vps_csod vps_iou:max+stratify vps_iou:max+dedup0.9"
X="random@mmdet unseen-vps@mmdet vps_iou:max@mmdet"
$B --repeats 3 --keep 0.3 --methods random cb_scs unseen-vps || exit 1
$B --repeats 2 --keep 0.3 --methods $X || exit 1
python tools/bench/bench_inloop.py || exit 1
$B --repeats 2 --keep 0.5 --methods $M || exit 1
$B --repeats 2 --keep 0.5 --methods $X || exit 1
echo ALL DONE
