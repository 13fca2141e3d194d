#!/usr/bin/env python
"""The prune_hooks demo on the embedded toy data set (``make demo [FRAMEWORK=mmdet]``).

Generate the toy shapes set, write a proxy config (Faster R-CNN shrunk to R18-FPN, with the prune
hook), train it with the framework's train script (the hook scores every object at each epoch end and
writes the run directory when training ends), retrain from the generated config with the same
script, retrain a random subset of the same size the same way (one seed each), and print a summary.

Detectron2: ``python -m prune_hooks.detectron2.train_net``, ``OUTPUT_DIR/prune/retrain.yaml``.
MMDetection: mmdet's own train script (``tools/train_mmdet.py``), ``<work_dir>/prune/retrain.py``.
Ultralytics: YOLOv8n from its yaml, ``python -m prune_hooks.ultralytics``,
``yolo detect train cfg=.../retrain_args.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import re as re_mod
import sys
import time
from pathlib import Path

from bench.common import last_ap, mmdet_ap, train  # tools/bench/: shared with the benchmarks

ROOT = Path(__file__).resolve().parent.parent


def run_detectron2(out: Path, n_train: int, epochs: int, keep: float) -> None:
    import prune_hooks.detectron2  # noqa: F401
    from prune_hooks.detectron2.toy import toy_config
    from prune_hooks.toy import make_toy_coco

    start = time.time()
    files = make_toy_coco(out / "data", {"train": n_train, "val": max(16, n_train // 4)})
    cfg = toy_config(files, out / "data", out / "proxy")
    epoch = math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = epochs * epoch
    cfg.SOLVER.STEPS = (int(cfg.SOLVER.MAX_ITER * 0.75),)
    cfg.SOLVER.CHECKPOINT_PERIOD = cfg.SOLVER.MAX_ITER
    cfg.PRUNE.ENABLED = True
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf", "csod"]
    cfg.PRUNE.KEEP_RATIO = keep
    out.mkdir(parents=True, exist_ok=True)
    proxy_yaml = out / "proxy.yaml"
    proxy_yaml.write_text(cfg.dump())

    print(
        f"demo: proxy training, {cfg.SOLVER.MAX_ITER} iterations ({epochs} epochs of {epoch}) -> {out / 'proxy'}",
        flush=True,
    )
    train_net = ["-m", "prune_hooks.detectron2.train_net"]
    t_proxy = train([*train_net, "--config-file", proxy_yaml], out / "proxy.log")
    run = out / "proxy" / "prune"
    print(f"demo: retraining from {run / 'retrain.yaml'}", flush=True)
    t_retrain = train([*train_net, "--config-file", run / "retrain.yaml"], out / "retrain.log")

    from detectron2.config import get_cfg

    from prune_hooks.detectron2 import add_prune_config, write_retrain_config

    re = add_prune_config(get_cfg())
    re.merge_from_file(str(run / "retrain.yaml"))
    rand, pruned, n_keep = random_subset(run)
    base = cfg.clone()
    base.OUTPUT_DIR = str(out / "random")
    name, _, image_root = next(e for e in cfg.PRUNE.COCO_DATASETS if e[0] == cfg.DATASETS.TRAIN[0])
    rand_yaml = write_retrain_config(base, name, pruned, image_root, n_keep, n_train, rand / "retrain.yaml")
    print(f"demo: retraining a random subset of the same size from {rand_yaml}", flush=True)
    t_random = train([*train_net, "--config-file", rand_yaml], out / "random.log")
    proxy_ap, retrain_ap, random_ap = (
        last_ap(out / "proxy"),
        last_ap(Path(re.OUTPUT_DIR)),
        last_ap(out / "random_retrain"),
    )
    passes = [
        float(m)
        for m in re_mod.findall(
            r"scoring pass \d+ after iteration \d+: \d+ images \(this rank\), ([0-9.]+)s",
            (out / "proxy.log").read_text(),
        )
    ]
    summary(
        "detectron2",
        run,
        n_train,
        passes,
        (cfg.SOLVER.MAX_ITER, re.SOLVER.MAX_ITER),
        (proxy_ap, retrain_ap, random_ap),
        (t_proxy, t_retrain, t_random),
        "retrain.yaml",
        start,
    )


def random_subset(run: Path) -> tuple[Path, Path, int]:
    """A random subset of the pruned subset's size (``prune-hooks select --method random``) in ``run``/random:
    the directory, its pruned COCO file and its number of images."""
    from prune_hooks.cli import main as cli

    n_keep = json.loads((run / "subset.json").read_text())["n_images"]
    rand = run / "random"
    if cli(["select", str(run), "--method", "random", "--count", str(n_keep), "--out", str(rand)]):
        raise SystemExit("demo: random selection failed")
    return rand, next(rand.glob("*_pruned.json")), n_keep


def ap_text(ap: dict) -> str:
    """AP / AP50, or why there is none: an evaluation without detections reports no AP (NaN)."""
    if any(math.isnan(ap.get(k, math.nan)) for k in ("AP", "AP50")):
        return "no AP (no detection on val: too few iterations to learn)"
    return f"{ap['AP']:.1f} / {ap['AP50']:.1f}"


def summary(framework, run, n_train, passes, iters, aps, times, retrain_name, start) -> None:
    meta = json.loads((run / "meta.json").read_text())
    subset = json.loads((run / "subset.json").read_text())
    print()
    print(f"prune_hooks demo ({framework})")
    print(f"  objects scored      {meta['num_objects']} in {meta['num_images']} images, {meta['passes']} passes")
    if passes:
        print(
            f"  scoring pass        {sum(passes) / len(passes):.1f}s each "
            f"({sum(passes) / len(passes) / n_train:.3f}s/image)"
        )
    print(
        f"  images kept         {subset['n_images']} of {subset['n_total']} ({subset['method']}, "
        f"{subset['aggregation']})"
    )
    print(f"  iterations          proxy {iters[0]}, retrain {iters[1]}")
    print(f"  val AP / AP50       full data (the proxy, {iters[0]} iterations) {ap_text(aps[0])}")
    print(
        f"                      retrained, {iters[1]} iterations: pruned subset {ap_text(aps[1])}, "
        f"random subset of the same size {ap_text(aps[2])}"
    )
    print(
        "                      (one training seed each: differences of a few points are noise; "
        "docs/benchmarks.md has the repeated comparison)"
    )
    print(f"  train time          proxy {times[0]:.0f}s, retrain {times[1]:.0f}s, random {times[2]:.0f}s")
    print(
        f"  files               {run}/ (meta.json, objects.csv, images.csv, prototypes.npz, subset.json, "
        f"{retrain_name}, ...)"
    )
    print(f"  wall time           {time.time() - start:.0f}s")


def run_mmdet(out: Path, n_train: int, epochs: int, keep: float) -> None:
    import os

    from prune_hooks.toy import make_toy_coco, toy_config_file

    start = time.time()
    make_toy_coco(out / "data", {"train": n_train, "val": max(16, n_train // 4)})
    out.mkdir(parents=True, exist_ok=True)
    proxy = out / "proxy.py"
    toy = toy_config_file("mmdet")
    proxy.write_text(
        f"_base_ = {str(toy)!r}\n"
        f"data_root = {str(out / 'data') + '/'!r}\n"
        "custom_imports = dict(imports=['prune_hooks.mmdet'], allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='PruneHook', methods=['vps_iou', 'vps_conf', 'csod'], keep_ratio={keep})]\n"
        f"train_cfg = dict(max_epochs={epochs}, val_interval={epochs})\n"
        f"param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20), "
        f"dict(type='MultiStepLR', begin=0, end={epochs}, by_epoch=True, milestones=[{max(1, int(epochs * 0.75))}], "
        "gamma=0.1)]\n"
        f"default_hooks = dict(checkpoint=dict(interval={epochs}))\n"
    )
    os.environ["PRUNE_TOY_ROOT"] = str(out / "data") + "/"  # the toy config's data_root, here (Config.fromfile below)
    env = dict(os.environ)  # and in the trainings
    train_mmdet = ROOT / "tools" / "train_mmdet.py"
    print(f"demo: proxy training, {epochs} epochs -> {out / 'proxy'}", flush=True)
    t_proxy = train([train_mmdet, proxy, "--work-dir", out / "proxy"], out / "proxy.log", env)
    run = out / "proxy" / "prune"
    print(f"demo: retraining from {run / 'retrain.py'}", flush=True)
    t_retrain = train([train_mmdet, run / "retrain.py"], out / "retrain.log", env)
    from mmengine.config import Config

    from prune_hooks.mmdet.retrain import write_retrain_config

    rand, pruned, n_keep = random_subset(run)
    base = Config.fromfile(str(proxy))
    base.work_dir = str(out / "random")
    rand_py = write_retrain_config(base, pruned, n_keep, n_train, rand / "retrain.py")
    print(f"demo: retraining a random subset of the same size from {rand_py}", flush=True)
    t_random = train([train_mmdet, rand_py], out / "random.log", env)
    batch = 4  # the toy config's train_dataloader.batch_size
    passes = [
        float(m)
        for m in re_mod.findall(
            r"scoring pass \d+ after iteration \d+: \d+ images \(this rank\), ([0-9.]+)s",
            (out / "proxy.log").read_text(),
        )
    ]
    iters = (epochs * math.ceil(n_train / batch), epochs * math.ceil(n_keep / batch))
    summary(
        "mmdet",
        run,
        n_train,
        passes,
        iters,
        (mmdet_ap(out / "proxy"), mmdet_ap(Path(str(out / "proxy") + "_retrain")), mmdet_ap(out / "random_retrain")),
        (t_proxy, t_retrain, t_random),
        "retrain.py",
        start,
    )


def yolo_map50(save_dir: Path) -> float:
    """The last val mAP50 (%) Ultralytics wrote to results.csv."""
    import csv

    with open(save_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return 100 * float(rows[-1]["metrics/mAP50(B)"])


def run_ultralytics(out: Path, n_train: int, epochs: int, keep: float) -> None:
    from prune_hooks.ultralytics.toy import make_toy_yolo

    start = time.time()
    data = make_toy_yolo(out / "data", {"train": n_train, "val": max(16, n_train // 4)}, size=128)
    common = ["imgsz=128", "batch=8", "nbs=8", "device=cpu", "workers=0", "plots=False", "amp=False", "seed=0"]
    common += [f"project={out}", "exist_ok=True", "warmup_epochs=1"]
    args = ["-m", "prune_hooks.ultralytics", "model=yolov8n.yaml", f"data={data}", f"epochs={epochs}", "name=proxy"]
    args += ["prune.methods=vps_iou,vps_conf,csod", f"prune.keep_ratio={keep}"]
    print(f"demo: proxy training, {epochs} epochs -> {out / 'proxy'}", flush=True)
    t_proxy = train([*args, *common], out / "proxy.log")
    run = out / "proxy" / "prune"
    yolo = str(Path(sys.executable).parent / "yolo")
    print(f"demo: retraining from {run / 'retrain_args.yaml'}", flush=True)
    t_retrain = train(["-c", _yolo_cli(yolo, run / "retrain_args.yaml")], out / "retrain.log")
    # the same budget drawn at random, retrained with the same arguments
    subset = json.loads((run / "subset.json").read_text())
    rand, _, _ = random_subset(run)
    from ultralytics.utils import YAML

    from prune_hooks.ultralytics import write_subset_files

    pruned = write_subset_files(run, json.loads((rand / "subset.json").read_text()), data, rand)
    cfg = dict(YAML.load(run / "retrain_args.yaml"))
    cfg.update(data=str(pruned), name="proxy_random")
    YAML.save(rand / "retrain_args.yaml", cfg)
    print(f"demo: retraining a random subset of the same size from {rand / 'retrain_args.yaml'}", flush=True)
    t_random = train(["-c", _yolo_cli(yolo, rand / "retrain_args.yaml")], out / "random.log")
    maps = [yolo_map50(out / n) for n in ("proxy", "proxy_retrain", "proxy_random")]
    print()
    print("ultralytics demo (YOLOv8n from its yaml, CPU)")
    kept = f"{subset['n_images']} of {subset['n_total']} ({subset['method']}, {subset['aggregation']})"
    print(f"  images kept         {kept}")
    print(
        f"  val mAP50           full data (the proxy) {maps[0]:.1f}; retrained, same epochs: pruned subset "
        f"{maps[1]:.1f}, random subset {maps[2]:.1f} (one training each: differences of a few points are noise)"
    )
    print(f"  train time          proxy {t_proxy:.0f}s, retrain {t_retrain:.0f}s, random {t_random:.0f}s")
    print(f"  files               {run}/ (subset.txt, data_pruned.yaml, retrain_args.yaml, images.csv, ...)")
    print(f"  wall time           {time.time() - start:.0f}s")


def _yolo_cli(yolo: str, cfg: Path) -> str:
    """Python code that runs Ultralytics' own command line (``yolo detect train cfg=...``)."""
    return f"import subprocess, sys; sys.exit(subprocess.call([{yolo!r}, 'detect', 'train', 'cfg={cfg}']))"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", default="detectron2", choices=["detectron2", "mmdet", "ultralytics"])
    ap.add_argument("--out", default=None, help="output directory (default runs/demo/<framework>)")
    ap.add_argument("--images", type=int, default=192, help="training images of the toy set")
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="proxy epochs = scoring passes (default 6; ultralytics 30: YOLO from scratch)",
    )
    ap.add_argument("--keep", type=float, default=0.5, help="keep ratio of the subset")
    args = ap.parse_args(argv)
    out = Path(args.out or ROOT / "runs" / "demo" / args.framework).resolve()
    runs = {"detectron2": run_detectron2, "mmdet": run_mmdet, "ultralytics": run_ultralytics}
    epochs = args.epochs or (30 if args.framework == "ultralytics" else 6)
    runs[args.framework](out, args.images, epochs, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
