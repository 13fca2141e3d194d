#!/usr/bin/env python
"""Speed of the coverage options at COCO scale: --dedup, --stratify, --group-by on 118k images.

    python tools/bench/bench_coverage.py [--images 118287] [--dim 1024] [--keep 0.1 0.3 0.5]

Synthetic image features (the mean of unit prototypes has the box head's width, 1024 for the model
zoo's R-CNNs), 15 % of the images near-copies of another (cosine ~0.99), scores uniform. Times the
core functions ``select`` calls (the ranking and the features given), one process, this machine's
threads. Writes bench_coverage.json / .md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS  # tools/bench/ is sys.path[0]

from prune_hooks.core.selection.coverage import dedup, default_beta, spread_groups, stratify

BENCH = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=118287)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.images
    feats = np.abs(rng.normal(size=(n, args.dim))).astype(np.float32)
    copies = rng.choice(n, size=int(0.15 * n), replace=False)
    sources = rng.choice(np.setdiff1d(np.arange(n), copies), size=len(copies))  # originals only
    feats[copies] = feats[sources] + 0.05 * np.abs(rng.normal(size=(len(copies), args.dim))).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    scores = rng.uniform(size=n)
    ranked = ids[np.argsort(-scores, kind="stable")]
    feature_of = dict(zip(ids.tolist(), feats))
    score_of = dict(zip(ids.tolist(), scores.tolist()))
    groups = {int(i): f"seq{int(i) // 20}" for i in ids}  # sequences of 20 frames
    rows = []
    for keep in args.keep:
        k = round(keep * n)
        t = time.perf_counter()
        out = dedup(ranked, feature_of, args.threshold, k)
        t_dedup = time.perf_counter() - t
        kept = set(out[:k].tolist())
        both = sum(int(ids[c]) in kept and int(ids[s]) in kept and c != s for c, s in zip(copies, sources))
        t = time.perf_counter()
        stratify(ranked, score_of, k, default_beta(keep))
        t_strat = time.perf_counter() - t
        t = time.perf_counter()
        spread_groups(ranked, groups, per_group_max=2)
        t_group = time.perf_counter() - t
        rows.append(
            {
                "keep": keep,
                "n_keep": k,
                "dedup_s": t_dedup,
                "stratify_s": t_strat,
                "group_s": t_group,
                "pairs_kept": int(both),
            }
        )
        print(f"keep {keep}: dedup {t_dedup:.1f}s  stratify {t_strat:.2f}s  group-by {t_group:.2f}s", flush=True)
    result = {"images": n, "dim": args.dim, "threshold": args.threshold, "rows": rows,
              "command": "python tools/bench/bench_coverage.py " + " ".join(sys.argv[1:])}  # fmt: skip
    out = Path(args.out)
    (out / "bench_coverage.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Coverage options at COCO scale\n",
        f"`{result['command']}`: {n} images, {args.dim}-d image features (15 % near-copies), scores uniform; "
        f"--dedup {args.threshold}; --group-by on sequences of 20 with --per-group-max 2. One process, 2 CPU cores.\n",
        "| keep | kept | copy pairs both kept | --dedup | --stratify | --group-by |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['keep']} | {r['n_keep']} | {r['pairs_kept']} | {r['dedup_s']:.1f} s | {r['stratify_s']:.2f} s | "
        f"{r['group_s']:.2f} s |"
        for r in rows
    ]
    (out / "bench_coverage.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
