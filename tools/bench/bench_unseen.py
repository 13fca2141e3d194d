#!/usr/bin/env python
"""UNSEEN on the Fashion-MNIST benchmark (detectron2): stability of the scores, and what the subsets train.

    python tools/bench/bench_unseen.py [--keep 0.3 0.5] [--work runs/bench_unseen]

Same data, model and schedule as bench_quality.py (400 train / 150 val images, MobileNetV2-FPN, 5 epochs).

(a) Stability: vps_iou:max image scores of --runs full-data proxies that differ only by their training
    seed (SEED 0, 1, ...), against --runs UNSEEN runs per K in --k (K fold proxies, merged) that differ only
    by their fold seed: Spearman, Kendall, subset overlap (``prune-hooks compare``) of every pair of runs,
    mean ± sample std over the pairs. With K = 2 each image is scored by one model; with K > 2 by the
    mean of K - 1 models that never trained on it.
(b) Quality: for each keep ratio and each K, the UNSEEN subset (fold scores, then one refill step, through
    tools/unseen.py) and the full proxy's vps_iou:max subset, each retrained from its generated
    retrain.yaml with training seeds 0..--seeds-1 (mean ± sample std); random
    subsets (subset seed = training seed = 0..--seeds-1) retrained the same way; differences to random paired by
    training seed with 95 % t intervals (bench_quality's table). A retraining that ends with no detection at all counts
    as AP 0 and is listed: on these 120-image subsets of hard images the lr 0.02 schedule can blow up.

Resumable: finished trainings are skipped (their outputs are kept under --work). Writes
bench_unseen.json / .md under --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_quality import paired_lines
from common import (  # this folder is sys.path[0]
    RESULTS,
    ROOT,
    proxy_config,
    retrain,
    run_unseen,
    seed_summary,
    train_net,
    train_once,
)

import prune_hooks.detectron2  # noqa: F401  (v0.6 aliases)

# isort: split

from detectron2.config import CfgNode

from prune_hooks.cli import main as cli
from prune_hooks.core.outputs.unseen import compare_runs


def full_proxy(cfg, work: Path, seed: int) -> Path:
    out = work / f"full_s{seed}"
    if not (out / "prune" / "images.csv").exists():
        c = cfg.clone()
        c.SEED, c.OUTPUT_DIR = seed, str(out)
        c.PRUNE.METHODS = ["vps_iou"]
        yaml = work / f"full_s{seed}.yaml"
        yaml.write_text(c.dump())
        secs = train_net(yaml, work / f"full_s{seed}.log")
        print(f"full proxy seed {seed}: {secs:.0f}s", flush=True)
    return out / "prune"


def unseen(user_yaml: Path, work: Path, fold_seed: int, keep: float, steps: int, k: int = 2) -> Path:
    name = f"unseen_s{fold_seed}" if k == 2 else f"unseen_k{k}_s{fold_seed}"  # K = 2: the first version's folders
    return run_unseen(user_yaml, work / name, fold_seed, keep, steps, k)


def pair_stats(runs: list[Path], column: str) -> dict:
    """``compare_runs`` of every pair of ``runs`` on ``column``: mean and sample std of each figure, and n."""
    from itertools import combinations

    import numpy as np

    pairs = [{r["column"]: r for r in compare_runs(a, b)}[column] for a, b in combinations(runs, 2)]
    out: dict = {"pairs": len(pairs)}
    for key in ("spearman", "kendall", *(f"overlap@{k:g}" for k in (0.1, 0.3, 0.5, 0.7))):
        vals = [p[key] for p in pairs]
        out[key] = float(np.mean(vals))
        out[f"{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_unseen"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per retrained subset")
    ap.add_argument("--stability-only", action="store_true", help="part (a) only: no refill steps, no retraining")
    ap.add_argument("--k", type=int, nargs="+", default=[2], help="folds of the UNSEEN runs (each K its own rows)")
    ap.add_argument("--runs", type=int, default=2, help="runs per row of (a): seeds 0..runs-1, every pair compared")
    args = ap.parse_args()
    import bench_data

    start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = bench_data.make_fashion(work / "data", 400, 150, size=256)
    cfg = proxy_config(files, work / "data", work / "proxy", 400, 5, len(bench_data.CLASSES), 256)
    user = cfg.clone()
    user.PRUNE.ENABLED = False
    user.OUTPUT_DIR = str(work / "user")
    user_yaml = work / "user.yaml"
    user_yaml.write_text(user.dump())

    # (a) stability
    col = "vps_iou_max"
    full = [full_proxy(cfg, work, s) for s in range(args.runs)]
    stability = {"full": pair_stats(full, col)}
    for k in args.k:
        merged = [unseen(user_yaml, work, s, args.keep[0], 0, k) / "merged" for s in range(args.runs)]
        stability[f"unseen_k{k}"] = pair_stats(merged, col)
        stability[f"full_vs_unseen_k{k}"] = {r["column"]: r for r in compare_runs(full[0], merged[0])}[col]
    # (b) quality
    rows = []
    for keep in [] if args.stability_only else args.keep:
        for k in args.k:
            out = unseen(user_yaml, work, 0, keep, 1, k)
            final = out / f"final_keep{keep:g}"
            rows.append(
                {
                    "method": f"unseen vps_iou:max, K = {k}",
                    "keep": keep,
                    **retrain(final / "retrain.yaml", f"u{keep}" if k == 2 else f"u{keep}_k{k}", work, args.seeds),
                    "proxy_iterations": proxy_iterations(out, keep),
                }
            )
        sel = work / f"vps_k{keep:g}"
        if not (sel / "retrain.yaml").exists():
            assert cli(["select", str(full[0]), "--method", "vps_iou", "--keep", str(keep), "--out", str(sel)]) == 0
            retrain_config(user, work, sel, keep, work / f"vps_k{keep:g}_train")
        rows.append(
            {
                "method": "vps_iou:max (full proxy)",
                "keep": keep,
                **retrain(sel / "retrain.yaml", f"v{keep}", work, args.seeds),
                "proxy_iterations": cfg.SOLVER.MAX_ITER,
            }
        )
        rows.append({"method": "random", "keep": keep, **random_rows(user, work, full[0], keep, args.seeds),
                     "proxy_iterations": 0})  # fmt: skip
    # one row per training: random's seed s (subset and training) pairs with every method's training seed s
    runs = [
        {"method": r["method"], "keep": r["keep"], "repeat": s, "AP": ap, "AP50": ap50}
        for r in rows
        for s, (ap, ap50) in enumerate(zip(r["AP_runs"], r["AP50_runs"]))
    ]
    result = {
        "stability": stability,
        "quality": rows,
        "quality_runs": runs,
        "minutes": round((time.time() - start) / 60, 1),
        "command": "python tools/bench/bench_unseen.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    (out / "bench_unseen.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# UNSEEN on the Fashion-MNIST benchmark (detectron2)\n\n`{result['command']}`; "
        f"400 train / 150 val images, MobileNetV2-FPN, 5 epochs. Stability: {args.runs} runs per row, every pair "
        "compared (mean ± sample std over the pairs; the last rows: one pair each). "
        f"Quality: {args.seeds} training seeds per subset, mean ± sample std; a training that ends with "
        "no detection (loss blew up) counts as AP 0 and is listed under *collapsed*.\n",
        "## Stability of vps_iou:max image scores\n",
        "| runs | pairs | Spearman | Kendall | overlap@0.1 | @0.3 | @0.5 | @0.7 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, key: str, digits: int) -> str:
        sd = r.get(f"{key}_sd")
        return f"{r[key]:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None and r.get("pairs", 1) > 1 else "")

    names = {"full": "full-data proxies, training seeds differ"}
    for k in args.k:
        names[f"unseen_k{k}"] = f"UNSEEN K = {k}, fold seeds differ"
        names[f"full_vs_unseen_k{k}"] = f"full proxy vs UNSEEN K = {k} (seed 0 each)"
    for key, name in names.items():
        r = stability[key]
        md.append(
            f"| {name} | {r.get('pairs', 1)} | {cell(r, 'spearman', 3)} | {cell(r, 'kendall', 3)} | "
            + " | ".join(cell(r, f"overlap@{k:g}", 2) for k in (0.1, 0.3, 0.5, 0.7))
            + " |"
        )
    md += [
        "",
        "## Retrained on the subset (val AP / AP50, %)\n",
        "| method | keep | AP | AP50 | collapsed | proxy iterations |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sd = f" ± {r['AP_sd']:.1f}" if "AP_sd" in r else ""
        bad = ", ".join(f"seed {s}" for s in r.get("collapsed", [])) or "-"
        md.append(
            f"| {r['method']} | {r['keep']} | {r['AP']:.1f}{sd} | {r['AP50']:.1f} | {bad} | {r['proxy_iterations']} |"
        )
    if not rows:
        md.append("| (not run yet: `--stability-only`; the full command resumes from the proxies above) | | | | | |")
    else:
        md += paired_lines(runs, list(dict.fromkeys(r["method"] for r in rows)), args.keep)
    md.append(f"\n{result['minutes']} min on 2 CPU cores (this invocation; trainings it found done are not counted).\n")
    (out / "bench_unseen.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def random_rows(user, work: Path, run: Path, keep: float, seeds: int) -> dict:
    """Random subsets of ``run``'s images, subset seed = training seed = 0..seeds-1, each retrained once with the
    same scaled schedule as the other rows; AP mean, sample std and the per-seed values."""
    vals = []
    for seed in range(seeds):
        sel = work / f"random_k{keep:g}_s{seed}"
        yaml = sel / "retrain.yaml"
        if not yaml.exists():
            assert cli(["select", str(run), "--method", "random", "--seed", str(seed), "--keep", str(keep),
                        "--out", str(sel)]) == 0  # fmt: skip
            retrain_config(user, work, sel, keep, sel / "train", seed)
        vals.append(train_once(yaml, Path(CfgNode.load_yaml_with_base(str(yaml))["OUTPUT_DIR"]), sel / "train.log"))
    return seed_summary(vals)


def retrain_config(user, work: Path, sel: Path, keep: float, output_dir: Path, seed: int | None = None) -> Path:
    """``sel/retrain.yaml``: the user's config on ``sel``'s pruned file, its schedule scaled to keep·400 images
    (``write_retrain_config``, which names the output folder after ``output_dir``); ``seed``: its SEED."""
    from prune_hooks.detectron2 import write_retrain_config

    base = user.clone()
    base.OUTPUT_DIR = str(output_dir)
    if seed is not None:
        base.SEED = seed
    train = str((work / "data" / "train").resolve())
    return write_retrain_config(base, "bq_train", sel / "instances_train_pruned.json", train, round(keep * 400), 400,
                                sel / "retrain.yaml")  # fmt: skip


def proxy_iterations(out: Path, keep: float) -> int:
    """Iterations of every proxy UNSEEN trained for this budget: the folds and the refill step(s)."""
    total = 0
    for yaml in [*sorted(out.glob("fold_*/proxy.yaml")), *sorted(out.glob(f"step_*_keep{keep:g}/proxy.yaml"))]:
        total += int(next(line.split(":")[1] for line in yaml.read_text().splitlines() if "MAX_ITER:" in line))
    return total


if __name__ == "__main__":
    sys.exit(main())
