#!/bin/bash
# a third training seed for the cells that decide the goal: random and cb_scs at keep 0.1, then 0.3
source /work/main/.venv/bin/activate
cd /work/main
B="python tools/bench/bench_quality.py --work runs/bench_v2 --out tools/bench/results/v2 --epochs 6 --repeats 3 --min-schedule 0.3"
$B --keep 0.1 --methods random cb_scs || exit 1
$B --keep 0.3 --methods random cb_scs || exit 1
echo ALL DONE
