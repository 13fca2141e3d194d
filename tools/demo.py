#!/usr/bin/env python
"""The prune_hooks demo on the embedded toy data set (``make demo``).

Detectron2: generate the toy shapes set, train a tiny Faster R-CNN R18-FPN from scratch on CPU, dump
the detections of a scoring pass over the training images (eval mode, score threshold 0) at every
epoch end as COCO results, then score VPS from those files and select a subset with the
``prune-hooks`` CLI, exactly as a user with any detector that writes COCO results would.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_detectron2(out: Path, n_train: int, epochs: int) -> None:
    import prune_hooks.detectron2  # noqa: F401  (compatibility aliases before detectron2.data)
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import build_detection_test_loader
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer, hooks
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset
    from detectron2.utils.logger import setup_logger

    from prune_hooks.cli import main as cli
    from prune_hooks.toy import make_toy_coco

    setup_logger(name="detectron2", abbrev_name="d2")
    start = time.time()
    files = make_toy_coco(out / "data", {"train": n_train, "val": max(16, n_train // 4)})
    register_coco_instances("demo_train", {}, str(files["train"]), str(out / "data" / "train"))
    register_coco_instances("demo_val", {}, str(files["val"]), str(out / "data" / "val"))

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_file(str(ROOT / "configs" / "detectron2" / "toy_R18_FPN_overrides.yaml"))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("demo_train",), ("demo_val",)
    # Scoring passes keep every detection so each object can be matched (SPEC.md, CIPA).
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    epoch_iters = math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = epochs * epoch_iters
    cfg.SOLVER.STEPS = (int(cfg.SOLVER.MAX_ITER * 0.75),)
    cfg.OUTPUT_DIR = str(out / "proxy")
    Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)

    passes: list[str] = []

    def scoring_pass() -> dict:
        pass_dir = out / "passes" / f"pass_{len(passes) + 1:02d}"
        loader = build_detection_test_loader(cfg, "demo_train")
        evaluator = COCOEvaluator("demo_train", output_dir=str(pass_dir), use_fast_impl=False)
        inference_on_dataset(trainer.model, loader, evaluator)
        passes.append(str(pass_dir / "coco_instances_results.json"))
        return {}

    trainer = DefaultTrainer(cfg)
    trainer.register_hooks([hooks.EvalHook(epoch_iters, scoring_pass)])
    trainer.resume_or_load(resume=False)
    train_start = time.time()
    trainer.train()
    train_time = time.time() - train_start

    val = DefaultTrainer.test(
        cfg, trainer.model, [COCOEvaluator("demo_val", output_dir=str(out / "eval"), use_fast_impl=False)]
    )["bbox"]

    run = out / "run"
    if cli(["score", "vps", "--annotations", str(files["train"]), "--detections", *passes, "--out", str(run)]):
        raise SystemExit(1)
    for method in ("vps_iou", "random"):
        if cli(["select", str(run), "--method", method, "--keep", "0.5", "--out", str(run / method)]):
            raise SystemExit(1)
    subset = json.loads((run / "vps_iou" / "subset.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    print()
    print("prune_hooks demo (detectron2, VPS from dumped COCO results)")
    print(f"  objects scored     {meta['num_objects']} in {meta['num_images']} images")
    print(f"  scoring passes     {meta['passes']} (one per epoch of {epoch_iters} iterations)")
    print(f"  proxy training     {cfg.SOLVER.MAX_ITER} iterations, {train_time:.0f}s incl. passes")
    print(f"  proxy val AP/AP50  {val['AP']:.1f} / {val['AP50']:.1f}")
    print(f"  kept (vps_iou max) {subset['n_images']} of {subset['n_total']} images")
    print(f"  files              {run}/ (meta.json, objects.csv, images.csv, vps_iou/, random/)")
    print(f"  wall time          {time.time() - start:.0f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", default="detectron2", choices=["detectron2", "mmdet"])
    ap.add_argument("--out", default=None, help="output directory (default runs/demo/<framework>)")
    ap.add_argument("--images", type=int, default=64, help="training images of the toy set")
    ap.add_argument("--epochs", type=int, default=5, help="proxy epochs = scoring passes")
    args = ap.parse_args(argv)
    out = Path(args.out or ROOT / "runs" / "demo" / args.framework).resolve()
    if args.framework == "mmdet":
        print("demo: FRAMEWORK=mmdet needs the MMDetection hooks, which are not part of this version yet;"
              " run `make demo` (detectron2).", file=sys.stderr)
        return 2
    run_detectron2(out, args.images, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
