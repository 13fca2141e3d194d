#!/usr/bin/env python
"""LVIS- and Objects365-size annotation files through the hook's state and ``prune-hooks select``, whole processes.

    python tools/bench/bench_datasets.py [--datasets lvis objects365] [--dim 64] [--passes 2] [--picks 2000]

Each synthetic file has the real set's image, box and category counts (LVIS v1 train: 100,170 images,
1,270,141 boxes, 1,203 categories, federated image fields, no ``iscrowd``; Objects365 v2 train: 1,742,289 images,
25.4 M boxes, 365 categories), boxes per image drawn around the real mean, categories long-tailed.

1. **State** (one process): the annotation file loaded, a ``VPSCapture`` (the hooks' accumulators, CPU) fed
   ``--passes`` passes of synthetic per-object matches and class distributions, applied every ``FLUSH_ROWS``
   rows and closed by its own ``end_pass`` as in a hook's pass, then the run directory written as a
   hook writes it (``write_hook_run``: objects.csv, images.csv, soft labels, audit, state.pt, subset, pruned
   file). Prototypes are written beside it (``--dim`` wide, one per image and class, the hooks' own writer).
2. **Select** (one process each): ``prune-hooks select`` of every score method family, csod, kcenter,
   herding and ``--dedup``, with the peak resident memory (VmHWM) and wall time; the feature methods' cost
   estimate (``core.selection.estimate``) logged before each.

Writes bench_datasets.md and .json (resumable per dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, run_cli  # this folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[2]
DATASETS = {  # images, boxes, categories, federated
    "lvis": (100_170, 1_270_141, 1_203, True),
    "objects365": (1_742_289, 25_400_000, 365, False),
}
SELECTS = [  # (label, argv after the run directory)
    ("random", ["--method", "random", "--keep", "0.3"]),
    ("vps_iou", ["--method", "vps_iou", "--keep", "0.3"]),
    ("entropy", ["--method", "entropy", "--keep", "0.3"]),
    ("csod", ["--method", "csod", "--keep", "0.3"]),
    ("kcenter, {picks:,} kept", ["--method", "kcenter", "--count", "{picks}"]),
    ("herding, {picks:,} kept", ["--method", "herding", "--count", "{picks}"]),
    ("vps_iou --dedup 0.95", ["--method", "vps_iou", "--keep", "0.3", "--dedup", "0.95"]),
]


def write_annotations(path: Path, name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic file (streamed); returns (image_id, category_id) of each (image, class) pair."""
    images, boxes, n_cat, federated = DATASETS[name]
    rng = np.random.default_rng(seed)
    per_image = rng.poisson(boxes / images, images)
    freq = 1.0 / np.arange(1, n_cat + 1) ** 1.0
    freq /= freq.sum()
    pair_img, pair_cat = [], []
    with open(path, "w") as f:
        f.write('{"images": [')
        for s in range(0, images, 100_000):
            ids = range(s + 1, min(s + 100_000, images) + 1)
            if federated:  # LVIS: which categories an image's labels say nothing of / verified absent
                rows = [f'{{"id":{i},"file_name":"{i:012d}.jpg","width":640,"height":480,'
                        f'"not_exhaustive_category_ids":[{1 + i % n_cat}],"neg_category_ids":[{1 + (i * 7) % n_cat}]}}'
                        for i in ids]  # fmt: skip
            else:
                rows = [f'{{"id":{i},"file_name":"{i:012d}.jpg","width":640,"height":480}}' for i in ids]
            f.write(("," if s else "") + ",".join(rows))
        f.write('], "annotations": [')
        k = 0
        for s in range(0, images, 50_000):
            n = per_image[s : s + 50_000]
            cats = rng.choice(n_cat, size=int(n.sum()), p=freq) + 1
            img = np.repeat(np.arange(s + 1, s + 1 + len(n)), n)
            xy = rng.uniform(0, 560, (len(cats), 2)).round(1)
            wh = rng.uniform(8, 80, (len(cats), 2)).round(1)
            crowd = "" if federated else ',"iscrowd":0'
            cols = zip(img.tolist(), cats.tolist(), *xy.T.tolist(), *wh.T.tolist())
            parts = [f'{{"id":{k + j + 1},"image_id":{i},"category_id":{c},"bbox":[{x},{y},{w},{h}],'
                     f'"area":{w * h:.1f}{crowd}}}' for j, (i, c, x, y, w, h) in enumerate(cols)]  # fmt: skip
            k += len(parts)
            f.write(("," if s else "") + ",".join(parts))
            pairs = np.unique(img.astype(np.int64) * (n_cat + 1) + cats)
            pair_img.append(pairs // (n_cat + 1))
            pair_cat.append(pairs % (n_cat + 1))
        f.write('], "categories": [' + ",".join(f'{{"id":{c},"name":"c{c}"}}' for c in range(1, n_cat + 1)) + "]}")
    return np.concatenate(pair_img), np.concatenate(pair_cat)


def state_stage(ann: Path, run: Path, passes: int) -> None:
    """Step 1 in this process: the hook's state fed ``passes`` passes, the run directory written."""
    import torch

    from prune_hooks.core.data.coco import load_coco
    from prune_hooks.core.outputs.rundir import write_hook_run
    from prune_hooks.core.scoring.capture import VPSCapture

    t0 = time.perf_counter()
    index = load_coco(ann)
    t_load = time.perf_counter() - t0
    cap = VPSCapture(index)
    k = len(index.category_ids)
    cap.set_model_classes(index.category_ids.tolist())
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    n = index.num_objects
    labels = torch.as_tensor(np.searchsorted(index.category_ids, index.obj_category_ids))
    gt = torch.as_tensor(index.obj_boxes, dtype=torch.float32)
    chunk = max(1, (1 << 26) // (k + 1))  # 256 MB of float32 distributions at a time
    for _ in range(passes):
        for a in range(0, n, chunk):  # what add_image appends, image by image in a hook
            b = min(a + chunk, n)
            rows = torch.arange(a, b)
            iou, conf = torch.rand(b - a, generator=gen), torch.rand(b - a, generator=gen)
            logits = torch.randn(b - a, k + 1, generator=gen)
            logits[torch.arange(b - a), labels[a:b]] += 4.0
            soft = cap.soft.reduce(torch.softmax(logits, 1))
            cap._queue((rows, iou, conf, iou > 0.5, soft, conf, gt[a:b] + 2.0))
        cap.end_pass()
    t_pass = (time.perf_counter() - t0) / passes
    del gt, labels  # the bench's inputs, not the hook's
    t0 = time.perf_counter()
    write_hook_run(run, cap, "bench", {"annotations": str(ann)}, "vps_iou", 0.3, "max")
    t_write = time.perf_counter() - t0
    hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    state = sum(t.numel() * t.element_size() for t in _tensors(cap.state_dict()))
    print(json.dumps({"load_s": round(t_load, 1), "pass_s": round(t_pass, 1), "write_s": round(t_write, 1),
                      "state_bytes_per_object": round(state / n, 1), "objects": n,
                      "peak_gb": round(int(hwm) / 2**20, 2)}))  # fmt: skip


def _tensors(state):
    import torch

    if isinstance(state, dict):
        for v in state.values():
            yield from _tensors(v)
    elif isinstance(state, torch.Tensor):
        yield state


def write_prototypes(run: Path, image_id: np.ndarray, category_id: np.ndarray, dim: int, seed: int = 0) -> None:
    from prune_hooks.core.scoring.prototypes import save_prototypes

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(int(category_id.max()) + 1, dim)).astype(np.float32)
    feature = np.empty((len(image_id), dim), np.float16)
    for s in range(0, len(image_id), 500_000):
        part = slice(s, s + 500_000)
        noise = rng.standard_normal((len(image_id[part]), dim), dtype=np.float32)
        feature[part] = np.maximum(0.6 * centers[category_id[part]] + noise, 1e-3)
    save_prototypes(run / "prototypes.npz", {"image_id": image_id, "category_id": category_id, "feature": feature})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--dim", type=int, default=64, help="prototype width (memory of 1,024 is in the estimates)")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--picks", type=int, default=2000, help="images kcenter and herding keep (one scan each)")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--state-stage", nargs=3, metavar=("ANN", "RUN", "PASSES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.state_stage:
        state_stage(Path(args.state_stage[0]), Path(args.state_stage[1]), int(args.state_stage[2]))
        return 0
    out = Path(args.out)
    saved = out / "bench_datasets.json"
    result = json.loads(saved.read_text()) if saved.exists() else {"rows": {}}
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    for name in args.datasets:
        if name in result["rows"]:
            continue
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            pair_img, pair_cat = write_annotations(tmp / "gt.json", name)
            print(f"{name}: annotations written in {time.perf_counter() - t0:.0f}s", flush=True)
            cmd = [sys.executable, __file__, "--state-stage", str(tmp / "gt.json"), str(tmp / "run"), str(args.passes)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"state stage failed: {proc.stderr[-3000:]}")
            state = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name}: state {state}", flush=True)
            write_prototypes(tmp / "run", pair_img, pair_cat, args.dim)
            rows = []
            for label, argv in SELECTS:
                label, argv = label.format(picks=args.picks), [a.format(picks=args.picks) for a in argv]
                full = ["select", str(tmp / "run"), *argv, "--out", str(tmp / "sel")]
                secs, gb, err = run_cli(full)
                estimate = [line.split("prune_hooks: ")[-1] for line in err.splitlines() if "scans of" in line]
                rows.append({"select": label, "seconds": round(secs, 1), "peak_gb": round(gb, 2), "estimate": estimate})
                print(name, rows[-1], flush=True)
        images, boxes, classes, _ = DATASETS[name]
        result["rows"][name] = {"images": images, "boxes": boxes, "classes": classes, "pairs": len(pair_img),
                                "dim": args.dim, "passes": args.passes, "state": state, "select": rows}  # fmt: skip
        write(out, result)
    return 0


