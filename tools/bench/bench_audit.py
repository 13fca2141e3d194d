#!/usr/bin/env python
"""Label audit on the Fashion-MNIST benchmark (detectron2): flags against generated noise and cleanlab.

    pip install cleanlab   # the peer it is compared with (not a dependency of prune_hooks)
    python tools/bench/bench_audit.py [--work runs/bench_audit] [--seeds 2]

Same data, model and schedule as bench_quality.py (400 train / 150 val images, MobileNetV2-FPN, 5 epochs).
The generator puts label noise in the train split only, with the truth in factors.json: class flips
(to a look-alike class where there is one), jittered boxes (centre moved by N(0, 0.25·size), sides
scaled 0.75–1.25) and missing boxes (the object is in the image, its annotation is not).

1. One proxy with the hook (PRUNE.DUMP_DETECTIONS on) -> RUN/label_issues.csv at the default thresholds.
2. cleanlab's ObjectLab (``cleanlab.object_detection``, per-kind box issues exactly as its
   ``find_label_issues`` decides them) on the **same model's** predictions on the same images: the
   detections of the hook's last pass (the final model). cleanlab expects out-of-sample predictions;
   these are in-sample for both tools (the model trained on these labels), which is the setting our
   hooks work in — an out-of-sample comparison would need K-fold proxies for both.
3. Precision / recall / F1 of each flag kind against the truth: wrong_class ~ swap vs flips,
   bad_location ~ badloc vs jittered boxes, missing_box ~ overlooked vs missing boxes (a flagged box
   finds a missing one at IoU >= 0.5, each missing box found once).
4. ``prune-hooks clean --relabel --ignore-bad-location --add-missing``, then the same schedule trained on
   the noisy file and on the cleaned file with training seeds 0..--seeds-1: val AP / AP50.

Resumable (finished trainings are skipped); writes bench_audit.json / .md under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, proxy_config, retrain, train_net  # this folder is sys.path[0]

import prune_hooks.detectron2  # noqa: F401  (v0.6 aliases)

# isort: split

from prune_hooks.cli import main as cli

# (our flag, cleanlab's issue type, the generated noise it should find)
KINDS = (
    ("wrong_class", "swap", "flip"),
    ("bad_location", "badloc", "jitter"),
    ("missing_box", "overlooked", "missing"),
)


def iou_xywh(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def noise_truth(train_json: Path, factors: dict) -> dict:
    """flip: ann ids; jitter: {ann id: IoU(true, annotated)}; missing: [(image id, category id, true xywh)]."""
    gt = json.loads(train_json.read_text())
    by_image = defaultdict(list)
    for a in gt["annotations"]:
        by_image[a["image_id"]].append(a)
    flip, jitter, missing = set(), {}, []
    for image_id, f in factors.items():
        if f["split"] != "train":
            continue
        anns = iter(by_image[int(image_id)])
        for o in f["objects"]:
            if o["noise"] == "missing":
                missing.append((int(image_id), o["cls"] + 1, o["box"]))
                continue
            a = next(anns)
            if o["noise"] == "flip":
                flip.add(a["id"])
            elif o["noise"] == "jitter":
                jitter[a["id"]] = iou_xywh(o["box"], a["bbox"])
        assert next(anns, None) is None, f"image {image_id}: annotations and factors disagree"
    return {"flip": flip, "jitter": jitter, "missing": missing}


def prf(found: int, flagged: int, total: int) -> dict:
    p = found / flagged if flagged else float("nan")
    r = found / total if total else float("nan")
    f1 = 2 * p * r / (p + r) if flagged and total and p + r > 0 else 0.0
    return {"flagged": flagged, "found": found, "truth": total, "precision": p, "recall": r, "f1": f1}


def score_flags(objects: dict[str, set], boxes: list[tuple[int, list]], truth: dict) -> dict:
    """objects: {kind: flagged ann ids} for flip/jitter; boxes: flagged (image id, xywh) for missing."""
    out = {
        "flip": prf(len(objects["flip"] & truth["flip"]), len(objects["flip"]), len(truth["flip"])),
        "jitter": prf(len(objects["jitter"] & set(truth["jitter"])), len(objects["jitter"]), len(truth["jitter"])),
    }
    strong = {a for a, v in truth["jitter"].items() if v < 0.5}
    out["jitter"]["recall_iou_below_0.5"] = len(objects["jitter"] & strong) / max(1, len(strong))
    out["jitter"]["truth_iou_below_0.5"] = len(strong)
    left = defaultdict(list)
    for image_id, cat, box in truth["missing"]:
        left[image_id].append(box)
    found = 0
    for image_id, box in boxes:
        cands = left.get(image_id, [])
        best = max(range(len(cands)), key=lambda j: iou_xywh(box, cands[j]), default=None)
        if best is not None and iou_xywh(box, cands[best]) >= 0.5:
            cands.pop(best)
            found += 1
    out["missing"] = prf(found, len(boxes), len(truth["missing"]))
    return out


def ours(run: Path) -> tuple[dict[str, set], list, dict]:
    with open(run / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    objects = {
        "flip": {int(r["ann_id"]) for r in rows if r["kind"] == "wrong_class"},
        "jitter": {int(r["ann_id"]) for r in rows if r["kind"] == "bad_location"},
    }
    boxes = [(int(r["image_id"]), json.loads(r["suggested_bbox"])) for r in rows if r["kind"] == "missing_box"]
    counts = {k: sum(r["kind"] == k for r in rows) for k in ("wrong_class", "bad_location", "missing_box", "outlier")}
    return objects, boxes, counts


def cleanlab_flags(train_json: Path, detections: Path) -> tuple[dict[str, set], list, dict]:
    """cleanlab's per-box issues of each kind, decided as its find_label_issues decides them (v2.9)."""
    from cleanlab.internal.constants import (
        ALPHA,
        BADLOC_THRESHOLD_FACTOR,
        HIGH_PROBABILITY_THRESHOLD,
        LOW_PROBABILITY_THRESHOLD,
        OVERLOOKED_THRESHOLD_FACTOR,
        SWAP_THRESHOLD_FACTOR,
    )
    from cleanlab.object_detection import filter as clf
    from cleanlab.object_detection import rank

    gt = json.loads(train_json.read_text())
    cats = sorted(c["id"] for c in gt["categories"])
    col = {c: j for j, c in enumerate(cats)}
    ids = [im["id"] for im in gt["images"]]
    anns = defaultdict(list)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            anns[a["image_id"]].append(a)
    dets = defaultdict(list)
    for d in json.loads(detections.read_text()):
        dets[d["image_id"]].append(d)
    labels, predictions = [], []
    for i in ids:
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns[i])]).reshape(-1, 4)
        labels.append({"bboxes": boxes, "labels": np.array([col[a["category_id"]] for a in anns[i]], dtype=int)})
        per_class = [np.zeros((0, 5), dtype=np.float32) for _ in cats]
        for d in dets[i]:
            x, y, w, h = d["bbox"]
            per_class[col[d["category_id"]]] = np.vstack(
                [per_class[col[d["category_id"]]], [[x, y, x + w, y + h, d["score"]]]]
            )
        predictions.append(per_class)
    aux = rank._get_valid_inputs_for_compute_scores(ALPHA, labels, predictions)
    ap = clf._get_per_class_ap(labels, predictions)
    lab_th = clf._process_class_list([rank._separate_label(x)[1] for x in labels], ap)
    pred_th = clf._process_class_list([rank._separate_prediction(p)[1] for p in predictions], ap)
    swap = clf._find_label_issues_per_box(
        rank.compute_swap_box_scores(
            alpha=ALPHA, high_probability_threshold=HIGH_PROBABILITY_THRESHOLD, auxiliary_inputs=aux
        ),
        lab_th,
        SWAP_THRESHOLD_FACTOR,
    )
    badloc = clf._find_label_issues_per_box(
        rank.compute_badloc_box_scores(
            alpha=ALPHA, low_probability_threshold=LOW_PROBABILITY_THRESHOLD, auxiliary_inputs=aux
        ),
        lab_th,
        BADLOC_THRESHOLD_FACTOR,
    )
    over = clf._find_label_issues_per_box(
        rank.compute_overlooked_box_scores(
            alpha=ALPHA, high_probability_threshold=HIGH_PROBABILITY_THRESHOLD, auxiliary_inputs=aux
        ),
        pred_th,
        OVERLOOKED_THRESHOLD_FACTOR,
    )
    objects = {"flip": set(), "jitter": set()}
    boxes = []
    for n, i in enumerate(ids):
        for k, a in enumerate(anns[i]):
            if len(anns[i]) and swap[n][k]:
                objects["flip"].add(a["id"])
            if len(anns[i]) and badloc[n][k]:
                objects["jitter"].add(a["id"])
        flat = [row for c in cats for row in predictions[n][col[c]]]
        for k, row in enumerate(flat):
            if len(flat) and k < len(over[n]) and over[n][k]:
                x0, y0, x1, y1 = (float(v) for v in row[:4])
                boxes.append((i, [x0, y0, x1 - x0, y1 - y0]))
    counts = {"swap": len(objects["flip"]), "badloc": len(objects["jitter"]), "overlooked": len(boxes)}
    return objects, boxes, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_audit"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per retrained file")
    args = ap.parse_args()
    import bench_data

    start = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = bench_data.make_fashion(work / "data", 400, 150, size=256)
    cfg = proxy_config(files, work / "data", work / "proxy", 400, 5, len(bench_data.CLASSES), 256)
    cfg.PRUNE.METHODS = ["vps_iou"]
    cfg.PRUNE.DUMP_DETECTIONS = True
    run = work / "proxy" / "prune"
    if not (run / "label_issues.csv").exists():
        (work / "proxy.yaml").write_text(cfg.dump())
        print(f"proxy: {train_net(work / 'proxy.yaml', work / 'proxy.log'):.0f}s", flush=True)
    factors = json.loads((work / "data" / "factors.json").read_text())
    truth = noise_truth(Path(files["train"]), factors)
    ours_obj, ours_boxes, ours_counts = ours(run)
    last = sorted((run / "passes").glob("pass_*.json"))[-1]
    t0 = time.time()
    cl_obj, cl_boxes, cl_counts = cleanlab_flags(Path(files["train"]), last)
    cl_secs = time.time() - t0
    scores = {"prune_hooks": score_flags(ours_obj, ours_boxes, truth), "cleanlab": score_flags(cl_obj, cl_boxes, truth)}

    assert cli(["clean", str(run), "--relabel", "--ignore-bad-location", "--add-missing"]) == 0
    changes = [r["change"] for r in csv.DictReader(open(run / "changes.csv", newline=""))]
    from prune_hooks.detectron2 import write_retrain_config

    user = cfg.clone()
    user.PRUNE.ENABLED = False
    rows = []
    for name, ann in (("noisy", Path(files["train"])), ("cleaned", run / "instances_train_cleaned.json")):
        base = user.clone()
        base.OUTPUT_DIR = str(work / f"train_{name}")
        yaml = work / f"train_{name}.yaml"
        write_retrain_config(base, "bq_train", ann, str((work / "data" / "train").resolve()), 400, 400, yaml)
        rows.append({"file": name, **retrain(yaml, name, work, args.seeds)})

    result = {
        "truth": {"flip": len(truth["flip"]), "jitter": len(truth["jitter"]), "missing": len(truth["missing"])},
        "flags": {"prune_hooks": ours_counts, "cleanlab": cl_counts},
        "scores": scores,
        "cleanlab_seconds": round(cl_secs, 1),
        "changes": {k: changes.count(k) for k in ("relabel", "ignore", "add")},
        "retrain": rows,
        "minutes": round((time.time() - start) / 60, 1),
        "command": "python tools/bench/bench_audit.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    (out / "bench_audit.json").write_text(json.dumps(result, indent=2) + "\n")
    t = result["truth"]
    md = [
        "# Label audit on the Fashion-MNIST benchmark (detectron2)\n",
        f"`{result['command']}`; 400 train / 150 val images, MobileNetV2-FPN, 5 epochs = 5 passes. Generated "
        f"train-split noise: {t['flip']} class flips, {t['jitter']} jittered boxes "
        f"({scores['prune_hooks']['jitter']['truth_iou_below_0.5']} of them with IoU < 0.5 to the true box), "
        f"{t['missing']} missing boxes. Both tools read the same model (the proxy after its last epoch) on "
        "the same images; its predictions are in-sample (it trained on these labels). prune_hooks flags at "
        "its default thresholds from the last 3 passes; cleanlab 2.9 ObjectLab per-box issues as its "
        "`find_label_issues` decides them, from the last pass's detections.\n",
        "| noise | prune_hooks flag | flagged | found | precision | recall | F1 | cleanlab | flagged | found | "
        "precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def p(v: float) -> str:
        return "– (none flagged)" if v != v else f"{v:.2f}"  # NaN: no flag, so no precision

    for ours_kind, cl_kind, noise in KINDS:
        a, b = scores["prune_hooks"][noise], scores["cleanlab"][noise]
        md.append(
            f"| {noise} ({a['truth']}) | {ours_kind} | {a['flagged']} | {a['found']} | {p(a['precision'])} | "
            f"{a['recall']:.2f} | **{a['f1']:.2f}** | {cl_kind} | {b['flagged']} | {b['found']} | "
            f"{p(b['precision'])} | {b['recall']:.2f} | **{b['f1']:.2f}** |"
        )
    md += [
        "",
        f"Recall on the jittered boxes with IoU < 0.5 to the truth: prune_hooks "
        f"{scores['prune_hooks']['jitter']['recall_iou_below_0.5']:.2f}, cleanlab "
        f"{scores['cleanlab']['jitter']['recall_iou_below_0.5']:.2f}. prune_hooks also flagged "
        f"{ours_counts['outlier']} outliers (no generated counterpart). cleanlab's scoring took "
        f"{cl_secs:.0f} s on the dumped detections. A likely reason cleanlab flags so little here (not "
        "isolated by this benchmark): its per-box scores compare "
        "each label with the model's predictions, and in-sample predictions follow the noisy labels the model "
        "trained on (a flipped box gets a confident prediction of its wrong class); its thresholds also scale "
        "with the per-class AP of those predictions. prune_hooks reads how the model's outputs on the box "
        "behave over the last passes (soft label, where it keeps putting the object, recurring detections), "
        "which in-sample training does not erase as fast.",
        "",
        f"## Retrained on the noisy file and on the cleaned one (val AP / AP50, %, {args.seeds} training seeds)\n",
        f"`prune-hooks clean --relabel --ignore-bad-location --add-missing`: {result['changes']['relabel']} "
        f"relabelled, {result['changes']['ignore']} ignored, {result['changes']['add']} added; same schedule "
        "(500 iterations) on both files.\n",
        "| file | AP | AP50 | runs (AP) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['file']} | {r['AP']:.1f} ± {r['AP_sd']:.1f} | {r['AP50']:.1f} ± {r['AP50_sd']:.1f} | "
            + ", ".join(f"{v:.1f}" for v in r["AP_runs"])
            + " |"
        )
    md.append(f"\n{result['minutes']} min on 2 CPU cores (this invocation; trainings it found done are not counted).\n")
    (out / "bench_audit.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
