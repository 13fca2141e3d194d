"""The report of a run directory: PNG plots and report.md (``prune-hooks report RUN``; the hooks
write it after every proxy run into ``RUN/report/``)."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.coco import load_coco
from ..data.rundir import read_images_csv, read_meta
from ..errors import PruneHooksError
from ..io import atomic_write_bytes, atomic_write_text, read_json
from ..scoring.audit import ISSUE_KINDS
from ..selection.methods import REGISTRY

__all__ = ["write_report"]

logger = logging.getLogger("prune_hooks")


SHOWN_CLASSES = 15  # at more than twice this many classes the plot shows these at each end, and the rest summed


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r[key] != "" else np.nan for r in rows], dtype=np.float64)


def _save(fig, path: Path) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path.name


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-9) -> float:
    """KL(p || q) of two count vectors (normalized here), in nats."""
    p = np.asarray(p, np.float64) + eps
    q = np.asarray(q, np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def write_report(
    run: str | os.PathLike,
    subset: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    image_root: str | None = None,
) -> Path:
    """Write ``out`` (default ``RUN/report``): plots + report.md; returns the report.md path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    meta = read_meta(run)
    out = Path(out) if out else run / "report"
    index = load_coco(meta["annotations"])
    subset_path = Path(subset) if subset else run / "subset.json"
    sub = read_json(subset_path, "subset") if subset_path.is_file() else None
    kept = np.isin(index.obj_image_ids, sub["image_ids"]) if sub else None
    objects = _read_csv(run / "objects.csv")
    images = read_images_csv(run)
    figures: list[tuple[str, str]] = []

    # 1. the "moon": mean vs std per object (runs with scoring passes)
    if objects and "iou_mean" in objects[0]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, kind in zip(axes, ("iou", "conf")):
            ax.scatter(_floats(objects, f"{kind}_mean"), _floats(objects, f"{kind}_std"), s=4, alpha=0.4)
            ax.set_xlabel(f"mean {kind} over passes")
            ax.set_ylabel(f"std {kind} (VPS)")
            ax.set_title(f"VPS_{kind} per object ({len(objects)} objects)")
        figures.append((_save(fig, out / "vps_scatter.png"), "VPS mean vs std per object"))
        plt.close(fig)

    # 2. image-score histograms, one panel per available score
    cols = [c for m in REGISTRY.values() if m.is_score for c in m.columns[:1]]
    cols = [c for c in cols if c in images and np.isfinite(images[c]).any()]
    if cols:
        fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.5), squeeze=False)
        for ax, col in zip(axes[0], cols):
            finite = np.isfinite(images[col])
            v = images[col][finite]
            ax.hist(v, bins=30)
            # counted, not drawn: +inf (forgetting: a never-learned object), no score (an image without objects)
            n_inf, n_none = int(np.isposinf(images[col]).sum()), int(np.isnan(images[col]).sum())
            rest = (f", {n_inf} at +inf" if n_inf else "") + (f", {n_none} without objects" if n_none else "")
            ax.set_title(f"{col}\n{len(v)} images{rest}", fontsize=9)
            ax.set_xlabel("image score")
        axes[0][0].set_ylabel("images")
        figures.append(
            (_save(fig, out / "image_scores.png"), "image-score histograms (max aggregation; finite scores)")
        )
        plt.close(fig)

    lines = [f"# prune_hooks report: {run}", ""]
    lines.append(
        f"{meta['num_objects']} objects in {meta['num_images']} images, {meta['passes']} scoring passes, framework "
        f"{meta['framework']}."
    )
    never = int(meta.get("never_matched") or 0)
    if never > meta["num_objects"] / 2:
        lines += [
            "",
            f"**Warning: {never} of {meta['num_objects']} objects were never matched by any prediction in any "
            "scoring pass.** Their VPS and forgetting scores are 0 and carry no information: check that the proxy "
            "detects anything and that the passes lower its score threshold.",
        ]
    if sub is not None:
        n_obj_kept = int(kept.sum())
        cats = index.category_ids
        full_c = np.array([(index.obj_category_ids == c).sum() for c in cats])
        kept_c = np.array([(index.obj_category_ids[kept] == c).sum() for c in cats])
        kl = kl_divergence(kept_c, full_c)
        lines.append(
            f"Subset ({subset_path.name}): method {sub['method']}, aggregation {sub.get('aggregation')}, "
            f"{sub['n_images']} of {sub['n_total']} images ({sub['n_images'] / sub['n_total']:.0%}), "
            f"{n_obj_kept} of {index.num_objects} objects ({n_obj_kept / max(index.num_objects, 1):.0%}); "
            f"class distribution shift KL(kept || full) = {kl:.4f} nats."
        )
        names = {c["id"]: c["name"] for c in index.categories}
        # 3. class distribution: every class, or at many classes the most shifted ones and the rest as one bar
        full_f, kept_f = full_c / max(full_c.sum(), 1), kept_c / max(kept_c.sum(), 1)
        labels = [names.get(int(c), str(c)) for c in cats]
        if len(cats) > 2 * SHOWN_CLASSES:
            order = np.argsort(kept_f - full_f, kind="stable")
            shown = np.concatenate([order[:SHOWN_CLASSES], order[-SHOWN_CLASSES:]])
            rest = np.setdiff1d(np.arange(len(cats)), shown)
            full_f = np.append(full_f[shown], full_f[rest].sum())
            kept_f = np.append(kept_f[shown], kept_f[rest].sum())
            labels = [labels[i] for i in shown] + [f"the other {len(rest)} classes"]
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(labels)), 3.5))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, full_f, 0.4, label="full")
        ax.bar(x + 0.2, kept_f, 0.4, label="kept")
        ax.set_xticks(x, labels, rotation=60, ha="right")
        ax.set_ylabel("fraction of objects")
        ax.legend()
        most = f", the {SHOWN_CLASSES} least and most kept of {len(cats)}" if len(labels) < len(cats) else ""
        ax.set_title(f"class distribution (KL kept||full {kl:.4f}{most})")
        figures.append((_save(fig, out / "class_distribution.png"), "class distribution, full vs kept"))
        plt.close(fig)
        # 4. box sizes
        b = index.obj_boxes
        size = np.sqrt(np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 0))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = np.linspace(0, max(size.max(), 1), 30)
        ax.hist(size, bins=bins, alpha=0.6, label="full", density=True)
        ax.hist(size[kept], bins=bins, alpha=0.6, label="kept", density=True)
        ax.set_xlabel("sqrt(box area) [px]")
        ax.legend()
        ax.set_title("box sizes")
        figures.append((_save(fig, out / "box_sizes.png"), "box-size distribution, full vs kept"))
        plt.close(fig)
        # 5. objects per image
        per = index.objects_per_image()
        kept_img = np.isin(index.image_ids, sub["image_ids"])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        bins = np.arange(per.max() + 2) - 0.5
        ax.hist(per, bins=bins, alpha=0.6, label="full", density=True)
        ax.hist(per[kept_img], bins=bins, alpha=0.6, label="kept", density=True)
        ax.set_xlabel("objects per image")
        ax.legend()
        ax.set_title(f"objects per image (mean {per.mean():.2f} full, {per[kept_img].mean():.2f} kept)")
        figures.append((_save(fig, out / "objects_per_image.png"), "objects per image, full vs kept"))
        plt.close(fig)

    # 6. label issues: counts, and crops of the highest-scored flags of each kind
    if (run / "label_issues.csv").is_file():
        issues = _read_csv(run / "label_issues.csv")
        counts = {k: sum(r["kind"] == k for r in issues) for k in ISSUE_KINDS}
        lines.append(
            "Label issues (label_issues.csv; `prune-hooks clean` applies them): "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + "."
        )
        root = image_root or meta.get("image_root")
        for kind in ISSUE_KINDS:
            rows = [r for r in issues if r["kind"] == kind]
            grid = _issue_grid(plt, kind, rows, index, root, out / f"issues_{kind}.png") if rows else None
            if grid:
                figures.append((grid, f"{kind}: annotation (green) and suggestion (orange), highest scores first"))
    lines.append("")
    for name, title in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return atomic_write_text(out / "report.md", "\n".join(lines))


