#!/usr/bin/env python
"""Does pruning work? One proxy training with the prune hook, subsets per method and keep ratio,
retraining from each generated retrain config, COCO AP on a clean validation set.

    python tools/bench/bench_quality.py [--framework detectron2|mmdet] [--scale 1] [--epochs 5]
        [--keep ...] [--methods ...]
    python tools/bench/bench_quality.py --data deepforest --epochs 10 --keep 0.5 \
        --methods random vps_iou:max csod --seeds 1

Data: tools/bench/bench_data.py (Fashion-MNIST objects on skimage photos, near-duplicates, label noise in train,
clean val; or deepforest's aerial tiles). Model: Faster R-CNN with an ImageNet-pretrained MobileNetV2-FPN
at 256 px (mobilenet_fpn.py + configs/bench_MNV2_FPN_overrides.yaml, or mobilenet_mmdet.py +
configs/bench_faster-rcnn_mnv2_fpn.py, all in tools/bench/). The proxy is the full-data run
(the hook does not change training), so its final AP is the "full" row. Every training runs the
framework's train script (tools/train_net.py, tools/train_mmdet.py) in a subprocess; results are
appended to WORK/results.jsonl as they come, a rerun with the same arguments skips what is there, and
OUT/bench_quality[_<framework>_<data>].md/.json and ratio_vs_ap[...].png are rewritten after each.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_data import RARE
from common import RESULTS, ROOT, Detectron2Bench, MMDetBench, fmt, run_unseen  # tools/bench/ is sys.path[0]

METHODS = [
    "random",
    "vps_iou:max",
    "vps_iou:mean",
    "vps_iou:sum",
    "vps_conf:max",
    "vps_conf:mean",
    "vps_conf:sum",
    "csod",
    "forgetting",
    "entropy",
    "cb_scs",
    "si_scs",
]


SEEDED = ("random", "random_uniform", "random_ratio")  # subsets drawn per seed
FIRST = "first"  # --methods entry: the first keep·N images of the file list (no selection at all)
UNSEEN = "unseen-vps"  # --methods entry: tools/unseen.py's vps_iou:max subset (K = 2 folds, one refill step);
# unseen-vps:k4 for K = 4 folds


def no_detections(row: dict) -> dict:
    """A finished training whose evaluation had no metrics (NaN from demo's readers: detectron2 logs
    "No predictions from the model!", mmdet no coco/ scalars) made no detection on val: AP 0, flagged."""
    if all(isinstance(row.get(k), float) and not math.isnan(row[k]) for k in ("AP", "AP50", "AP75")):
        return row
    return {**row, "AP": 0.0, "AP50": 0.0, "AP75": 0.0, "no_detections": True}


def keeps(rows: list[dict], asked: list[float]) -> list[float]:
    """The table's columns: every keep ratio with results (earlier invocations included) or asked for."""
    return sorted({r["keep"] for r in rows if r["method"] != "full"} | set(asked))


