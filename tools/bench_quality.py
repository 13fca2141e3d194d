#!/usr/bin/env python
"""Does pruning work? Proxy training with the detectron2 hook, subsets per method and ratio, retraining
from each generated config, COCO AP on a clean validation set.

    python tools/bench_quality.py [--scale 1] [--out tools/results]

Data (generated, seed 0, written under runs/bench_quality/data): six shape classes, two confusable
pairs (square/bar, disc/ring), long-tailed class frequencies, objects 10-60 px on 160 px textured
backgrounds with blur, contrast changes and overlaps, unlabeled distractor blobs, ~20% of training
images in near-duplicate groups (a pruner should drop the copies), and in train only ~8% label noise
(class flips, jittered boxes, missing boxes). Each image's generation factors go to factors.json.
Writes bench_quality.md / .json and ratio_vs_ap.png.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("square", "bar", "disc", "ring", "triangle", "cross")
FREQ = np.array([0.30, 0.10, 0.25, 0.08, 0.20, 0.07])  # long tail; bar and ring are the rare look-alikes


def _shape(draw, cls, box, colour, width):
    x0, y0, x1, y1 = box
    if cls == 0 or cls == 1:
        draw.rectangle(box, fill=colour)
    elif cls == 2:
        draw.ellipse(box, fill=colour)
    elif cls == 3:
        draw.ellipse(box, outline=colour, width=width)
    elif cls == 4:
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
    else:
        cx, cy, t = (x0 + x1) / 2, (y0 + y1) / 2, max(2, (x1 - x0) / 5)
        draw.rectangle([x0, cy - t, x1, cy + t], fill=colour)
        draw.rectangle([cx - t, y0, cx + t, y1], fill=colour)


def draw_image(rng, size=160):
    from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

    coarse = rng.integers(30, 225, size=(5, 5, 3), dtype=np.uint8)
    bg = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    bg += rng.normal(0, 14, size=bg.shape)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objs = []
    for _ in range(int(rng.integers(0, 3))):  # unlabeled distractors
        x, y, r = rng.uniform(0, size, 3) * [1, 1, 0.08]
        draw.ellipse([x - r - 3, y - r - 2, x + r + 3, y + r + 4], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.choice(len(CLASSES), p=FREQ))
        s = float(np.exp(rng.uniform(np.log(10), np.log(60))))
        w = s * (rng.uniform(2.2, 3.0) if cls == 1 else rng.uniform(0.85, 1.15))
        h = s
        if w > size - 2:
            w = size - 2
        x0, y0 = rng.uniform(0, size - w - 1), rng.uniform(0, size - h - 1)
        _shape(draw, cls, [x0, y0, x0 + w, y0 + h], tuple(int(c) for c in rng.integers(0, 256, 3)), max(2, int(s / 6)))
        objs.append([cls, [round(x0, 2), round(y0, 2), round(w, 2), round(h, 2)]])
    blur = float(rng.uniform(0, 1.5))
    contrast = float(rng.uniform(0.6, 1.3))
    img = ImageEnhance.Contrast(img.filter(ImageFilter.GaussianBlur(blur))).enhance(contrast)
    return img, objs, {"blur": blur, "contrast": contrast}


def make_data(root: Path, n_train: int, n_val: int, seed: int = 0) -> dict[str, Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    out, factors, image_id, ann_id = {}, {}, 1, 1
    for split, count in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        k = 0
        while k < count:
            img, objs, f = draw_image(rng)
            copies = 1
            if split == "train" and rng.random() < 0.07:  # a near-duplicate group of 3 (~20% of images)
                copies = min(3, count - k)
            for c in range(copies):
                arr = np.asarray(img, dtype=np.float32) + (rng.normal(0, 4, (160, 160, 3)) if c else 0)
                name = f"{split}_{image_id:06d}.png"
                Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / split / name)
                images.append({"id": image_id, "file_name": name, "width": 160, "height": 160})
                noise = []
                for cls, box in objs:
                    box = list(box)
                    if split == "train":
                        u = rng.random()
                        if u < 0.04:
                            cls = int(rng.choice([j for j in range(len(CLASSES)) if j != cls]))
                            noise.append("flip")
                        elif u < 0.06:
                            box = [box[0] + rng.normal(0, box[2] / 3), box[1] + rng.normal(0, box[3] / 3), box[2], box[3]]
                            box = [max(0.0, box[0]), max(0.0, box[1]), box[2], box[3]]
                            noise.append("jitter")
                        elif u < 0.08:
                            noise.append("missing")
                            continue
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": cls + 1, "bbox": [float(v) for v in box],
                                 "area": float(box[2] * box[3]), "iscrowd": 0})
                    ann_id += 1
                factors[image_id] = {**f, "split": split, "dup_group": image_id - c if copies > 1 else None, "noise": noise}
                image_id += 1
                k += 1
        out[split] = root / "annotations" / f"instances_{split}.json"
        out[split].parent.mkdir(parents=True, exist_ok=True)
        out[split].write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "factors.json").write_text(json.dumps(factors))
    return out


def metrics(output_dir: Path) -> dict:
    recs = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines() if line.strip()]
    ev = [r for r in recs if "bbox/AP" in r]
    return {k: ev[-1][f"bbox/{k}"] for k in ("AP", "AP50", "AP75")} if ev else {}


def train(yaml: Path, log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(yaml)], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"training failed: {log}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="data and schedule size (1: ~45 min on 2 CPU cores)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--seeds", type=int, default=2, help="random baseline seeds")
    ap.add_argument("--out", default=str(ROOT / "tools" / "results"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_quality"))
    args = ap.parse_args()

    import prune_hooks.detectron2  # noqa: F401
    from detectron2.config import get_cfg

    from prune_hooks.cli import main as cli
    from prune_hooks.detectron2 import add_prune_config, write_retrain_config
    from prune_hooks.detectron2.toy import toy_config

    start = time.time()
    work = Path(args.work)
    n_train, n_val = int(160 * args.scale), int(80 * args.scale)
    files = make_data(work / "data", n_train, n_val)
    cfg = toy_config(files, work / "data", work / "proxy", prefix="bq")
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(CLASSES)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = (160,), 160, 160, 160
    epoch = math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = args.epochs * epoch
    cfg.SOLVER.STEPS = (int(cfg.SOLVER.MAX_ITER * 0.75),)
    cfg.SOLVER.CHECKPOINT_PERIOD = cfg.SOLVER.MAX_ITER
    cfg.TEST.EVAL_PERIOD = 0
    cfg.PRUNE.ENABLED = True
    cfg.PRUNE.METHODS = ["vps_iou", "vps_conf", "csod"]
    (work / "proxy.yaml").write_text(cfg.dump())
    print(f"proxy: {n_train} train / {n_val} val images, {cfg.SOLVER.MAX_ITER} iterations", flush=True)
    train(work / "proxy.yaml", work / "proxy.log")
    run = work / "proxy" / "prune"
    full = metrics(work / "proxy")
    rows = [{"method": "full", "keep": 1.0, "seed": None, **full}]
    print("full", full, flush=True)

    methods = [("random", s) for s in range(args.seeds)] + [(m, None) for m in ("vps_iou", "vps_conf", "csod", "forgetting", "entropy")]
    for method, seed in methods:
        for keep in args.keep:
            name = f"{method}{'' if seed is None else f'_s{seed}'}_k{keep:g}"
            sel = work / "subsets" / name
            argv = ["select", str(run), "--method", method, "--keep", str(keep), "--out", str(sel)]
            if seed is not None:
                argv += ["--seed", str(seed)]
            if cli(argv) != 0:
                raise SystemExit(f"select failed: {name}")
            subset = json.loads((sel / "subset.json").read_text())
            base = cfg.clone()
            base.defrost()
            base.OUTPUT_DIR = str(work / "retrain" / name)
            yaml = write_retrain_config(base, "bq_train", sel / "instances_train_pruned.json", str(work / "data" / "train"),
                                        subset["n_images"], n_train, sel / "retrain.yaml")
            re_cfg = add_prune_config(get_cfg())
            re_cfg.merge_from_file(str(yaml))
            train(yaml, sel / "train.log")
            m = metrics(Path(re_cfg.OUTPUT_DIR))
            rows.append({"method": method, "keep": keep, "seed": seed, "kept": subset["n_images"], "iters": re_cfg.SOLVER.MAX_ITER, **m})
            print(rows[-1], f"{time.time() - start:.0f}s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        table.setdefault((r["method"], r["keep"]), []).append(r)
    lines = [
        "# Pruning quality (detectron2, generated shapes benchmark)",
        "",
        f"`python tools/bench_quality.py --scale {args.scale:g} --epochs {args.epochs}`: {n_train} train images "
        f"(near-duplicate groups, ~8% label noise), {n_val} clean val images, Faster R-CNN R18-FPN from scratch at 160 px, "
        f"proxy {cfg.SOLVER.MAX_ITER} iterations; retraining from each generated retrain.yaml (iterations scaled by kept/N). "
        f"COCO bbox AP on val (%). Random: mean ± std over {args.seeds} seeds. Wall time {time.time() - start:.0f}s on 2 CPU cores.",
        "",
        "| method | keep | images | AP | AP50 | AP75 |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(vals):
        vals = [v for v in vals if v is not None and not math.isnan(v)]
        if not vals:
            return "n/a"
        return f"{np.mean(vals):.1f}" + (f" ± {np.std(vals):.1f}" if len(vals) > 1 else "")

    for (method, keep), rs in table.items():
        lines.append(f"| {method} | {keep:g} | {rs[0].get('kept', n_train)} | " + " | ".join(fmt([r.get(k) for r in rs]) for k in ("AP", "AP50", "AP75")) + " |")
    (out / "bench_quality.md").write_text("\n".join(lines) + "\n")
    (out / "bench_quality.json").write_text(json.dumps({"rows": rows, "n_train": n_train, "n_val": n_val, "seconds": time.time() - start}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "full"):
        ks = sorted({r["keep"] for r in rows if r["method"] == method})
        ys = [np.mean([r["AP"] for r in table[(method, k)] if "AP" in r]) for k in ks]
        ax.plot(ks, ys, marker="o", label=method)
    if "AP" in full:
        ax.axhline(full["AP"], color="k", ls="--", label="full data")
    ax.set_xlabel("keep ratio")
    ax.set_ylabel("val AP (%)")
    ax.legend(fontsize=8)
    ax.set_title("AP after retraining on the subset")
    fig.savefig(out / "ratio_vs_ap.png", dpi=110, bbox_inches="tight")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
