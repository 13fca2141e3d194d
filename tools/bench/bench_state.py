#!/usr/bin/env python
"""The hook's per-object state: bytes per object at COCO, LVIS, Objects365 and OpenImages sizes, and how
closely top-k soft labels (core.scoring.softlabels) agree with the exact dense running mean.

    python tools/bench/bench_state.py [--objects 60000] [--passes 12] [--ks 1 2 3 4 8 16] [--out DIR]

Bytes: measured on the device tensors of a real ``VPSCapture`` (VPS accumulator, label audit ring buffers,
soft labels; ground-truth boxes are read per image from the host index) for each class count, divided by its
objects; the layout of earlier versions (int64 / int32 counters, float32 audit slots, ground truth on the
device: 120 bytes, and float32 [N, K + 1] soft-label sums with an int32 count: 4·(K + 1) + 4) is given beside
it. Each of W ranks keeps 1/W of the objects (core.scoring.shards); the main process also holds the whole
state in host memory after each pass (for checkpoints).

Agreement: a synthetic stream of class distributions on COCO's shape (81 columns, long-tailed true classes,
5% of objects annotated with another class, objects learned at different speeds, 3% never learned) fed to
the exact state (k = 81) and to top-k states; per k, the wrong_class and outlier flags (label audit rules)
compared with the exact ones, and the overlap of the ``entropy`` method's subsets at keep 0.3 / 0.5 / 0.7.
Writes bench_state.md and .json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, write_result  # this folder is sys.path[0]

from prune_hooks.core.data.coco import CocoIndex
from prune_hooks.core.scoring.capture import VPSCapture
from prune_hooks.core.scoring.scores import aggregate, rank_images
from prune_hooks.core.scoring.softlabels import DEFAULT_TOP_K, SoftLabels, entropy, outliers, suspects

# name: (classes, train images, train boxes) of the public descriptions of each set
DATASETS = {
    "COCO 2017": (80, 118_287, 860_001),
    "LVIS v1": (1_203, 100_170, 1_270_141),
    "Objects365 v2": (365, 1_742_289, 25_400_000),
    "OpenImages v7 (boxes)": (600, 1_743_042, 14_610_229),
}


def tiny_index(n_classes: int, n_images: int = 250, per_image: int = 4) -> CocoIndex:
    cats = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(n_classes)]
    images = [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": 640, "height": 480} for i in range(n_images)]
    anns = [
        {"id": len(images) * k + i + 1, "image_id": i + 1, "category_id": (i + k) % n_classes + 1,
         "bbox": [10.0 * k, 10.0, 50.0, 40.0], "area": 2000.0, "iscrowd": 0}
        for i in range(n_images) for k in range(per_image)
    ]  # fmt: skip
    return CocoIndex.from_dataset({"images": images, "annotations": anns, "categories": cats})


def state_bytes(n_classes: int) -> dict[str, float]:
    """Bytes per object of each part of a capture's per-object state (measured on its tensors)."""
    index = tiny_index(n_classes)
    cap = VPSCapture(index)
    cap.set_model_classes(list(range(1, n_classes + 1)))
    n = index.num_objects

    def size(*tensors) -> float:
        return sum(t.element_size() * t.numel() for t in tensors) / n

    acc = cap.acc
    parts = {
        "vps": size(
            acc.stats.count, acc.stats.mean, acc.stats.m2, acc.learned_passes, acc.forget_events, acc.learned_last
        ),  # fmt: skip
        "audit": size(cap.audit.conf, cap.audit.box_rel, cap.audit.valid),
        "soft labels": size(
            cap.soft.cols, cap.soft.mass, cap.soft.rest, cap.soft.rest_r, cap.soft.rest_rh, cap.soft.count
        ),  # fmt: skip
    }
    parts["total"] = sum(parts.values())
    parts["soft labels, dense layout"] = 4.0 * (n_classes + 1) + 4.0
    parts["total, dense layout"] = EARLIER_FIXED + parts["soft labels, dense layout"]
    return parts


