#!/usr/bin/env python
"""In-loop capture against scoring passes: proxy time, score agreement, retrained AP (detectron2).

    python tools/bench/bench_inloop.py [--work runs/bench_inloop] [--epochs 6] [--repeats 2] [--keep 0.3 0.5]
    python tools/bench/bench_inloop.py --proxies in_loop pass
    python tools/bench/bench_inloop.py --timing 3 [--epochs 2]

The quality benchmark's setting (Fashion-MNIST scenes 400 / 150, Faster R-CNN MobileNetV2-FPN, 6
epochs): in one run, the proxy trained four times through tools/train_net.py — without the hook,
with in-loop capture, with scoring passes, and with scoring passes at another training seed (how much
two pass-mode proxies agree by themselves) — all with ``PRUNE.METHODS [vps_iou, vps_conf]`` (no
prototypes: no features-only pass). Time: detectron2's own "Total training time" (the loop and every
hook; the final evaluation excluded). Agreement: Spearman of the vps_iou:max image scores. Quality:
the vps_iou:max subsets of the in-loop and the pass proxy at each keep ratio retrained with R training
seeds (the quality benchmark's retraining, ``--min-schedule`` floor included). Resumable: rows are
appended to WORK/results.jsonl and skipped when there. Writes bench_inloop.md and .json.
``--proxies`` trains only the proxies named (time and agreement, no retraining) and writes
bench_inloop_<names>.md and .json.

``--timing R`` measures the time only, with repeats: R pairs of proxies, one without the hook and one
with in-loop capture, one after the other, training seed r in pair r (the two of a pair train the
same: the capture draws no random numbers and takes no gradient). Writes bench_inloop_timing.md/.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path

import bench_data  # this folder is sys.path[0]
import numpy as np
from common import RESULTS, Detectron2Bench, fmt, last_ap, train_net

ROOT = Path(__file__).resolve().parents[2]
PROXIES = {  # name: (PRUNE.ENABLED, PRUNE.CAPTURE, SEED)
    "no_hook": (False, "pass", 0),
    "in_loop": (True, "in_loop", 0),
    "pass": (True, "pass", 0),
    "pass_seed1": (True, "pass", 1),
}


def loop_seconds(log: Path) -> float:
    """detectron2's "Total training time: H:MM:SS" (IterationTimer: the loop with every hook)."""
    m = re.findall(r"Total training time: (\d+):(\d+):(\d+)", log.read_text())
    if not m:
        raise SystemExit(f"{log}: no 'Total training time' line")
    h, mi, s = map(int, m[-1])
    return 3600 * h + 60 * mi + s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_inloop"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="training seeds per retrained subset")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--min-schedule", type=float, default=0.3, help="as bench_quality: retraining floor, x N images")
    ap.add_argument("--proxies-only", action="store_true", help="time and agreement only, no retraining")
    ap.add_argument("--proxies", nargs="+", choices=list(PROXIES), default=list(PROXIES), help="only these (above)")
    ap.add_argument("--timing", type=int, default=0, metavar="R", help="only R pairs of timed proxies (above)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from prune_hooks.cli import main as cli
    from prune_hooks.core.data.rundir import read_images_csv

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n_train, n_val = 400, 150
    files = bench_data.make_fashion(work / "data", n_train, n_val, size=256)
    bench = Detectron2Bench(work, files, n_train, args.epochs, len(bench_data.CLASSES), 256)
    done_path = work / "results.jsonl"
    rows = [json.loads(x) for x in done_path.read_text().splitlines()] if done_path.exists() else []

    def record(row: dict) -> None:
        rows.append(row)
        with open(done_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)

    def have(**key) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in rows)

    def proxy(name: str, capture: str | None, seed: int) -> dict:
        """Train one proxy (``capture`` None: without the hook) through tools/train_net.py."""
        cfg = bench.cfg.clone()
        cfg.PRUNE.ENABLED, cfg.PRUNE.CAPTURE, cfg.SEED = capture is not None, capture or "pass", seed
        cfg.PRUNE.METHODS = ["vps_iou", "vps_conf"]
        cfg.OUTPUT_DIR = str(work / name)
        yaml = work / f"{name}.yaml"
        yaml.write_text(cfg.dump())
        print(f"proxy {name}: {bench.iters} iterations", flush=True)
        wall = train_net(yaml, work / f"{name}.log")
        loop = loop_seconds(Path(cfg.OUTPUT_DIR) / "log.txt")
        return {"loop_seconds": loop, "wall_seconds": round(wall), **last_ap(work / name)}

    if args.timing:
        for r in range(args.timing):
            for name, capture in (("no_hook", None), ("in_loop", "in_loop")):
                if not have(kind="timing", name=name, pair=r):
                    record({"kind": "timing", "name": name, "pair": r, **proxy(f"t{r}_{name}", capture, r)})
        costs = step_costs(bench.cfg, work / "t0_no_hook" / "model_final.pth", steps=40)
        return write_timing(args, [r for r in rows if r["kind"] == "timing"], costs, bench, n_train, n_val, work)

    names = [n for n in PROXIES if n in args.proxies]
    subset = names != list(PROXIES)
    for name in names:
        enabled, capture, seed = PROXIES[name]
        if not have(kind="proxy", name=name):
            record({"kind": "proxy", "name": name, **proxy(name, capture if enabled else None, seed)})

    proxies = {r["name"]: r for r in rows if r["kind"] == "proxy" and r["name"] in names}
    scores = {n: read_images_csv(work / n / "prune") for n in ("in_loop", "pass", "pass_seed1") if n in names}

    def rho(a: str, b: str) -> float:
        x, y = scores[a]["vps_iou_max"], scores[b]["vps_iou_max"]
        ok = ~(np.isnan(x) | np.isnan(y))
        return float(spearmanr(x[ok], y[ok]).statistic)

    pairs = (("in_loop", "pass"), ("pass", "pass_seed1"), ("in_loop", "pass_seed1"))
    agreement = {f"{a} vs {b}": rho(a, b) for a, b in pairs if a in scores and b in scores}

    if not (args.proxies_only or subset):
        for keep in args.keep:
            for name in ("in_loop", "pass"):
                sel = work / "subsets" / f"{name}_k{keep:g}"
                if not (sel / "subset.json").exists():
                    argv = ["select", str(work / name / "prune"), "--method", "vps_iou", "--aggregation", "max"]
                    if cli(argv + ["--keep", str(keep), "--out", str(sel)]) != 0:
                        raise SystemExit(f"select failed: {sel}")
                n_keep = json.loads((sel / "subset.json").read_text())["n_images"]
                for r in range(args.repeats):
                    if have(kind="retrain", name=name, keep=keep, repeat=r):
                        continue
                    n_sched = math.ceil(args.min_schedule * n_train)
                    secs, iters, m = bench.retrain(f"{name}_k{keep:g}{f'_r{r}' if r else ''}", sel, n_keep, r, n_sched)
                    record({"kind": "retrain", "name": name, "keep": keep, "repeat": r, "kept": n_keep,
                            "iters": iters, "seconds": round(secs), **m})  # fmt: skip

    base = proxies["no_hook"]["loop_seconds"] if "no_hook" in proxies else math.nan
    lines = [
        "# In-loop capture vs scoring passes (detectron2)",
        "",
        f"`python tools/bench/bench_inloop.py {' '.join(sys.argv[1:])}`: Fashion-MNIST scenes {n_train} train / "
        f"{n_val} val, Faster R-CNN MobileNetV2-FPN at 256 px, batch {bench.batch}, {bench.iters} iterations "
        f"({args.epochs} epochs), PRUNE.METHODS [vps_iou, vps_conf], 2 CPU cores. Loop time: detectron2's 'Total "
        "training time' (every hook included, final evaluation not).",
        "",
        "| proxy | loop s | × no hook | AP | AP50 |",
        "|---|---|---|---|---|",
    ]

    def ratio(p: dict) -> str:
        return "(no no_hook run)" if math.isnan(base) else f"{p['loop_seconds'] / base:.2f}"

    for name in names:
        p = proxies[name]
        lines.append(
            f"| {name} | {p['loop_seconds']} | {ratio(p)} | {p.get('AP', math.nan):.1f} | "
            f"{p.get('AP50', math.nan):.1f} |"
        )
    lines += ["", "Spearman of vps_iou:max image scores:", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in agreement.items()]
    retrains = [] if subset else [r for r in rows if r["kind"] == "retrain"]
    if retrains:
        lines += [
            "",
            f"Retrained from each proxy's vps_iou:max subset, {args.repeats} training seeds (mean ± std):",
            "",
            "| subset from | " + " | ".join(f"keep {k:g} AP / AP50" for k in args.keep) + " |",
            "|---" * (len(args.keep) + 1) + "|",
        ]
        for name in ("in_loop", "pass"):
            cells = []
            for k in args.keep:
                got = [r for r in retrains if r["name"] == name and r["keep"] == k]
                cells.append(f"{fmt([r['AP'] for r in got])} / {fmt([r['AP50'] for r in got])}" if got else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out, stem = Path(args.out), "bench_inloop" + ("_" + "_".join(names) if subset else "")
    kept = [r for r in rows if not subset or (r["kind"] == "proxy" and r["name"] in names)]
    (out / f"{stem}.json").write_text(json.dumps({"rows": kept, "agreement": agreement}, indent=1) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def step_costs(cfg, weights: Path, steps: int) -> dict:
    """In process, from the trained weights ``weights``: per training step (forward, backward, SGD
    update), the in-loop inference branch on that step's features twice — taking the RPN head's
    outputs from the step, and running the RPN head again — in alternating order. Seconds (medians)."""
    import statistics

    import mobilenet_fpn  # noqa: F401  (registers the benchmark's backbone)
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.structures import ImageList
    from detectron2.utils.events import EventStorage

    from prune_hooks.core.scoring.inloop import HeadReplay
    from prune_hooks.detectron2 import register_coco_datasets
    from prune_hooks.detectron2.hooks import _heads, _replay_heads

    register_coco_datasets(cfg)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(weights))
    optimizer = build_optimizer(cfg, model)
    replay = HeadReplay(_replay_heads(model))
    kept: dict = {}
    model.backbone.register_forward_hook(lambda m, a, out: kept.update(tensor=a[0], features=out))
    times: dict[str, list[float]] = {"step": [], "taken": [], "run again": []}
    for i, batch in zip(range(steps + 3), build_detection_train_loader(cfg)):
        model.train()
        replay.start()
        start = time.perf_counter()
        with EventStorage(i):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step = time.perf_counter() - start
        images = ImageList(kept["tensor"].detach(), [tuple(x["image"].shape[-2:]) for x in batch])
        features = {k: v.detach() for k, v in kept["features"].items()}
        gt = [x["instances"].gt_boxes.tensor for x in batch]
        model.eval()
        got = {}
        with torch.no_grad():
            for variant in ("taken", "run again") if i % 2 else ("run again", "taken"):
                start = time.perf_counter()
                with replay.replaying() if variant == "taken" else contextlib.nullcontext():
                    _heads(model, images, features, gt)
                got[variant] = time.perf_counter() - start
        if i >= 3:  # the first steps warm the allocator and the loader
            times["step"].append(step)
            for k, v in got.items():
                times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()} | {"steps": steps}