def write_results(stem: Path, plot: Path, rows: list[dict], header: str, keeps: list[float]) -> None:
    """stem.md (tables), stem.json (every row) and the plot."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = [no_detections(r) for r in rows]
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["method"], r["keep"]), []).append(r)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "full"))
    full = cells.get(("full", 1.0), [{}])[0]
    rand = {
        (b, k): np.mean([r["AP"] for r in cells[(b, k)]])
        for b in ("random", "random@mmdet")
        for k in keeps
        if (b, k) in cells
    }
    secs = sum(r.get("seconds", 0) for r in rows)
    lines = [
        header,
        "",
        f"Full data: AP {fmt([full.get('AP')])}, AP50 {fmt([full.get('AP50')])}, AP75 {fmt([full.get('AP75')])}. "
        f"{len(rows)} trainings (proxy {full.get('seconds', 0)} s), {secs / 60:.0f} min of training processes in all.",
        "",
        "COCO AP (%) on val after retraining on the subset; random: mean ± sample std over seeds; (Δ vs random mean).",
        "",
        "| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
        "|---" * (len(keeps) + 1) + "|",
    ]
    for m in methods:
        row = []
        for k in keeps:
            rs = cells.get((m, k))
            if not rs:
                row.append("")
                continue
            s = fmt([r.get("AP") for r in rs]) + ("†" if any(r.get("no_detections") for r in rs) else "")
            if m != baseline(m) and rand.get((baseline(m), k)) is not None:
                s += f" ({np.mean([r['AP'] for r in rs]) - rand[(baseline(m), k)]:+.1f})"
            row.append(s)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    if any(r.get("no_detections") for r in rows):
        lines += [
            "",
            "† no detection above the test score threshold on val: the retrained detector did not learn (AP 0).",
        ]
    lines += [
        "",
        "AP50 / AP75:",
        "",
        "| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
        "|---" * (len(keeps) + 1) + "|",
    ]
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(
                f"{fmt([r.get('AP50') for r in cells[(m, k)]])} / {fmt([r.get('AP75') for r in cells[(m, k)]])}"
                if (m, k) in cells
                else ""
                for k in keeps
            )
            + " |"
        )
    lines += paired_lines(rows, methods, keeps)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = plt.get_cmap("tab20").colors  # one colour per method: the default cycle repeats after 10
    for i, m in enumerate(methods):
        ks = [k for k in keeps if (m, k) in cells]
        ys = [np.mean([r["AP50"] for r in cells[(m, k)]]) for k in ks]
        sd = [np.std([r["AP50"] for r in cells[(m, k)]], ddof=1) if len(cells[(m, k)]) > 1 else 0.0 for k in ks]
        style = (
            dict(color="k", lw=2)
            if m == "random"
            else dict(color=palette[i % len(palette)], ls="--" if m.startswith("vps_conf") else "-")
        )
        shift = 0.004 * (i - len(methods) / 2)  # side by side: the bars of one ratio do not hide each other
        ax.errorbar([k + shift for k in ks], ys, yerr=sd, marker="o", ms=3, capsize=3, label=m, **style)
    if "AP50" in full:
        ax.axhline(full["AP50"], color="gray", ls=":", label="full data")
    ax.set_xlabel("keep ratio (fraction of train images)")
    ax.set_ylabel("val AP50 (%), mean ± sample std over seeds")
    ax.set_title("AP50 after retraining on the subset (iterations scaled to the subset)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(plot, dpi=110, bbox_inches="tight")
    plt.close(fig)


def baseline(method: str) -> str:
    """Random subsets retrained by the same framework: ``X@mmdet`` is compared with ``random@mmdet``."""
    return "random@mmdet" if method.endswith("@mmdet") else "random"


def paired(rows: list[dict], method: str, keep: float, metric: str) -> tuple[float, float, float, int] | None:
    """Difference to random paired by training seed: for each repeat r, the method's ``metric`` minus the
    mean over random's subset seeds at repeat r (random retrained by the same framework). Returns
    (mean, low, high, n) with a 95 % t interval (n >= 2), or None."""
    from scipy.stats import t as student

    diffs = []
    for r in sorted({x.get("repeat", 0) for x in rows if x["method"] == method and x["keep"] == keep}):
        mine = [x[metric] for x in rows if x["method"] == method and x["keep"] == keep and x.get("repeat", 0) == r]
        rand = [
            x[metric] for x in rows if x["method"] == baseline(method) and x["keep"] == keep and x.get("repeat", 0) == r
        ]
        if mine and rand:
            diffs.append(mine[0] - float(np.mean(rand)))
    if len(diffs) < 2:
        return None
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = float(student.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return mean, mean - half, mean + half, len(diffs)


def paired_lines(rows: list[dict], methods: list[str], keeps: list[float]) -> list[str]:
    """The table of differences to random with 95 % intervals (when rows hold repeats)."""
    if not any(r.get("repeat", 0) for r in rows):
        return []
    out = [
        "",
        "Difference to random, AP50 (AP in brackets), paired by training seed: mean [95 % t interval], n = "
        "training seeds. **better** only where the whole interval is above 0, *worse* where it is below.",
        "",
        "| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
        "|---" * (len(keeps) + 1) + "|",
    ]
    for m in methods:
        if m == baseline(m):  # random itself; random_uniform / random_ratio are compared with it
            continue
        cells = []
        for k in keeps:
            a50, ap = paired(rows, m, k, "AP50"), paired(rows, m, k, "AP")
            if a50 is None:
                cells.append("")
                continue
            verdict = " **better**" if a50[1] > 0 else " *worse*" if a50[2] < 0 else ""
            cells.append(f"{a50[0]:+.1f} [{a50[1]:+.1f}, {a50[2]:+.1f}] ({ap[0]:+.1f}), n={a50[3]}{verdict}")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def factor_lines(work: Path) -> list[str]:
    """What each subset kept, against the generation factors (tools/bench/bench_data.py's factors.json):
    the share of kept images holding a label-noise object, and of near-duplicate copies (a group's
    2nd, 3rd, ... image); and how many of the proxy run's wrong_class flags are generated class flips."""
    path = work / "data" / "factors.json"
    if not path.exists():
        return []
    factors = {int(k): v for k, v in json.loads(path.read_text()).items() if v["split"] == "train"}
    noisy = {i for i, f in factors.items() if any(o["noise"] for o in f["objects"])}
    copies = {i for i, f in factors.items() if f["dup_group"] is not None and f["dup_group"] != i}
    coco = json.loads((work / "data" / "annotations" / "instances_train.json").read_text())
    anns = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a["id"])
    flips = {
        aid
        for i, f in factors.items()
        for aid, kind in zip(anns.get(i, []), [o["noise"] for o in f["objects"] if o["noise"] != "missing"])
        if kind == "flip"
    }
    n = len(factors)
    video = any("sequence" in f for f in factors.values())
    if video:  # sequences covered, and images holding one of the classes seen in few sequences
        rare = {i for i, f in factors.items() if any(o["cls"] in RARE for o in f["objects"])}
        seqs = {i: f["sequence"] for i, f in factors.items()}
        what = (
            f"% of kept images holding a noisy label (full set: {100 * len(noisy) / n:.0f}%) / % of the "
            f"{len(set(seqs.values()))} sequences with a kept frame / % of kept images holding a rare class (full set: "
            f"{100 * len(rare) / n:.0f}%)."
        )
    else:
        what = (
            f"% of kept images holding a noisy label (full set: {100 * len(noisy) / n:.0f}%) / % that are "
            f"near-duplicate copies (full set: {100 * len(copies) / n:.0f}%)."
        )
    lines = ["", f"What the subsets kept (generation factors of the train images): {what}", ""]
    cells: dict[tuple[str, float], list[tuple[float, ...]]] = {}
    for sub in sorted((work / "subsets").glob("*/subset.json")):
        d = json.loads(sub.read_text())
        name = re.sub(r"_s\d+$", "", sub.parent.name.rsplit("_k", 1)[0])
        method = name.replace("vps_iou_", "vps_iou:").replace("vps_conf_", "vps_conf:")
        ids = set(d["image_ids"])
        share = (100 * len(ids & noisy) / len(ids),)
        if video:
            n_seq = len(set(seqs.values()))
            share += (100 * len({seqs[i] for i in ids}) / n_seq, 100 * len(ids & rare) / len(ids))
        else:
            share += (100 * len(ids & copies) / len(ids),)
        cells.setdefault((method, d["keep_ratio"]), []).append(share)
    keeps = sorted({k for _, k in cells})
    lines += ["| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |", "|---" * (len(keeps) + 1) + "|"]
    for m in sorted(
        dict.fromkeys(m for m, _ in cells), key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS)
    ):
        lines.append(
            f"| {m} | "
            + " | ".join(
                " / ".join(f"{v:.0f}" for v in np.mean(cells[(m, k)], axis=0)) if (m, k) in cells else "" for k in keeps
            )
            + " |"
        )
    issues = work / "proxy" / "prune" / "label_issues.csv"
    if issues.exists():
        with open(issues, newline="") as f:
            ids = [int(r["ann_id"]) for r in csv.DictReader(f) if r["kind"] == "wrong_class"]
        hit = len(set(ids) & flips)
        lines += [
            "",
            f"wrong_class flags (label_issues.csv): {len(ids)} objects, {hit} of them generated class flips "
            f"(precision {100 * hit / max(1, len(ids)):.0f}%, recall {100 * hit / max(1, len(flips)):.0f}% of "
            f"{len(flips)} flips).",
        ]
    return lines


