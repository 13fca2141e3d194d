#!/usr/bin/env python
"""Scoring-pass throughput at PRUNE.PASS_BATCH 1, 4, 8 against plain inference, on the demo's detectron2 proxy.

    python tools/bench/bench_pass.py [--images 192] [--batches 1 4 8] [--repeats 2] [--device cpu]

The demo's model and data (the toy shapes set, R18-FPN at 128 px, ``make demo``'s proxy config) trained once
for ``--train-iters`` iterations without the hook; then, per repeat and batch size, one run of the installed
``python -m prune_hooks.detectron2.train_net`` from those weights with the learning rate at 0: one training
iteration, one scoring pass over the training images at that batch size (the hook's own timing, data loading
included), and detectron2's evaluation over the same images (its test loader: batch 1; "Total inference time",
data loading included, first 5 images excluded). Pass / inference compares the hook's pass at batch 1 with that
inference; images/s per batch size says what PASS_BATCH buys. Writes bench_pass.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, train, write_result  # this folder is sys.path[0]

import prune_hooks.detectron2  # noqa: F401  (v0.6 aliases)

# isort: split

from prune_hooks.detectron2.toy import toy_config
from prune_hooks.toy import make_toy_coco

ROOT = Path(__file__).resolve().parents[2]
TRAIN_NET = ["-m", "prune_hooks.detectron2.train_net"]
PASS = re.compile(r"scoring pass 1 after iteration \d+: (\d+) images \(this rank\), ([\d.]+)s")
INFER = re.compile(r"Total inference time: \S+ \(([\d.]+) s / iter per device")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-iters", type=int, default=144)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_pass"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    work = Path(args.work)
    files = make_toy_coco(work / "data", {"train": args.images, "val": 16})
    cfg = toy_config(files, work / "data", work / "trained")
    cfg.MODEL.DEVICE = args.device
    cfg.SOLVER.MAX_ITER = cfg.SOLVER.CHECKPOINT_PERIOD = args.train_iters
    cfg.SOLVER.STEPS = (int(args.train_iters * 0.75),)
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.ENABLED = False
    weights = work / "trained" / "model_final.pth"
    if not weights.exists():
        (work / "trained.yaml").write_text(cfg.dump())
        secs = train([*TRAIN_NET, "--config-file", work / "trained.yaml"], work / "trained.log")
        print(f"weights: {args.train_iters} iterations, {secs:.0f}s", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for batch in args.batches:
            c = cfg.clone()
            c.OUTPUT_DIR = str(work / f"b{batch}_r{repeat}")
            c.MODEL.WEIGHTS = str(weights)
            c.SOLVER.BASE_LR, c.SOLVER.MAX_ITER, c.SOLVER.WARMUP_ITERS = 0.0, 1, 0
            c.SOLVER.STEPS, c.SOLVER.CHECKPOINT_PERIOD = (), 1
            c.DATASETS.TEST = c.DATASETS.TRAIN  # detectron2's inference over the images the pass scores
            c.PRUNE.ENABLED, c.PRUNE.METHODS, c.PRUNE.PASS_BATCH, c.PRUNE.PERIOD = True, ["vps_iou"], batch, 1
            yaml = work / f"b{batch}_r{repeat}.yaml"
            yaml.write_text(c.dump())
            log = work / f"b{batch}_r{repeat}.log"
            train([*TRAIN_NET, "--config-file", yaml], log)
            text = log.read_text()
            n, pass_s = PASS.search(text).groups()
            infer = float(INFER.search(text).group(1))
            row = {"repeat": repeat, "batch": batch, "images": int(n), "pass_s": float(pass_s)}
            row.update(pass_img_s=row["images"] / row["pass_s"], infer_s_per_image=infer)
            row["pass_over_inference"] = (row["pass_s"] / row["images"]) / infer
            rows.append(row)
            print(row, flush=True)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{platform.machine()} CPU"
    lines = [
        "# Scoring-pass throughput by PRUNE.PASS_BATCH (detectron2, the demo's proxy)",
        "",
        f"`python tools/bench/bench_pass.py {' '.join(sys.argv[1:])}` — {device}, {torch.get_num_threads()} torch "
        f"threads, {args.images} training images (toy shapes, R18-FPN, 128 px), weights after {args.train_iters} "
        "iterations. Pass: the hook's seconds for its first pass (data loading, forward, box head on GT boxes, "
        "matching, audit, gathering); inference: detectron2's evaluation of the same images at batch 1 (its "
        "`Total inference time` per image, first 5 excluded). One row per run.",
        "",
        "| repeat | PASS_BATCH | images | pass s | pass images/s | inference s/image (batch 1) | "
        "pass s/image ÷ inference s/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['repeat']} | {r['batch']} | {r['images']} | {r['pass_s']:.1f} | {r['pass_img_s']:.2f} | "
            f"{r['infer_s_per_image']:.4f} | {r['pass_over_inference']:.2f} |"
        )
    by_batch = {b: [r["pass_img_s"] for r in rows if r["batch"] == b] for b in args.batches}
    base = sum(by_batch[args.batches[0]]) / len(by_batch[args.batches[0]])
    lines += ["", f"Mean images/s relative to PASS_BATCH {args.batches[0]}: " + ", ".join(
        f"{b}: {sum(v) / len(v) / base:.2f}×" for b, v in by_batch.items())]  # fmt: skip
    result = {"rows": rows, "device": device, "images": args.images, "when": time.strftime("%Y-%m-%d")}
    write_result(Path(args.out), "bench_pass", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
