#!/usr/bin/env python
"""The prune_hooks demo on the embedded toy data set (``make demo``).

Detectron2: generate the toy shapes set, write a proxy config (the model zoo's Faster R-CNN shrunk
to R18-FPN, ``PRUNE.ENABLED: True``), train it with ``tools/train_net.py`` (the hook scores every
object at each epoch end and writes ``OUTPUT_DIR/prune/`` when training ends), retrain from the
generated ``retrain.yaml`` with the same script, and print a summary.
"""
from __future__ import annotations

import argparse
import json
import math
import re as re_mod
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def last_ap(output_dir: Path) -> dict:
    """The last COCO bbox metrics detectron2 logged to OUTPUT_DIR/metrics.json."""
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "bbox/AP" in r]
    return {"AP": evals[-1]["bbox/AP"], "AP50": evals[-1]["bbox/AP50"]} if evals else {"AP": math.nan, "AP50": math.nan}


def train(config: Path, log: Path) -> float:
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(config)], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
        raise SystemExit(f"demo: training failed, see {log}")
    return time.time() - start


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
    cfg.PRUNE.KEEP_RATIO = keep
    out.mkdir(parents=True, exist_ok=True)
    proxy_yaml = out / "proxy.yaml"
    proxy_yaml.write_text(cfg.dump())

    print(f"demo: proxy training, {cfg.SOLVER.MAX_ITER} iterations ({epochs} epochs of {epoch}) -> {out / 'proxy'}", flush=True)
    t_proxy = train(proxy_yaml, out / "proxy.log")
    run = out / "proxy" / "prune"
    print(f"demo: retraining from {run / 'retrain.yaml'}", flush=True)
    t_retrain = train(run / "retrain.yaml", out / "retrain.log")

    from detectron2.config import get_cfg
    from prune_hooks.detectron2 import add_prune_config

    re = add_prune_config(get_cfg())
    re.merge_from_file(str(run / "retrain.yaml"))
    meta = json.loads((run / "meta.json").read_text())
    subset = json.loads((run / "subset.json").read_text())
    proxy_ap, retrain_ap = last_ap(out / "proxy"), last_ap(Path(re.OUTPUT_DIR))
    passes = [float(m) for m in re_mod.findall(r"scoring pass \d+ at iteration \d+: \d+ images \(this rank\), ([0-9.]+)s", (out / "proxy.log").read_text())]
    print()
    print("prune_hooks demo (detectron2)")
    print(f"  objects scored      {meta['num_objects']} in {meta['num_images']} images, {meta['passes']} passes")
    if passes:
        print(f"  scoring pass        {sum(passes) / len(passes):.1f}s each ({sum(passes) / len(passes) / n_train:.3f}s/image)")
    print(f"  images kept         {subset['n_images']} of {subset['n_total']} ({subset['method']}, {subset['aggregation']})")
    print(f"  iterations          proxy {cfg.SOLVER.MAX_ITER}, retrain {re.SOLVER.MAX_ITER}")
    print(f"  val AP / AP50       proxy {proxy_ap['AP']:.1f} / {proxy_ap['AP50']:.1f}, retrain {retrain_ap['AP']:.1f} / {retrain_ap['AP50']:.1f}")
    print(f"  train time          proxy {t_proxy:.0f}s, retrain {t_retrain:.0f}s")
    print(f"  files               {run}/ (meta.json, objects.csv, images.csv, subset.json, retrain.yaml, ...)")
    print(f"  wall time           {time.time() - start:.0f}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", default="detectron2", choices=["detectron2", "mmdet"])
    ap.add_argument("--out", default=None, help="output directory (default runs/demo/<framework>)")
    ap.add_argument("--images", type=int, default=64, help="training images of the toy set")
    ap.add_argument("--epochs", type=int, default=6, help="proxy epochs = scoring passes")
    ap.add_argument("--keep", type=float, default=0.5, help="keep ratio of the subset")
    args = ap.parse_args(argv)
    out = Path(args.out or ROOT / "runs" / "demo" / args.framework).resolve()
    if args.framework == "mmdet":
        print("demo: FRAMEWORK=mmdet needs the MMDetection hooks, which are not part of this version yet;"
              " run `make demo` (detectron2).", file=sys.stderr)
        return 2
    run_detectron2(out, args.images, args.epochs, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