def _issue_grid(plt, kind: str, rows: list[dict[str, Any]], index, root: str | None, path: Path) -> str | None:
    if not root:
        logger.warning("report: no image root known, the label-issue crops are skipped (pass --image-root)")
        return None
    from matplotlib.patches import Rectangle
    from PIL import Image

    files = {int(im["id"]): im["file_name"] for im in index.images}
    names = {c["id"]: c["name"] for c in index.categories}
    top = sorted(rows, key=lambda r: -float(r["score"]))[:12]
    cols = min(4, len(top))
    n_rows = (len(top) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.6 * cols, 2.8 * n_rows), squeeze=False)
    shown = 0
    for ax, r in zip(axes.flat, top):
        ax.axis("off")
        try:
            img = Image.open(Path(root) / files[int(r["image_id"])]).convert("RGB")
        except (OSError, KeyError):
            continue
        boxes = [(json.loads(r[c]), color) for c, color in (("bbox", "lime"), ("suggested_bbox", "orange")) if r[c]]
        x0 = min(b[0] for b, _ in boxes)
        y0 = min(b[1] for b, _ in boxes)
        x1 = max(b[0] + b[2] for b, _ in boxes)
        y1 = max(b[1] + b[3] for b, _ in boxes)
        pad = 0.3 * max(x1 - x0, y1 - y0)
        left, top_ = max(0, x0 - pad), max(0, y0 - pad)
        ax.imshow(img.crop((left, top_, x1 + pad, y1 + pad)))
        for (x, y, w, h), color in boxes:
            ax.add_patch(Rectangle((x - left, y - top_), w, h, fill=False, edgecolor=color, linewidth=1.5))
        gt = names.get(int(r["category_id"])) if r["category_id"] else "(no box)"
        sug = names.get(int(r["suggested_category_id"])) if r["suggested_category_id"] else ""
        ax.set_title(f"{gt} -> {sug} {float(r['score']):.2f}" if sug else f"{gt} {float(r['score']):.2f}", fontsize=8)
        shown += 1
    for ax in list(axes.flat)[len(top) :]:
        ax.axis("off")
    if not shown:
        plt.close(fig)
        logger.warning("report: no image of the %s flags could be read under %s", kind, root)
        return None
    name = _save(fig, path)
    plt.close(fig)
    return name


def report_or_warn(run: Path, image_root: str | None = None) -> None:
    """For the hooks: a report that cannot be drawn must not fail a finished training."""
    try:
        write_report(run, image_root=image_root)
    except (PruneHooksError, OSError, ValueError, ImportError) as e:
        logger.warning("report not written: %s", e)
