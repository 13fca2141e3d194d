#!/usr/bin/env python
"""The scoring pass on a GPU: a model-zoo Faster R-CNN R50-FPN trained through tools/train_net.py
without the hook, with in-loop capture and with scoring passes, one after the other in one run.

    python tools/bench/bench_pass_gpu.py [--images 256] [--size 640] [--epochs 3] [--batch 8]

Data: the toy shapes set (prune_hooks.toy) at SIZE px, IMAGES training images. Model: detectron2's
COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml with 3 classes, trained from scratch (no weights can be
downloaded): GroupNorm in the backbone and gradient clipping (FrozenBN without statistics diverges).
Times are detectron2's own: "Overall training speed" (the steps), "Total training time" (steps and
hooks), and the hook's per-pass seconds from its log. PRUNE.METHODS vps_iou, vps_conf (no prototypes:
no features pass). Needs CUDA. Writes bench_pass_gpu.json and .md.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch
from common import RESULTS, train, write_result  # this folder is sys.path[0]

import prune_hooks.detectron2  # noqa: F401  (v0.6 compatibility aliases before detectron2.data)

# isort: split

from detectron2 import model_zoo
from detectron2.config import get_cfg

from prune_hooks.detectron2 import add_prune_config
from prune_hooks.toy import make_toy_coco

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {  # name: (PRUNE.ENABLED, PRUNE.CAPTURE); the first again last: how much two runs differ by themselves
    "no_hook": (False, "pass"),
    "in_loop": (True, "in_loop"),
    "pass": (True, "pass"),
    "no_hook_again": (False, "pass"),
}


def config(args, ann: Path, images: Path, out: Path, enabled: bool, capture: str) -> Path:
    cfg = get_cfg()
    add_prune_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.INPUT.MIN_SIZE_TRAIN = (args.size,)
    cfg.INPUT.MAX_SIZE_TRAIN = args.size
    cfg.INPUT.MIN_SIZE_TEST = args.size
    cfg.INPUT.MAX_SIZE_TEST = args.size
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
    cfg.SOLVER.MAX_ITER = args.epochs * args.images // args.batch
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 20
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.COCO_DATASETS = [["gpu_toy_train", str(ann), str(images)]]
    cfg.DATASETS.TRAIN = ("gpu_toy_train",)
    cfg.DATASETS.TEST = ()
    cfg.PRUNE.ENABLED = enabled
    cfg.PRUNE.CAPTURE = capture
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf"]
    cfg.OUTPUT_DIR = str(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(cfg.dump())
    return path


def parse(log: str) -> dict:
    speed = re.findall(r"Overall training speed: (\d+) iterations in [\d:]+ \(([\d.]+) s / it\)", log)
    total = re.findall(r"Total training time: (\d+):(\d+):(\d+) \((\d+):(\d+):(\d+) on hooks\)", log)
    passes = [float(x) for x in re.findall(r"scoring pass \d+ after iteration \d+: \d+ images .*?, ([\d.]+)s \(", log)]
    if not speed or not total:
        raise SystemExit("bench_pass_gpu: no training-time lines in the log:\n" + log[-3000:])
    h, m, s, hh, hm, hs = map(int, total[-1])
    return {
        "iterations": int(speed[-1][0]),
        "step_seconds": float(speed[-1][1]),
        "total_seconds": 3600 * h + 60 * m + s,
        "hook_seconds": 3600 * hh + 60 * hm + hs,
        "pass_seconds": passes,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script, not a measurement")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_pass_gpu"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_pass_gpu: needs CUDA")
    work = Path(args.work)
    t = time.perf_counter()
    anns = make_toy_coco(work / "data", {"train": args.images}, size=args.size)
    print(f"data: {args.images} images at {args.size} px in {time.perf_counter() - t:.0f}s", flush=True)
    rows = {}
    for name, (enabled, capture) in VARIANTS.items():
        out = work / name
        cfg = config(args, anns["train"], work / "data" / "train", out, enabled, capture)
        wall = train([ROOT / "tools" / "train_net.py", "--config-file", cfg], out / "log.txt")
        rows[name] = {**parse((out / "log.txt").read_text()), "process_seconds": round(wall, 1)}
        print(name, rows[name], flush=True)
    base = rows["no_hook"]["total_seconds"]
    epoch_steps = rows["no_hook"]["step_seconds"] * args.images / args.batch
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "images": args.images,
        "size": args.size,
        "epochs": args.epochs,
        "batch": args.batch,
        "runs": rows,
        "total_vs_no_hook": {k: round(v["total_seconds"] / base, 3) for k, v in rows.items()},
        "pass_seconds_per_image": round(
            sum(rows["pass"]["pass_seconds"]) / max(len(rows["pass"]["pass_seconds"]), 1) / args.images, 4
        ),
        "pass_vs_training_epoch": round(
            sum(rows["pass"]["pass_seconds"]) / max(len(rows["pass"]["pass_seconds"]), 1) / epoch_steps, 3
        ),
    }
    lines = [
        "# Scoring passes and in-loop capture on a GPU",
        "",
        f"`python tools/bench/bench_pass_gpu.py {' '.join(sys.argv[1:])}` — {result['device']}, torch "
        f"{result['torch']}. Faster R-CNN R50-FPN (model-zoo yaml, GroupNorm backbone from scratch), "
        f"{args.images} toy images at {args.size} px, batch {args.batch}, {args.epochs} epochs, {args.workers} loader "
        "workers; one training per row, in this order.",
        "",
        "| run | s / step | total training time (s) | of which hooks (s) | x no hook | scoring passes (s each) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['step_seconds']} | {r['total_seconds']} | {r['hook_seconds']} | "
            f"{result['total_vs_no_hook'][name]} | {', '.join(f'{p:.1f}' for p in r['pass_seconds'])} |"
        )
    lines += [
        "",
        f"A scoring pass: {result['pass_seconds_per_image']} s per image, {result['pass_vs_training_epoch']:.0%} of "
        "a training epoch's steps (no hook). detectron2 prints whole seconds for the totals.",
    ]
    write_result(Path(args.out), "bench_pass_gpu", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