EARLIER_FIXED = 33 + 63 + 24  # VPS, audit, ground truth on the device, before soft labels (earlier layout)

# (std of each object's own logit noise, std of the noise drawn anew each pass, background logit offset)
REGIMES = {"independent": (0.0, 1.0, 1.0), "flat": (1.0, 0.3, 1.0), "peaked": (2.5, 0.3, 3.0)}


def stream(rng: np.random.Generator, n_obj: int, n_cols: int, passes: int, fixed=0.0, fresh=1.0, bg=1.0):
    """(true class, annotated class, per-pass probs generator) of a COCO-shaped synthetic proxy: per pass, logits =
    the object's own noise N(0, ``fixed``) (the same every pass: a box looks alike to the model from epoch to
    epoch) + N(0, ``fresh``) drawn anew + speed·pass on the true class + half that on a confuser + ``bg`` on
    background. Noise drawn anew each pass (``independent``) moves the large columns from pass to pass: the
    hard case for top-k."""
    fg = n_cols - 1
    freq = 1.0 / np.arange(1, fg + 1) ** 1.1
    true = rng.choice(fg, size=n_obj, p=freq / freq.sum())
    label = true.copy()
    flip = rng.random(n_obj) < 0.05
    label[flip] = (true[flip] + rng.integers(1, fg, flip.sum())) % fg
    confuser = (true + rng.integers(1, fg, n_obj)) % fg
    speed = rng.uniform(0.2, 1.5, n_obj)
    speed[rng.random(n_obj) < 0.03] = 0.0  # never learned

    own = rng.normal(0, fixed, (n_obj, n_cols)).astype(np.float32) if fixed else 0.0

    def passes_iter():
        for t in range(passes):
            logits = own + rng.normal(0, fresh, (n_obj, n_cols)).astype(np.float32)
            strength = speed * (t + 1)
            logits[np.arange(n_obj), true] += strength
            logits[np.arange(n_obj), confuser] += 0.5 * strength
            logits[:, fg] += bg
            probs = torch.softmax(torch.from_numpy(logits), dim=1)
            yield probs

    return true, label, passes_iter()


