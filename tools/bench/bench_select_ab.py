#!/usr/bin/env python
"""Two versions of the package side by side: `prune-hooks select RUN --method csod` at COCO scale, whole process,
alternating on the same files and machine (numba caches warmed first), same picks checked.

    git worktree add /tmp/before <rev>
    python tools/bench/bench_select_ab.py --before /tmp/before [--repeats 3] [--out docs/benchmarks]

Writes bench_select_ab.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, make_instance, write_result  # tools/bench/ is sys.path[0]

from prune_hooks.core.scoring.prototypes import save_prototypes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a checkout of the version to compare with (git worktree)")
    ap.add_argument("--images", type=int, default=118_000)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    code = {"before": str(Path(args.before).resolve()), "after": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coco, ids, cats, feat = make_instance(args.images, regime="separated")
        (tmp / "gt.json").write_text(json.dumps(coco))
        (tmp / "run").mkdir()
        save_prototypes(tmp / "run" / "prototypes.npz", {"image_id": ids, "category_id": cats, "feature": feat})
        n_protos = len(ids)
        del feat, coco

        def once(name: str) -> float:
            env = dict(os.environ, PYTHONPATH=code[name], NUMBA_CACHE_DIR=str(tmp / f"numba_{name}"))
            argv = ["select", str(tmp / "run"), "--annotations", str(tmp / "gt.json"), "--method", "csod"]
            argv += ["--keep", str(args.keep), "--out", str(tmp / f"sel_{name}")]
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "prune_hooks.cli", *argv], env=env, check=True, capture_output=True)
            return time.perf_counter() - start

        for name in code:  # compile or load each version's greedy once
            once(name)
        times: dict[str, list[float]] = {name: [] for name in code}
        for _ in range(args.repeats):
            for name in code:
                times[name].append(once(name))
        picks = {n: json.loads((tmp / f"sel_{n}" / "subset.json").read_text())["image_ids"] for n in code}
    med = {n: statistics.median(v) for n, v in times.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "images": args.images,
        "prototypes": n_protos,
        "keep": args.keep,
        "seconds": times,
        "median": med,
        "ratio_after_before": med["after"] / med["before"],
        "same_picks": picks["before"] == picks["after"],
    }
    lines = [
        "# prune-hooks select --method csod: two versions side by side",
        "",
        f"`python tools/bench/bench_select_ab.py --before {args.before}` — {result['machine']}; {args.images} images, "
        f"{n_protos} prototypes, keep {args.keep}; whole CLI process, versions alternating, numba caches warm.",
        "",
        "| version | seconds (each run) | median |",
        "|---|---|---|",
        *(f"| {n} | {' / '.join(f'{t:.1f}' for t in v)} | {med[n]:.1f} |" for n, v in times.items()),
        "",
        f"after / before: {result['ratio_after_before']:.2f}x; same picks: {result['same_picks']}.",
    ]
    write_result(Path(args.out), "bench_select_ab", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
