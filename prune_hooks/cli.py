"""``prune-hooks``: score and select from the command line, without training again."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from . import api
from ._version import __version__
from .core.data.rundir import read_label_issues
from .core.errors import PruneHooksError
from .core.scoring.audit import ISSUE_KINDS, AuditThresholds
from .core.scoring.scores import AGGREGATIONS
from .core.selection import methods as registry
from .core.selection.coverage import DEFAULT_STRATA
from .core.selection.select import DEFAULT_LAMBDA

__all__ = ["main"]

logger = logging.getLogger("prune_hooks")


def cmd_score_vps(args: argparse.Namespace) -> None:
    run = api.score_detections(annotations=args.annotations, detections=args.detections, out=args.out)
    m = run.meta
    print(f"scored {m['num_objects']} objects in {m['num_images']} images over {m['passes']} passes -> {args.out}")


def cmd_score_shape(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    run = api.score_shape(
        annotations=args.annotations,
        out=args.out,
        workers=args.workers,
        image_root=args.image_root,
        report=not args.no_report,
    )
    m = run.meta
    print(
        f"shape-scored {m['shape_scored']} of {m['num_objects']} objects in {m['num_images']} images "
        f"({m['shape_without_mask']} without a mask, {m['shape_degenerate']} degenerate) in "
        f"{time.perf_counter() - start:.1f}s -> {args.out}",
        flush=True,
    )


def cmd_select(args: argparse.Namespace) -> None:
    sel = api._Selector(args.run, args.annotations)
    budgets = [(name, v) for name in ("keep", "prune", "count") for v in (getattr(args, name) or [])]
    methods = list(registry.names()) if args.method == "all" else [args.method]
    single = len(methods) * len(budgets) == 1
    out_root = Path(args.out or args.run)
    options = dict(
        aggregation=args.aggregation,
        seed=args.seed,
        lam=args.lam,
        drop_mislabeled=args.drop_mislabeled,
        stratify=args.stratify,
        beta=args.beta,
        strata=args.strata,
        group_by=args.group_by,
        per_group_max=args.per_group_max,
        dedup=args.dedup,
    )
    done = 0
    for method in methods:
        why = sel.skip_reason(method, args.aggregation) if args.method == "all" else None
        if why:
            logger.warning("skipping %s: %s", method, why)
            continue
        for name, value in budgets:
            n_keep, ratio = sel.budget(**{name: value})
            out = out_root if single else out_root / "subsets" / f"{method}_keep{ratio:g}"
            subset = sel.select(method, n_keep, ratio, out, **options)
            done += 1
            print(
                f"kept {n_keep} of {subset.n_total} images ({method}) -> {subset.subset_path}, {subset.pruned_path}",
                flush=True,
            )
    if not done:
        raise PruneHooksError(f"no method could select from {args.run}")


def cmd_unseen_folds(args: argparse.Namespace) -> None:
    pairs = api.unseen_folds(annotations=args.annotations, k=args.k, seed=args.seed, out=args.out)
    for i, (train, score) in enumerate(pairs, 1):
        print(f"fold {i}: train {train}, score {score}")


def cmd_unseen_merge(args: argparse.Namespace) -> None:
    run = api.unseen_merge(args.runs, annotations=args.annotations, out=args.out)
    print(f"merged {len(args.runs)} runs over {run.meta['num_images']} images -> {args.out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .core.io import write_json
    from .core.outputs.unseen import SUBSET_RATIOS

    rows = api.compare(args.run_a, args.run_b)
    head = ["column", "images", "spearman", "kendall", *(f"overlap@{k:g}" for k in SUBSET_RATIOS)]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    if args.out:
        write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b), "columns": rows})


def cmd_audit(args: argparse.Namespace) -> None:
    own = Path(args.run) / "label_issues.csv"
    before = len(read_label_issues(args.run)) if args.out is None and own.is_file() else None
    rows = api.audit(args.run, out=args.out, **{f.name: getattr(args, f.name) for f in fields(AuditThresholds)})
    counts = {k: sum(r["kind"] == k for r in rows) for k in ISSUE_KINDS}
    path = Path(args.out or args.run) / "label_issues.csv"
    replaced = (
        f" (replaced the run's own, which had {before} rows; --out DIR writes elsewhere)" if before is not None else ""
    )
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {path}{replaced}")


def cmd_clean(args: argparse.Namespace) -> None:
    cleaned = api.clean(
        args.run,
        out=args.out,
        relabel=args.relabel,
        ignore_bad_location=args.ignore_bad_location,
        add_missing=args.add_missing,
    )
    counts = {k: sum(c[0] == k for c in cleaned.changes) for k in ("relabel", "ignore", "add")}
    note = "" if cleaned.changes else " (nothing asked: pass --relabel, --ignore-bad-location or --add-missing)"
    yolo = f", YOLO labels for {cleaned.yolo_data}" if cleaned.yolo_data else ""
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"{note} -> {cleaned.path}, {cleaned.changes_path}{yolo}")


def cmd_report(args: argparse.Namespace) -> None:
    path = api.report(args.run, subset=args.subset, out=args.out, image_root=args.image_root)
    print(f"report -> {path}")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, like every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"prune-hooks: error: {message} (see {self.prog} --help)\n")


AUDIT_HELP = {
    "tau": "wrong_class: mean probability of another class at least this",
    "loc_iou": "bad_location: IoU of the suggested box with the annotation below this",
    "loc_conf": "bad_location: own-class confidence at least this in every recent pass",
    "loc_agree": "bad_location: the recent boxes overlap the suggested one at least this",
    "miss_conf": "missing_box: mean score of an unexplained detection's track at least this",
    "near_uniform": "outlier: soft-label entropy at least this fraction of log K",
}


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="prune-hooks",
        description="Dataset pruning for object detection: score images, select subsets, write pruned COCO files.",
    )
    ap.add_argument("--version", action="version", version=f"prune-hooks {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    score = sub.add_parser("score", help="score objects and images from saved detections")
    score_sub = score.add_subparsers(dest="scorer", required=True, metavar="SCORER", parser_class=_Parser)
    vps = score_sub.add_parser(
        "vps",
        help="VPS from per-pass detections in COCO results format",
        description="Variance-based prediction score (std of CIPA-matched IoU and confidence over passes) "
        "from one COCO results file per scoring pass, in pass order.",
    )
    vps.add_argument("--annotations", required=True, help="COCO instances file of the scored images")
    vps.add_argument("--detections", required=True, nargs="+", help="COCO results files, one per pass, in order")
    vps.add_argument("--out", required=True, help="run directory to write")
    vps.set_defaults(func=cmd_score_vps)
    shape = score_sub.add_parser(
        "shape",
        help="TFDP shape complexity from instance masks (no training)",
        description="Shape complexity of every non-crowd instance's mask (scs, si_scs, cb_scs; docs/methods.md) "
        "and image sums, written as a run directory for `select --method cb_scs` and the others.",
    )
    shape.add_argument("--annotations", required=True, help="COCO instances file with segmentations")
    shape.add_argument("--out", required=True, help="run directory to write")
    shape.add_argument("--workers", type=int, default=None, help="processes (default: every CPU this process may use)")
    shape.add_argument("--image-root", help="image directory (recorded for the report's crops)")
    shape.add_argument("--no-report", action="store_true", help="skip RUN/report/")
    shape.set_defaults(func=cmd_score_shape)

    sel = sub.add_parser(
        "select",
        help="choose a subset from a run directory",
        description="Rank images by a score of the run directory and write subset.json and the pruned COCO file.",
    )
    sel.add_argument("run", help="run directory (meta.json, images.csv, prototypes.npz, ...)")
    sel.add_argument(
        "--method",
        required=True,
        choices=(*registry.names(), "all"),
        help="'all': every method the run directory has inputs for",
    )
    sel.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        help="image score from object scores (default: the method's own, max for VPS, sum for shape)",
    )
    group = sel.add_mutually_exclusive_group(required=True)
    group.add_argument("--keep", type=float, nargs="+", help="fractions of images to keep, in (0, 1]")
    group.add_argument("--prune", type=float, nargs="+", help="fractions of images to drop, in [0, 1)")
    group.add_argument("--count", type=int, nargs="+", help="numbers of images to keep")
    sel.add_argument(
        "--seed", type=int, default=None, help="seed of the random methods and of kcenter's first center (default 0)"
    )
    sel.add_argument(
        "--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA, help=f"CSOD lambda (default {DEFAULT_LAMBDA})"
    )
    sel.add_argument(
        "--drop-mislabeled",
        action="store_true",
        help="rank images holding a wrong_class object (label_issues.csv) last",
    )
    cov = sel.add_argument_group("coverage (docs/methods.md, 'Coverage options'; any method)")
    cov.add_argument(
        "--stratify",
        action="store_true",
        help="score methods: drop the hardest --beta, then fill the budget evenly across --strata score strata (CCS)",
    )
    cov.add_argument(
        "--beta", type=float, default=None, help="hardest fraction dropped (default 0.5·(0.7 − keep), ≥ 0)"
    )
    cov.add_argument("--strata", type=int, default=DEFAULT_STRATA, help=f"score strata (default {DEFAULT_STRATA})")
    cov.add_argument(
        "--group-by",
        help="image field (e.g. video_id) or FIELD:REGEX with one capture group (e.g. 'file_name:^(.+)_\\d+\\.jpg$'): "
        "spread the kept images over these groups, round robin",
    )
    cov.add_argument("--per-group-max", type=int, help="with --group-by: at most N images per group, rank order")
    cov.add_argument(
        "--dedup",
        type=float,
        metavar="COSINE",
        help="skip an image whose feature (mean of its unit prototypes) has this cosine with a kept one",
    )
    sel.add_argument("--annotations", help="annotation file to prune (default: the one in meta.json)")
    sel.add_argument(
        "--out",
        help="output directory (default: the run directory); several methods or "
        "ratios write OUT/subsets/<method>_keep<ratio>/",
    )
    sel.set_defaults(func=cmd_select)

    uns = sub.add_parser(
        "unseen", help="UNSEEN: folds to train K proxies on, and the merge of their scores (docs/methods.md)"
    )
    uns_sub = uns.add_subparsers(dest="step", required=True, metavar="STEP", parser_class=_Parser)
    folds = uns_sub.add_parser(
        "folds",
        help="K disjoint folds of the images: DIR/fold_<i>_train.json and DIR/fold_<i>_score.json",
        description="Split the images of GT.json into K seeded folds (sizes differ by at most one). Fold i's proxy "
        "trains on fold_<i>_train.json and scores fold_<i>_score.json (every other image).",
    )
    folds.add_argument("--annotations", required=True, help="COCO instances file of the training set")
    folds.add_argument("--k", type=int, required=True, help="number of folds, 2 .. number of images")
    folds.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    folds.add_argument("--out", required=True, help="output directory")
    folds.set_defaults(func=cmd_unseen_folds)
    merge = uns_sub.add_parser(
        "merge",
        help="one run directory from the fold proxies' runs: each score the mean over the runs that scored it",
        description="Merge the run directories of fold proxies (each scored the images it never trained on) into "
        "one run directory over every image of --annotations; select then works on it.",
    )
    merge.add_argument("runs", nargs="+", help="run directories of the fold proxies")
    merge.add_argument("--annotations", required=True, help="the training set's COCO file (the folds' source)")
    merge.add_argument("--out", required=True, help="run directory to write")
    merge.set_defaults(func=cmd_unseen_merge)

    cmp_ = sub.add_parser(
        "compare",
        help="rank correlation and subset overlap of two run directories' image scores",
        description="For every image-score column both runs have: Spearman and Kendall correlation over the images "
        "both scored, and the overlap of the subsets each selects at keep 0.1/0.3/0.5/0.7.",
    )
    cmp_.add_argument("run_a", help="a run directory")
    cmp_.add_argument("run_b", help="the run directory to compare it with")
    cmp_.add_argument("--out", help="also write the table as JSON")
    cmp_.set_defaults(func=cmd_compare)

    aud = sub.add_parser(
        "audit",
        help="label issues of a run again, at other thresholds",
        description="Write label_issues.csv again (wrong_class, bad_location, missing_box, outlier; docs/methods.md, "
        "'Label audit') from the run's audit.npz, soft_labels.npz and objects.csv. Thresholds in (0, 1].",
    )
    aud.add_argument("run", help="run directory of a hook (or of `score vps`)")
    for f in fields(AuditThresholds):
        what = AUDIT_HELP[f.name]
        aud.add_argument(
            f"--{f.name.replace('_', '-')}", type=float, default=f.default, help=f"{what} (default {f.default})"
        )
    aud.add_argument("--out", help="write DIR/label_issues.csv instead of replacing the run's own")
    aud.set_defaults(func=cmd_audit)

    cln = sub.add_parser(
        "clean",
        help="write the annotation file with the label issues you ask to fix",
        description="Write DIR/<stem>_cleaned.json and DIR/changes.csv from RUN/label_issues.csv. Nothing "
        "changes without a flag asking for it. With a subset and a retraining config in RUN, also the cleaned "
        "subset and retrain_cleaned.yaml / .py pointed at it.",
    )
    cln.add_argument("run", help="run directory with label_issues.csv")
    cln.add_argument("--relabel", action="store_true", help="wrong_class: set the suggested category")
    cln.add_argument(
        "--ignore-bad-location", action="store_true", help="bad_location: mark the box ignored (iscrowd: 1)"
    )
    cln.add_argument("--add-missing", action="store_true", help="missing_box: add the suggested box")
    cln.add_argument("--out", help="output directory (default RUN)")
    cln.set_defaults(func=cmd_clean)

    rep = sub.add_parser(
        "report",
        help="plots and report.md of a run directory",
        description="Write RUN/report/: "
        "VPS scatter, image-score histograms, class / box-size / objects-per-image distributions full vs kept, "
        "suspected mislabels, and report.md.",
    )
    rep.add_argument("run", help="run directory")
    rep.add_argument("--subset", help="subset.json to compare with the full set (default RUN/subset.json)")
    rep.add_argument(
        "--image-root", help="image directory, for the crops of suspected mislabels (default: meta.json's)"
    )
    rep.add_argument("--out", help="output directory (default RUN/report)")
    rep.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="prune-hooks: %(levelname)s: %(message)s", level=logging.INFO, stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return int(e.code or 0)
    try:
        args.func(args)
    except (PruneHooksError, OSError) as e:  # a bad file, a bad run: one line, exit 1 (usage errors exit 2)
        print(f"prune-hooks: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