def unseen_subset(bench, work: Path, keep: float, sel: Path, k: int = 2) -> None:
    """The UNSEEN subset (``k`` folds) of the benchmark's own setting (the proxy's config without the hook)
    copied to ``sel``."""
    if not isinstance(bench, Detectron2Bench):
        raise SystemExit(f"--methods {UNSEEN}: detectron2 benchmark only")
    user = bench.cfg.clone()
    user.PRUNE.ENABLED, user.OUTPUT_DIR = False, str(work / "unseen_user")
    (work / "unseen_user.yaml").write_text(user.dump())
    out = work / ("unseen" if k == 2 else f"unseen_k{k}")  # K = 2: the first version's folder
    final = run_unseen(work / "unseen_user.yaml", out, 0, keep, 1, k) / f"final_keep{keep:g}"
    sel.mkdir(parents=True, exist_ok=True)
    for f in [*final.glob("*_pruned.json"), final / "subset.json"]:  # subset.json last: it marks the copy done
        shutil.copy(f, sel / f.name)


def shape_run(work: Path, train_file: Path, cli) -> Path:
    """The shape scores of the training set (``prune-hooks score shape``), made once."""
    run = work / "shape"
    if not (run / "images.csv").exists():
        if cli(["score", "shape", "--annotations", str(train_file), "--out", str(run), "--no-report"]) != 0:
            raise SystemExit("score shape failed")
    return run


