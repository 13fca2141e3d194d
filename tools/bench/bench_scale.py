#!/usr/bin/env python
"""Peak memory and time of ``prune-hooks select --method csod`` from 0.25x to 10x COCO, whole process.

    python tools/bench/bench_scale.py [--scales 0.25 0.5 1 10] [--dim 1024] [--dim-10x 102] [--out DIR]

Each instance has COCO train2017's shape scaled (118,000 images per 1x, 80 long-tailed classes, about
2.8 classes and 7.3 boxes per image): an annotation file (boxes only, no segmentation), a run directory
with ``prototypes.npz`` written by the hooks' own writer (float16 unit rows), and an ``images.csv``.
Two processes per scale, peak resident memory from /proc (VmHWM): ``random --count 1`` (annotation
file, index, run directory: everything but the selection) and ``csod --keep 0.5``.

10x is measured at ``--dim-10x`` (default 1/10 of the width) so that it finishes on 2 cores; the
feature-proportional memory of a full-width run is then estimated from the measured one: CSOD reads
the memory-mapped float16 file in place (no copy), and the pages its greedy reads stay mapped, at
most the whole file (2 bytes per value; file-backed pages the kernel can drop and re-read under
memory pressure, but counted in the peak); its per-row bounds and per-class sums do not grow with
the width (or by kilobytes), nor does the rest.
Writes bench_scale.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from common import IMAGE_SCORE_COLUMNS, RESULTS, run_cli  # this folder is sys.path[0]

from prune_hooks.core.scoring.prototypes import save_prototypes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COCO_IMAGES = 118_000


def classes_per_image(rng: np.random.Generator, n_images: int, n_classes: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """(image_id, category_id) of each (image, class) pair, COCO-like: 'person' in ~45% of images, a long tail."""
    tail = 1.0 / np.arange(1, n_classes) ** 1.1
    tail /= tail.sum()
    k = np.minimum(rng.poisson(2.35, n_images), n_classes - 1)
    person = rng.random(n_images) < 0.45
    ids, cats = [], []
    for i in range(n_images):  # sampling without replacement per image; vectorised by chunks is not worth it here
        present = (2 + rng.choice(n_classes - 1, size=k[i], replace=False, p=tail)).tolist()
        cats.append(sorted(([1] if person[i] else []) + present))
        ids.append(np.full(len(cats[-1]), i + 1))
    return np.concatenate(ids), np.concatenate([np.asarray(c, np.int64) for c in cats])


def write_instance(tmp: Path, scale: float, dim: int, seed: int = 0) -> dict:
    """Annotation file, prototypes.npz and images.csv of one scale under ``tmp``; returns its sizes."""
    rng = np.random.default_rng(seed)
    n_images = int(round(COCO_IMAGES * scale))
    image_id, category_id = classes_per_image(rng, n_images)
    boxes = 1 + rng.poisson(1.6, len(image_id))  # boxes per (image, class): 2.6 on average, 7.3 per image
    with open(tmp / "gt.json", "w") as f:  # streamed: 10x is 8.6 M annotations
        f.write('{"images": [')
        image = '{{"id":{0},"file_name":"{0:012d}.jpg","width":640,"height":480}}'
        f.write(",".join(image.format(i) for i in range(1, n_images + 1)))
        f.write('], "annotations": [')
        k = 0
        for s in range(0, len(image_id), 200_000):
            parts = []
            for i, c, m in zip(image_id[s : s + 200_000], category_id[s : s + 200_000], boxes[s : s + 200_000]):
                for _ in range(m):
                    k += 1
                    parts.append(
                        f'{{"id":{k},"image_id":{i},"category_id":{c},"bbox":[10.0,10.0,50.0,40.0],"area":2000.0,'
                        '"iscrowd":0}'
                    )
            f.write(("," if s else "") + ",".join(parts))
        f.write('], "categories": [' + ",".join(f'{{"id":{c},"name":"class{c}"}}' for c in range(1, 81)) + "]}")
    run = tmp / "run"
    run.mkdir()
    centers = rng.normal(size=(81, dim)).astype(np.float32)
    feature = np.empty((len(image_id), dim), np.float32)
    for s in range(0, len(image_id), 200_000):
        part = slice(s, s + 200_000)
        noise = rng.standard_normal((len(image_id[part]), dim), dtype=np.float32)
        feature[part] = np.maximum(0.6 * centers[category_id[part]] + noise, 0.0)
    feature[~(feature > 0).any(1), 0] = 1e-3
    save_prototypes(run / "prototypes.npz", {"image_id": image_id, "category_id": category_id, "feature": feature})
    with open(run / "images.csv", "w") as f:
        f.write(",".join(("image_id", "n_objects", *IMAGE_SCORE_COLUMNS)) + "\n")
        values = rng.random((n_images, len(IMAGE_SCORE_COLUMNS)))
        f.writelines(f"{i + 1},1," + ",".join(f"{v:.6f}" for v in values[i]) + "\n" for i in range(n_images))
    return {
        "images": n_images,
        "annotations": int(boxes.sum()),
        "prototypes": len(image_id),
        "dim": dim,
        "gt_json_mb": round(os.path.getsize(tmp / "gt.json") / 2**20, 1),
        "prototypes_mb": round(os.path.getsize(run / "prototypes.npz") / 2**20, 1),
    }


def width_extra_gb(prototypes: int, dim: int, full: int) -> float:
    """What CSOD holds in addition at ``full`` width instead of ``dim``: the mapped float16 file, 2 bytes per value."""
    return prototypes * 2 * (full - dim) / 2**30


def write_tables(out: Path, setting: dict, rows: list[dict]) -> None:
    (out / "bench_scale.json").write_text(json.dumps({"setting": setting, "rows": rows}, indent=1) + "\n")
    lines = [
        "# `select --method csod` from 0.25x to 10x COCO (whole process)",
        "",
        f"Keep {setting['keep']}, lambda {setting['lambda']}, {setting['machine']}. Peak = VmHWM of the select "
        "process. `base`: `--method random --count 1` (annotation file, index, run directory; everything but the "
        f"selection). Features {setting['dim']}-d below 10x; at 10x {setting['dim_10x']}-d, and the last column adds "
        "an estimate at full width: CSOD reads the memory-mapped float16 file in place, and what its greedy reads "
        "stays mapped (at most the file, 2 bytes per value: `width_extra_gb`; file pages the kernel can drop under "
        "memory pressure, counted in the peak all the same).",
        "",
        "| scale | images | annotations | prototypes | dim | gt.json MB | prototypes.npz MB | base s | base peak GB "
        "| csod s | csod peak GB | csod peak GB at full width |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scale']:g}x | {r['images']} | {r['annotations']} | {r['prototypes']} | {r['dim']} | "
            f"{r['gt_json_mb']} | {r['prototypes_mb']} | {r['base_seconds']} | {r['base_peak_gb']} | "
            f"{r['csod_seconds']} | {r['csod_peak_gb']} | {r.get('csod_peak_gb_at_full_width', '')} |"
        )
    (out / "bench_scale.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0, 10.0])
    ap.add_argument("--dim", type=int, default=1024, help="feature width below 10x")
    ap.add_argument("--dim-10x", type=int, default=102, help="feature width at scales >= 10 (memory scaled to --dim)")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=0.05)
    ap.add_argument("--tmp", default=None, help="where the instances are written (default: the system's temp dir)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    out = Path(args.out)
    setting = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "keep": args.keep,
        "lambda": args.lam,
        "dim": args.dim,
        "dim_10x": args.dim_10x,
    }
    saved = out / "bench_scale.json"  # resumable: scales already measured in this setting are kept
    rows = json.loads(saved.read_text())["rows"] if saved.exists() else []
    if rows and json.loads(saved.read_text())["setting"] != setting:
        raise SystemExit(f"{saved} holds another setting: move it away first")
    for scale in args.scales:
        if any(r["scale"] == scale for r in rows):
            continue
        dim = args.dim_10x if scale >= 10 else args.dim
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            tmp = Path(tmp)
            t = time.perf_counter()
            size = write_instance(tmp, scale, dim)
            print(f"{scale:g}x: {size} ({time.perf_counter() - t:.0f}s to write)", flush=True)
            base = ["select", str(tmp / "run"), "--annotations", str(tmp / "gt.json"), "--out", str(tmp / "sel")]
            base_s, base_gb, _ = run_cli(base + ["--method", "random", "--count", "1"])
            csod = ["--method", "csod", "--keep", str(args.keep), "--lambda", str(args.lam)]
            csod_s, csod_gb, _ = run_cli(base + csod)
        row = {"scale": scale, **size, "base_seconds": round(base_s, 1), "base_peak_gb": round(base_gb, 2),
               "csod_seconds": round(csod_s, 1), "csod_peak_gb": round(csod_gb, 2)}  # fmt: skip
        if dim != args.dim:  # the feature-proportional part at full width
            row["csod_peak_gb_at_full_width"] = round(csod_gb + width_extra_gb(size["prototypes"], dim, args.dim), 2)
        rows.append(row)
        print(row, flush=True)
        write_tables(out, setting, sorted(rows, key=lambda r: r["scale"]))
    print((out / "bench_scale.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
