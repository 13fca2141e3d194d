#!/usr/bin/env python
"""Does pruning work? One proxy training with the detectron2 hook, subsets per method and keep ratio,
retraining from each generated retrain config, COCO AP on a clean validation set.

    python tools/bench_quality.py [--data fashion] [--scale 1] [--epochs 8] [--out tools/results]
    python tools/bench_quality.py --data deepforest --keep 0.5 --methods random vps_iou csod   # real-data smoke case

Data: tools/bench_data.py (Fashion-MNIST objects on skimage photos, near-duplicates, label noise in train,
clean val; or deepforest's aerial tiles). Model: Faster R-CNN with an ImageNet-pretrained MobileNetV2-FPN
at 256 px (tools/mobilenet_fpn.py, configs/detectron2/bench_MNV2_FPN_overrides.yaml). The proxy is the
full-data run (the hook does not change training), so its final AP is the "full" row. Every training runs
tools/train_net.py in a subprocess; results are appended to WORK/results.jsonl as they come, a rerun skips
what is there, and bench_quality.md/.json and ratio_vs_ap.png are rewritten after each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

METHODS = ["random", "vps_iou:max", "vps_iou:mean", "vps_iou:sum", "vps_conf:max", "vps_conf:mean", "vps_conf:sum",
           "csod", "forgetting", "entropy"]
TRAIN = ("import sys, runpy; sys.path[:0] = [{tools!r}]; import mobilenet_fpn; "
         "sys.argv = ['train_net.py', '--config-file', {yaml!r}]; runpy.run_path({script!r}, run_name='__main__')")


def train(yaml: Path, log: Path) -> float:
    t = time.time()
    code = TRAIN.format(tools=str(ROOT / "tools"), yaml=str(yaml), script=str(ROOT / "tools" / "train_net.py"))
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}), see {log}")
    return time.time() - t


def metrics(output_dir: Path) -> dict:
    recs = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines() if line.strip()]
    ev = [r for r in recs if "bbox/AP" in r]
    return {k: ev[-1][f"bbox/{k}"] for k in ("AP", "AP50", "AP75")} if ev else {}


def proxy_config(files, data_root: Path, out: Path, n_train: int, epochs: int, classes: int, size: int):
    from prune_hooks.detectron2.toy import toy_config

    cfg = toy_config(files, data_root, out, prefix="bq")
    cfg.merge_from_file(str(ROOT / "configs" / "detectron2" / "bench_MNV2_FPN_overrides.yaml"))
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = classes
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = (size,), size, size, size
    cfg.SOLVER.MAX_ITER = epochs * math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.STEPS = (int(cfg.SOLVER.MAX_ITER * 0.75),)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER // 10)
    cfg.SOLVER.CHECKPOINT_PERIOD = cfg.SOLVER.MAX_ITER
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.ENABLED = True
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf", "csod"]
    return cfg


def fmt(vals) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.1f}" + (f" ± {np.std(vals):.1f}" if len(vals) > 1 else "")


def write_results(out: Path, rows: list[dict], header: str, keeps: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["keep"]), []).append(r)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "full"))
    full = cells.get(("full", 1.0), [{}])[0]
    rand = {k: np.mean([r["AP"] for r in cells.get(("random", k), [])]) if ("random", k) in cells else None for k in keeps}
    lines = [header, "", f"Full data: AP {fmt([full.get('AP')])}, AP50 {fmt([full.get('AP50')])}, AP75 {fmt([full.get('AP75')])}.", "",
             "COCO AP (%) on val after retraining on the subset; random: mean ± std over seeds; (Δ vs random mean).", "",
             "| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |", "|---" * (len(keeps) + 1) + "|"]
    for m in methods:
        row = []
        for k in keeps:
            rs = cells.get((m, k))
            if not rs:
                row.append("")
                continue
            s = fmt([r.get("AP") for r in rs])
            if m != "random" and rand.get(k) is not None and "AP" in rs[0]:
                s += f" ({rs[0]['AP'] - rand[k]:+.1f})"
            row.append(s)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += ["", "AP50 / AP75:", "", "| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |", "|---" * (len(keeps) + 1) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(
            f"{fmt([r.get('AP50') for r in cells[(m, k)]])} / {fmt([r.get('AP75') for r in cells[(m, k)]])}" if (m, k) in cells else ""
            for k in keeps) + " |")
    (out / "bench_quality.md").write_text("\n".join(lines) + "\n")
    (out / "bench_quality.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        ks = [k for k in keeps if (m, k) in cells]
        ys = [np.mean([r["AP"] for r in cells[(m, k)]]) for k in ks]
        sd = [np.std([r["AP"] for r in cells[(m, k)]]) for k in ks]
        style = dict(color="k", lw=2) if m == "random" else dict(ls="--" if m.startswith("vps_conf") else "-")
        ax.errorbar(ks, ys, yerr=sd if m == "random" else None, marker="o", ms=3, capsize=3, label=m, **style)
    if "AP" in full:
        ax.axhline(full["AP"], color="gray", ls=":", label="full data")
    ax.set_xlabel("keep ratio (fraction of train images)")
    ax.set_ylabel("val AP (%)")
    ax.set_title("AP after retraining on the subset (iterations scaled to the subset)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(out / "ratio_vs_ap.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("fashion", "deepforest"), default="fashion")
    ap.add_argument("--scale", type=float, default=1.0, help="fashion: 400*scale train / 150*scale val images")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    ap.add_argument("--methods", nargs="+", default=METHODS, help="method or method:aggregation")
    ap.add_argument("--seeds", type=int, default=3, help="random baseline seeds")
    ap.add_argument("--out", default=str(ROOT / "tools" / "results"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_quality"))
    args = ap.parse_args()

    import bench_data
    from detectron2.config import get_cfg

    from prune_hooks.cli import main as cli
    from prune_hooks.detectron2 import add_prune_config, write_retrain_config

    start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.data == "fashion":
        n_train, n_val, classes, size = int(400 * args.scale), int(150 * args.scale), len(bench_data.CLASSES), 256
        files = bench_data.make_fashion(work / "data", n_train, n_val, size=size)
    else:
        files, classes, size = bench_data.make_deepforest(work / "data"), 1, 400
        n_train, n_val = (len(json.loads(files[s].read_text())["images"]) for s in ("train", "val"))
    cfg = proxy_config(files, work / "data", work / "proxy", n_train, args.epochs, classes, size)
    command = "python tools/bench_quality.py " + " ".join(sys.argv[1:])
    header = (f"# Pruning quality: detectron2, {args.data} data\n\n`{command}`: {n_train} train / {n_val} val images; "
              f"Faster R-CNN MobileNetV2-FPN (ImageNet init) at {size} px, batch {cfg.SOLVER.IMS_PER_BATCH}, proxy "
              f"{cfg.SOLVER.MAX_ITER} iterations ({args.epochs} epochs) with the hook scoring after every epoch; each subset "
              f"retrained from its retrain.yaml (iterations scaled by kept/N, so the same {args.epochs} epochs). 2 CPU cores.")

    done_path = work / "results.jsonl"
    rows = [json.loads(x) for x in done_path.read_text().splitlines()] if done_path.exists() else []
    seen = {(r["method"], r["keep"], r.get("seed")) for r in rows}

    def record(row: dict) -> None:
        rows.append(row)
        with open(done_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        write_results(Path(args.out), rows, header, args.keep)
        print(row, f"[{time.time() - start:.0f}s]", flush=True)

    run = work / "proxy" / "prune"
    if ("full", 1.0, None) not in seen:
        (work / "proxy.yaml").write_text(cfg.dump())
        print(f"proxy: {n_train} train / {n_val} val images, {cfg.SOLVER.MAX_ITER} iterations", flush=True)
        secs = train(work / "proxy.yaml", work / "proxy.log")
        record({"method": "full", "keep": 1.0, "seed": None, "kept": n_train, "iters": cfg.SOLVER.MAX_ITER, "seconds": round(secs), **metrics(work / "proxy")})

    for keep in args.keep:
        for spec in args.methods:
            method, _, agg = spec.partition(":")
            for seed in (range(args.seeds) if method == "random" else [None]):
                if (spec, keep, seed) in seen:
                    continue
                name = f"{spec.replace(':', '_')}{'' if seed is None else f'_s{seed}'}_k{keep:g}"
                sel = work / "subsets" / name
                argv = ["select", str(run), "--method", method, "--keep", str(keep), "--out", str(sel)]
                argv += ["--aggregation", agg] if agg else []
                argv += ["--seed", str(seed)] if seed is not None else []
                if cli(argv) != 0:
                    raise SystemExit(f"select failed: {name}")
                subset = json.loads((sel / "subset.json").read_text())
                base = cfg.clone()
                base.OUTPUT_DIR = str(work / "retrain" / name)
                pruned = next(sel.glob("*_pruned.json"))
                yaml = write_retrain_config(base, "bq_train", pruned, str((work / "data" / "train").resolve()),
                                            subset["n_images"], n_train, sel / "retrain.yaml")
                re_cfg = add_prune_config(get_cfg())
                re_cfg.merge_from_file(str(yaml))
                secs = train(yaml, sel / "train.log")
                record({"method": spec, "keep": keep, "seed": seed, "kept": subset["n_images"], "iters": re_cfg.SOLVER.MAX_ITER,
                        "seconds": round(secs), **metrics(Path(re_cfg.OUTPUT_DIR))})
    print((Path(args.out) / "bench_quality.md").read_text())
    print(f"total {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
