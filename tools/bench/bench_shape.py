#!/usr/bin/env python
"""Speed of `prune-hooks score shape` at COCO scale, against pycocotools' own mask pass.

    python tools/bench/bench_shape.py [--images 118000] [--instances 860000] [--out docs/benchmarks]

Generates (once, cached under runs/bench_shape/) a COCO instances file shaped like train2017: 118k
images of 640 x 480 / 480 x 640, ~860k polygon instances whose sizes follow COCO's mix (about 41 %
small, 34 % medium, 25 % large by area) with vertex counts growing with the object's size (as
annotators click more points on larger outlines: 6 to 120, mean ≈ 24), one in ten objects in 2–3
parts, and ~1 % crowd regions as uncompressed RLE. Then, in one run on this machine:

1. the whole `prune-hooks score shape` process (python start, JSON parsing, scoring, writing the run
   directory; report off), wall time, with the default workers (every CPU) and with one;
2. one pass of pycocotools' ``COCO.annToRLE`` + ``maskUtils.area`` over the same annotations (the file
   already parsed and indexed; only the pass is timed) — what any COCO tool pays to look at the masks.

Writes bench_shape.json and bench_shape.md under --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS  # tools/bench/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[2]


def make_file(path: Path, n_images: int, n_instances: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    sizes = rng.random(n_images) < 0.75
    for i in range(n_images):
        w, h = (640, 480) if sizes[i] else (480, 640)
        images.append({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": w, "height": h})
    owner = np.sort(rng.integers(0, n_images, n_instances))
    # object side: COCO's small (< 32), medium (32-96), large (> 96) mix
    kind = rng.choice(3, n_instances, p=[0.41, 0.34, 0.25])
    side = np.where(
        kind == 0,
        rng.uniform(4, 32, n_instances),
        np.where(kind == 1, rng.uniform(32, 96, n_instances), rng.uniform(96, 400, n_instances)),
    )
    crowd = rng.random(n_instances) < 0.01
    aid = 0
    for k in range(n_instances):
        im = images[owner[k]]
        w, h = im["width"], im["height"]
        s = float(side[k])
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        aid += 1
        cat = int(rng.integers(1, 81))
        if crowd[k]:
            x0, y0 = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
            x1, y1 = int(min(w, cx + s / 2)), int(min(h, cy + s / 2))
            m = np.zeros((h, w), np.uint8)
            m[y0:y1, x0:x1] = 1
            flat = m.T.ravel()
            change = np.flatnonzero(np.diff(flat)) + 1
            bounds = np.concatenate([[0], change, [flat.size]])
            counts = np.diff(bounds).tolist()
            if flat[0] == 1:
                counts = [0] + counts
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": cat,
                    "iscrowd": 1,
                    "bbox": [x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "segmentation": {"size": [h, w], "counts": counts},
                }
            )
            continue
        parts = 1 if rng.random() > 0.1 else int(rng.integers(2, 4))
        seg = []
        for p in range(parts):
            r = s / 2 / math.sqrt(parts)
            px, py = cx + (p * r * 1.5), cy + rng.uniform(-r, r)
            n = int(np.clip(6 + s / 3 * rng.uniform(0.5, 1.5), 6, 120))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = r * rng.uniform(0.55, 1.0, n)
            xs = np.clip(px + rad * np.cos(ang), 0, w - 1)
            ys = np.clip(py + rad * np.sin(ang), 0, h - 1)
            seg.append(np.round(np.stack([xs, ys], 1).ravel(), 2).tolist())
        pts = np.concatenate([np.asarray(q).reshape(-1, 2) for q in seg])
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        anns.append(
            {
                "id": aid,
                "image_id": im["id"],
                "category_id": cat,
                "iscrowd": 0,
                "bbox": [
                    round(float(x0), 2),
                    round(float(y0), 2),
                    round(float(max(x1 - x0, 0.5)), 2),
                    round(float(max(y1 - y0, 0.5)), 2),
                ],
                "area": round(float((x1 - x0) * (y1 - y0)) * 0.6, 2),
                "segmentation": seg,
            }
        )
    data = {
        "info": {"description": "bench_shape: COCO-shaped polygons"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 81)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def time_cli(ann: Path, out: Path, workers: int | None) -> float:
    cmd = [
        sys.executable,
        "-m",
        "prune_hooks.cli",
        "score",
        "shape",
        "--annotations",
        str(ann),
        "--out",
        str(out),
        "--no-report",
    ]
    cmd += ["--workers", str(workers)] if workers else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"score shape failed: {proc.stderr[-2000:]}")
    print(proc.stdout.strip(), flush=True)
    return wall


def time_pycocotools(ann: Path) -> tuple[float, float, int]:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    start = time.perf_counter()
    coco = COCO(str(ann))
    load = time.perf_counter() - start
    anns = list(coco.anns.values())
    start = time.perf_counter()
    total = 0.0
    for a in anns:
        total += float(mask_utils.area(coco.annToRLE(a)))
    return time.perf_counter() - start, load, len(anns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=118_000)
    ap.add_argument("--instances", type=int, default=860_000)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_shape"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    work = Path(args.work)
    ann = work / f"instances_{args.images}_{args.instances}.json"
    if not ann.is_file():
        start = time.perf_counter()
        make_file(ann, args.images, args.instances)
        print(f"generated {ann} ({ann.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f}s", flush=True)
    data = json.loads(ann.read_text())
    anns = data["annotations"]
    vertices = [sum(len(p) // 2 for p in a["segmentation"]) for a in anns if not a["iscrowd"]]
    stats = {
        "images": len(data["images"]),
        "instances": len(anns),
        "crowd": sum(a["iscrowd"] for a in anns),
        "mean_vertices": round(float(np.mean(vertices)), 1),
        "file_mb": round(ann.stat().st_size / 1e6),
    }
    del data, anns
    cpus = len(os.sched_getaffinity(0))
    t_all = time_cli(ann, work / "run", None)
    t_one = time_cli(ann, work / "run1", 1)
    t_coco, t_coco_load, n = time_pycocotools(ann)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        **stats,
        "score_shape_process_s": round(t_all, 1),
        "score_shape_process_1_worker_s": round(t_one, 1),
        "pycocotools_annToRLE_area_pass_s": round(t_coco, 1),
        "pycocotools_load_and_index_s": round(t_coco_load, 1),
        "ratio_process_to_pass": round(t_all / t_coco, 2),
        "command": "python tools/bench/bench_shape.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_shape.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# `prune-hooks score shape` at COCO scale",
        "",
        f"`{result['command']}` — {result['machine']}. {stats['images']} images, {stats['instances']} instances "
        f"({stats['crowd']} crowd RLE), {stats['mean_vertices']} vertices per instance on average, "
        f"{stats['file_mb']} MB.",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| `prune-hooks score shape` whole process, {cpus} workers (parse + score + write) | {t_all:.1f} |",
        f"| the same, 1 worker | {t_one:.1f} |",
        f"| pycocotools `annToRLE` + `area`, one pass (file already loaded) | {t_coco:.1f} |",
        f"| pycocotools `COCO(file)` load + index (not in the pass) | {t_coco_load:.1f} |",
        f"| ratio whole process / pycocotools pass | {t_all / t_coco:.2f} |",
        "",
    ]
    (out / "bench_shape.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