def write(out: Path, result: dict) -> None:
    (out / "bench_datasets.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# LVIS- and Objects365-size files through the hook's state and `prune-hooks select`",
        "",
        f"`python tools/bench/bench_datasets.py` — {result['machine']}; synthetic files with the real image, box "
        "and category counts. State: one process loads the file, feeds the hooks' accumulators (CPU) the passes "
        "and writes the run directory as a hook does; peak = VmHWM of that process. Select: one process per row, "
        "prototypes one per (image, class) at the given width; kcenter and herding keep the number of images "
        "their row says (each kept image is a scan of every image feature: the estimate line gives keep 0.3's "
        "cost).",
        "",
    ]
    for name, r in result["rows"].items():
        s = r["state"]
        lines += [
            f"## {name}: {r['images']:,} images, {s['objects']:,} boxes, {r['classes']:,} categories, "
            f"{r['pairs']:,} prototypes of {r['dim']} values",
            "",
            f"State: file loaded in {s['load_s']} s; a pass's update {s['pass_s']} s; run directory written in "
            f"{s['write_s']} s; state {s['state_bytes_per_object']} bytes an object (state.pt's tensors); peak "
            f"{s['peak_gb']} GB.",
            "",
            "| select | seconds | peak GB | estimate logged before it started |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {x['select']} | {x['seconds']} | {x['peak_gb']} | {'; '.join(x['estimate'])} |" for x in r["select"]
        ]
        lines.append("")
    (out / "bench_datasets.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