def make_subset(bench, work: Path, files: dict, spec: str, keep: float, seed: int | None, sel: Path, cli) -> None:
    """Write ``sel``/subset.json and the pruned file of ``spec`` (method[:aggregation][+option...]) at ``keep``."""
    from prune_hooks.core.data.coco import load_coco
    from prune_hooks.core.outputs.rundir import write_subset
    from prune_hooks.core.selection import methods as registry
    from prune_hooks.core.selection.algorithms import subset_record

    base, *options = spec.split("+")
    method, _, agg = base.partition(":")
    if method == UNSEEN:
        unseen_subset(bench, work, keep, sel, int(agg.removeprefix("k")) if agg else 2)
        return
    if method == FIRST:  # the first images of the file list: Ultralytics fraction=, Subset(range(n))
        index = load_coco(files["train"])
        n = max(1, round(keep * index.num_images))
        write_subset(sel, subset_record(FIRST, None, keep, index.num_images, None, index.image_ids[:n]), index)
        return
    source = work / "proxy" / "prune"
    if registry.get(method).needs == (registry.MASKS,):
        source = shape_run(work, files["train"], cli)  # training-free: no proxy needed
    argv = ["select", str(source), "--method", method, "--keep", str(keep), "--out", str(sel)]
    argv += ["--aggregation", agg] if agg else []
    argv += ["--seed", str(seed)] if seed is not None else []
    for opt in options:
        if opt == "stratify":
            argv += ["--stratify"]
        elif opt == "group":
            argv += ["--group-by", "sequence"]
        else:
            argv += ["--dedup", opt.removeprefix("dedup")]
    if cli(argv) != 0:
        raise SystemExit(f"select failed: {sel.name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", choices=("detectron2", "mmdet"), default="detectron2")
    ap.add_argument("--data", choices=("fashion", "video", "deepforest"), default="fashion")
    ap.add_argument("--scale", type=float, default=1.0, help="fashion: 400*scale train / 150*scale val images")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    ap.add_argument(
        "--methods",
        nargs="+",
        default=METHODS,
        help="method[:aggregation][+stratify][+dedup<cosine>][+group], e.g. vps_iou:max+stratify, "
        "vps_iou:max+dedup0.95, vps_iou:max+group (--group-by sequence); 'first': the file list's first images",
    )
    ap.add_argument("--seeds", type=int, default=3, help="random baseline seeds")
    ap.add_argument(
        "--repeats", type=int, default=1, help="training seeds per subset (and per full-data row): R >= 2 for intervals"
    )
    ap.add_argument(
        "--paired-random",
        action="store_true",
        help="random baselines: one subset per training seed (subset seed = training seed) instead of --seeds each",
    )
    ap.add_argument("--full-repeats", type=int, default=None, help="full-data trainings (default --repeats)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the tables from WORK's results; train nothing")
    ap.add_argument(
        "--min-schedule",
        type=float,
        default=0.0,
        help="retrain a subset for at least the iterations of this fraction of the data (0: kept/N, the hook's rule)",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--work", default=None, help="default runs/bench_quality[_<framework>_<data>]")
    args = ap.parse_args()

    import bench_data

    from prune_hooks.cli import main as cli

    start = time.time()
    suffix = "" if (args.framework, args.data) == ("detectron2", "fashion") else f"_{args.framework}_{args.data}"
    work = Path(args.work or ROOT / "runs" / f"bench_quality{suffix}").resolve()  # unseen runs elsewhere
    work.mkdir(parents=True, exist_ok=True)
    setting = {"framework": args.framework, "data": args.data, "scale": args.scale, "epochs": args.epochs}
    if args.min_schedule:
        setting["min_schedule"] = args.min_schedule
    saved = work / "setting.json"
    if saved.exists() and json.loads(saved.read_text()) != setting:
        old = json.loads(saved.read_text())
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in setting.items() if old.get(k) != v)
        raise SystemExit(f"{work} holds results of another setting ({diff}): use another --work or delete it")
    saved.write_text(json.dumps(setting))
    if args.data in ("fashion", "video"):
        n_train, n_val, classes, size = int(400 * args.scale), int(150 * args.scale), len(bench_data.CLASSES), 256
        make = bench_data.make_fashion if args.data == "fashion" else bench_data.make_video
        ann = work / "data" / "annotations"
        files = {s: ann / f"instances_{s}.json" for s in ("train", "val")}
        if not all(f.exists() for f in files.values()):  # made once: a rerun (resume, report) reads the same files
            files = make(work / "data", n_train, n_val, size=size)
    else:
        files, classes, size = bench_data.make_deepforest(work / "data"), 1, 400
        n_train, n_val = (len(json.loads(files[s].read_text())["images"]) for s in ("train", "val"))
    bench = (MMDetBench if args.framework == "mmdet" else Detectron2Bench)(
        work, files, n_train, args.epochs, classes, size
    )
    # the command that trains these results (a --report-only rewrite names the same command)
    command = "python tools/bench/bench_quality.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    retrain_file = "retrain.py" if args.framework == "mmdet" else "retrain.yaml"
    header = (
        f"# Pruning quality: {args.framework}, {args.data} data\n\n`{command}`: {n_train} train / {n_val} val images; "
        f"Faster R-CNN MobileNetV2-FPN (ImageNet init) at {size} px, batch {bench.batch}, proxy "
        f"{bench.iters} iterations ({args.epochs} epochs) with the hook scoring after every epoch; each subset "
        f"retrained from its {retrain_file} (the same {args.epochs} epochs of the subset: iterations scale with "
        "kept/N"
        + (
            f", but never fewer than the iterations of {args.min_schedule:g}·N images: smaller subsets get more epochs"
            if args.min_schedule
            else ""
        )
        + "). 2 CPU cores."
        + (
            f" This invocation trains its methods with {args.repeats} training seeds (SEED 0..{args.repeats - 1}; "
            + (
                "random: one subset per training seed, drawn with that seed"
                if args.paired_random
                else f"random: {args.seeds} subset seeds × {args.repeats}"
            )
            + "); cells of other invocations in the same results "
            "keep their own count: n per cell is in the table of differences."
            if args.repeats > 1
            else ""
        )
    )

    done_path = work / "results.jsonl"
    rows = [json.loads(x) for x in done_path.read_text().splitlines()] if done_path.exists() else []
    seen = {(r["method"], r["keep"], r.get("seed"), r.get("repeat", 0)) for r in rows}
    out = Path(args.out) / f"bench_quality{suffix}"
    if args.report_only:
        write_results(out, Path(args.out) / f"ratio_vs_ap{suffix}.png", rows, header, keeps(rows, args.keep))
        md = out.with_suffix(".md")
        md.write_text(md.read_text() + "\n".join(factor_lines(work)) + "\n")
        print(md.read_text())
        return 0

    def record(row: dict) -> None:
        rows.append(row)
        with open(done_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        write_results(out, Path(args.out) / f"ratio_vs_ap{suffix}.png", rows, header, keeps(rows, args.keep))
        print(row, f"[{time.time() - start:.0f}s]", flush=True)

    if ("full", 1.0, None, 0) not in seen:
        print(f"proxy: {n_train} train / {n_val} val images, {bench.iters} iterations", flush=True)
        secs, m = bench.proxy()
        record(
            {
                "method": "full",
                "keep": 1.0,
                "seed": None,
                "kept": n_train,
                "iters": bench.iters,
                "seconds": round(secs),
                **m,
            }
        )

    for r in range(1, args.repeats if args.full_repeats is None else args.full_repeats):
        if ("full", 1.0, None, r) not in seen:
            secs, m = bench.full(r)
            record({"method": "full", "keep": 1.0, "seed": None, "repeat": r, "kept": n_train, "iters": bench.iters,
                    "seconds": round(secs), **m})  # fmt: skip

    mmdet_bench = None
    # training seed outermost: an interrupted run leaves every cell with the same number of seeds
    for r in range(args.repeats):
        for keep in args.keep:
            for spec in args.methods:
                spec_base, _, other = spec.partition("@")  # X@mmdet: X's subset retrained by MMDetection
                base, *options = spec_base.split("+")
                method, _, agg = base.partition(":")
                if method in SEEDED:
                    seeds = [r] if args.paired_random else range(args.seeds)
                else:
                    seeds = [None]
                for seed in seeds:
                    if (spec, keep, seed, r) in seen:
                        continue
                    name = f"{spec_base.replace(':', '_').replace('+', '_')}{'' if seed is None else f'_s{seed}'}"
                    name += f"_k{keep:g}"
                    sel = work / "subsets" / name
                    if not (sel / "subset.json").exists():
                        make_subset(bench, work, files, spec_base, keep, seed, sel, cli)
                    n_keep = json.loads((sel / "subset.json").read_text())["n_images"]
                    trainer = bench
                    if other:
                        if other != "mmdet" or args.framework != "detectron2":
                            raise SystemExit(f"--methods {spec}: only '@mmdet' on the detectron2 benchmark")
                        mmdet_bench = mmdet_bench or MMDetBench(work, files, n_train, args.epochs, classes, size)
                        trainer = mmdet_bench
                    n_sched = math.ceil(args.min_schedule * n_train)
                    secs, iters, m = trainer.retrain(f"{name}{f'_r{r}' if r else ''}", sel, n_keep, r, n_sched)
                    record({"method": spec, "keep": keep, "seed": seed, "repeat": r, "kept": n_keep, "iters": iters,
                            "seconds": round(secs), **m})  # fmt: skip
    write_results(out, Path(args.out) / f"ratio_vs_ap{suffix}.png", rows, header, keeps(rows, args.keep))
    md = out.with_suffix(".md")
    md.write_text(md.read_text() + "\n".join(factor_lines(work)) + "\n")
    print(md.read_text())
    print(f"total {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