def agreement(n_obj: int, passes: int, ks: list[int], regime: str, seed: int = 0) -> tuple[list[dict], float]:
    n_cols = 81
    rng = np.random.default_rng(seed)
    _, label, probs_iter = stream(rng, n_obj, n_cols, passes, *REGIMES[regime])
    states = {k: SoftLabels(n_obj, n_cols, top_k=k) for k in [n_cols, *ks]}
    idx = torch.arange(n_obj)
    t0 = time.time()
    for probs in probs_iter:
        for s in states.values():
            s.update(idx, probs)
    secs = time.time() - t0
    cats = np.arange(1, n_cols)
    labels = label + 1
    learned = np.zeros(n_obj, dtype=np.int64)  # every object a candidate outlier: the rule's entropy part
    per_image = 7
    offsets = np.arange(0, n_obj + 1, per_image)
    if offsets[-1] != n_obj:
        offsets = np.append(offsets, n_obj)
    image_ids = np.arange(1, len(offsets))

    def summary(s: SoftLabels) -> dict:
        top = s.top()
        h = entropy(top)
        ranked = rank_images(image_ids, aggregate(h, offsets, "max"))
        return {
            "wrong": set(suspects(top, labels, cats, 0.5)[0].tolist()),
            "outlier": set(outliers(top, learned, 0.9).tolist()),
            "ranked": ranked,
            "h": h,
        }

    exact = summary(states[n_cols])
    rows = []
    for k in ks:
        got = summary(states[k])
        row = {"regime": regime, "k": k, "bytes_soft": 6 * k + 14, "mean_entropy_exact": float(np.nanmean(exact["h"]))}
        for kind in ("wrong", "outlier"):
            a, b = exact[kind], got[kind]
            row[f"{kind}_exact"], row[f"{kind}_same"] = len(a), len(a & b)
            row[f"{kind}_extra"] = len(b - a)
        for keep in (0.3, 0.5, 0.7):
            m = int(round(keep * len(image_ids)))
            row[f"overlap_{keep:g}"] = len(set(exact["ranked"][:m]) & set(got["ranked"][:m])) / m
        row["entropy_max_abs_err"] = float(np.nanmax(np.abs(got["h"] - exact["h"])))
        rows.append(row)
    return rows, secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=60_000)
    ap.add_argument("--passes", type=int, default=12)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 8, 16])
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    lines = [
        "# The hook's per-object state",
        "",
        f"`python tools/bench/bench_state.py --objects {args.objects} --passes {args.passes}`; CPU. "
        f"Soft labels keep the top k = {DEFAULT_TOP_K} columns (the default) per object.",
        "",
        "Bytes per object on the model's device (measured on a VPSCapture's tensors; 'before' = the layout of "
        f"earlier versions: {EARLIER_FIXED} bytes of VPS, audit and ground truth, dense float32 soft labels, every "
        "rank holding every object), and the device state per rank: each of W ranks keeps 1/W of the objects; "
        "the main process also holds the whole state (the 1-rank figure) in host memory for checkpoints.",
        "",
        "| data | classes | boxes | VPS | audit | soft labels (before → now) | total (before → now) "
        "| per rank: before (any W) → now 1 rank / 8 ranks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result: dict = {"bytes": {}, "agreement": None}
    for name, (classes, images, boxes) in DATASETS.items():
        b = state_bytes(classes)
        result["bytes"][name] = {"classes": classes, "images": images, "boxes": boxes, **b}
        lines.append(
            f"| {name} | {classes:,} | {boxes:,} | {b['vps']:.0f} | {b['audit']:.0f} | "
            f"{b['soft labels, dense layout']:,.0f} → {b['soft labels']:.0f} | {b['total, dense layout']:,.0f} → "
            f"{b['total']:.0f} | {b['total, dense layout'] * boxes / 1e9:.2f} → {b['total'] * boxes / 1e9:.2f} / "
            f"{b['total'] * boxes / 8e9:.2f} GB |"
        )
    rows, secs = [], 0.0
    for regime in REGIMES:
        r, t = agreement(args.objects, args.passes, args.ks, regime)
        rows += r
        secs += t
    result["agreement"] = {"objects": args.objects, "passes": args.passes, "seconds": round(secs, 1), "rows": rows}
    lines += [
        "",
        f"Top-k against the exact state: {args.objects:,} synthetic objects, 81 columns (COCO + background), "
        f"{args.passes} passes, 7 objects an image (`stream()`: long-tailed true classes, 5% annotated with another "
        "class, learning speeds 0.2-1.5, 3% never learned). Regimes of the columns not learned (logit noise std of "
        "the object's own / drawn anew each pass): *independent* (0 / 1: the large columns move every pass, the hard "
        "case), *flat* (1 / 0.3) and *peaked* (2.5 / 0.3, background +3: mass on a few columns, as trained heads "
        "give). Flags by the label audit's default rules (wrong_class: another foreground class at "
        "mean probability ≥ 0.5; outlier: entropy ≥ 0.9·log K, every object taken as never learned so that the "
        "entropy rule alone decides); subsets of the `entropy` method (image max).",
        "",
        "| regime (mean entropy) | k | soft-label bytes | wrong_class: same / exact (+ extra) | "
        "outlier: same / exact (+ extra) | entropy subset overlap keep 0.3 / 0.5 / 0.7 | max entropy error (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['regime']} ({r['mean_entropy_exact']:.2f} nats) | {r['k']} | {r['bytes_soft']} | "
            f"{r['wrong_same']} / {r['wrong_exact']} (+{r['wrong_extra']}) | "
            f"{r['outlier_same']} / {r['outlier_exact']} (+{r['outlier_extra']}) | "
            f"{r['overlap_0.3']:.4f} / {r['overlap_0.5']:.4f} / {r['overlap_0.7']:.4f} | "
            f"{r['entropy_max_abs_err']:.4f} |"
        )
    write_result(Path(args.out), "bench_state", result, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