def write_timing(args, rows: list[dict], costs: dict, bench, n_train: int, n_val: int, work: Path) -> int:
    """The timing table per pair: the loops' ratio in-loop / no hook, and the capture's own share of its
    loop (the seconds its period log lines give, against the rest of that loop); means, 95 % t intervals."""
    from scipy.stats import t as student

    def mean_ci(x: np.ndarray) -> str:
        half = student.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else math.nan
        return f"{x.mean():.3f} [{x.mean() - half:.3f}, {x.mean() + half:.3f}]"

    loop = {(r["pair"], r["name"]): r["loop_seconds"] for r in rows}
    pairs = sorted({p for p, _ in loop if (p, "no_hook") in loop and (p, "in_loop") in loop})
    capture = {
        p: sum(
            map(
                float,
                re.findall(r"scored \(this rank\) in ([\d.]+) s", (work / f"t{p}_in_loop" / "log.txt").read_text()),
            )
        )
        for p in pairs
    }
    ratios = np.array([loop[p, "in_loop"] / loop[p, "no_hook"] for p in pairs])
    shares = np.array([1 + capture[p] / (loop[p, "in_loop"] - capture[p]) for p in pairs])
    lines = [
        "# In-loop capture: proxy time with repeats (detectron2)",
        "",
        f"`python tools/bench/bench_inloop.py {' '.join(sys.argv[1:])}`: Fashion-MNIST scenes {n_train} train / "
        f"{n_val} val, Faster R-CNN MobileNetV2-FPN at 256 px, batch {bench.batch}, {bench.iters} iterations, "
        "PRUNE.METHODS [vps_iou, vps_conf], 2 CPU cores. Pairs one after the other (no hook, then in-loop), "
        "training seed = pair. Loop: detectron2's 'Total training time' (every hook included, whole seconds). "
        "Capture: the in-loop seconds of its period log lines; 1 + capture / (loop - capture) is the run's "
        "cost against itself without the capture, which drift of the machine between two runs does not move. "
        "Val AP50: the proxies' own (the two of a pair train the same; 2 epochs is short, and a proxy may not "
        "have learned yet).",
        "",
        "| pair | no hook: loop s | in-loop: loop s | × no hook | in-loop: capture s | 1 + capture / rest of loop | "
        "val AP50, no hook / in-loop |",
        "|---|---|---|---|---|---|---|",
    ]
    ap50 = {(r["pair"], r["name"]): r.get("AP50", math.nan) for r in rows}

    def fmt_ap(v: float) -> str:
        return "none: no detection above the test score threshold" if math.isnan(v) else f"{v:.1f}"

    lines += [
        f"| {p} | {loop[p, 'no_hook']} | {loop[p, 'in_loop']} | {ratios[i]:.3f} | {capture[p]:.1f} | {shares[i]:.3f} | "
        f"{fmt_ap(ap50[p, 'no_hook'])} / {fmt_ap(ap50[p, 'in_loop'])} |"
        for i, p in enumerate(pairs)
    ]
    lines += [
        "",
        f"Mean and 95 % t interval over {len(pairs)} pairs: × no hook {mean_ci(ratios)}; "
        f"1 + capture / rest {mean_ci(shares)}.",
    ]
    step = costs["step"]
    lines += [
        "",
        f"Per training step, in one process, from pair 0's trained weights ({costs['steps']} steps, medians; "
        "the two variants alternate step by step on the same features):",
        "",
        "| what | ms | of the step |",
        "|---|---|---|",
        f"| training step (forward, backward, SGD update) | {1e3 * step:.1f} | 1.000 |",
    ]
    for k, label in (("taken", "RPN head's outputs taken from the step"), ("run again", "RPN head run again")):
        lines.append(f"| in-loop inference branch, {label} | {1e3 * costs[k]:.1f} | {costs[k] / step:.3f} |")
    out = Path(args.out)
    result = {"rows": rows, "ratios": ratios.tolist(), "capture_shares": shares.tolist(), "step_costs": costs}
    (out / "bench_inloop_timing.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench_inloop_timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    start = time.time()
    rc = main()
    print(f"total {time.time() - start:.0f}s")
    sys.exit(rc)
