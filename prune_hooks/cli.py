"""``prune-hooks``: score and select from the command line, without training again."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from .core.data.coco import load_coco, load_detections, sha256_file
from .core.data.rundir import read_meta
from .core.errors import PruneHooksError
from .core.io import no_gc
from .core.outputs.clean import audit_run, clean_run
from .core.outputs.rundir import write_run, write_subset
from .core.scoring.audit import ISSUE_KINDS, AuditThresholds, LabelAudit
from .core.scoring.scores import AGGREGATIONS, VPSAccumulator, cipa_pass
from .core.selection import methods as registry
from .core.selection.algorithms import keep_count
from .core.selection.coverage import DEFAULT_STRATA
from .core.selection.inputs import RunInputs
from .core.selection.select import DEFAULT_LAMBDA, select

__all__ = ["main"]

logger = logging.getLogger("prune_hooks")


def cmd_score_vps(args: argparse.Namespace) -> None:
    index = load_coco(args.annotations)
    acc = VPSAccumulator(index.num_objects)
    audit = LabelAudit(index.num_objects)
    everything = torch.arange(index.num_objects)
    for t, path in enumerate(args.detections, 1):
        m = cipa_pass(index, load_detections(path, index))
        acc.update(everything, *(torch.from_numpy(v) for v in (m.iou, m.conf, m.learned)))
        acc.end_pass()
        audit.add_pass(everything, torch.from_numpy(m.near_conf), torch.from_numpy(m.near_box), m.candidates)
        logger.info("pass %d/%d: %s", t, len(args.detections), path)
    write_run(
        args.out,
        index,
        acc,
        framework="coco-results",
        audit=audit,
        extra_meta={"detections": [str(Path(p).resolve()) for p in args.detections]},
    )
    print(f"scored {index.num_objects} objects in {index.num_images} images over {acc.passes} passes -> {args.out}")


def cmd_score_shape(args: argparse.Namespace) -> None:
    from .core.outputs.report import report_or_warn
    from .core.scoring.shape import shape_scores

    if args.workers is not None and args.workers < 1:
        raise PruneHooksError(f"--workers must be >= 1, got {args.workers}")
    start = time.perf_counter()
    with no_gc():  # a COCO-sized file is millions of objects: the collector would rescan them all the time
        index = load_coco(args.annotations)
        shapes = shape_scores(index, workers=args.workers)
        meta = {"scorer": "shape", **shapes.meta(), "image_root": args.image_root}
        write_run(args.out, index, framework="annotations", extra_meta=meta, objects=shapes.columns)
    print(
        f"shape-scored {shapes.num_scored} of {index.num_objects} objects in {index.num_images} images "
        f"({shapes.num_without_mask} without a mask, {shapes.num_degenerate} degenerate) in "
        f"{time.perf_counter() - start:.1f}s -> {args.out}",
        flush=True,
    )
    if not args.no_report:
        report_or_warn(Path(args.out), args.image_root)


def cmd_select(args: argparse.Namespace) -> None:
    if not Path(args.run).is_dir():
        raise PruneHooksError(f"run directory not found: {args.run}")
    # A directory with only prototypes.npz (no meta.json) works with --annotations.
    meta = read_meta(args.run) if Path(args.run, "meta.json").is_file() else {}
    ann = args.annotations or meta.get("annotations")
    if not ann:
        raise PruneHooksError(
            f"{args.run} records no annotation file (no meta.json, or none in it): pass --annotations GT.json"
        )
    index = load_coco(ann)
    if args.annotations is None and meta.get("annotations_sha256") not in (None, sha256_file(ann)):
        logger.warning("%s changed since the run was scored (sha256 differs from meta.json)", ann)
    budgets = [
        keep_count(index.num_images, **{name: v})
        for name in ("keep", "prune", "count")
        for v in (getattr(args, name) or [])
    ]
    inputs = RunInputs(args.run, index)
    methods = list(registry.names()) if args.method == "all" else [args.method]
    single = len(methods) * len(budgets) == 1
    out_root = Path(args.out or args.run)
    done = 0
    for method in methods:
        m = registry.get(method)
        why = inputs.missing(m)
        if why and args.method == "all":
            logger.warning("skipping %s: %s", method, why)
            continue
        constant = inputs.uninformative(method, args.aggregation if args.aggregation in m.aggregations else None)
        if constant and args.method == "all":
            logger.warning("skipping %s: %s", method, constant)
            continue
        if args.method == "all" and m.is_score and args.aggregation and args.aggregation not in m.aggregations:
            logger.warning("skipping %s: it aggregates by %s only", method, ", ".join(m.aggregations))
            continue
        for n_keep, ratio in budgets:
            subset = select(
                method,
                inputs,
                n_keep=n_keep,
                keep_ratio=ratio,
                aggregation=args.aggregation,
                seed=args.seed,
                lam=args.lam,
                drop_mislabeled=args.drop_mislabeled,
                stratify=args.stratify,
                beta=args.beta,
                strata=args.strata,
                group_by=args.group_by,
                per_group_max=args.per_group_max,
                dedup_threshold=args.dedup,
            )
            out = out_root if single else out_root / "subsets" / f"{method}_keep{ratio:g}"
            subset_path, pruned = write_subset(out, subset, index)
            done += 1
            print(f"kept {n_keep} of {index.num_images} images ({method}) -> {subset_path}, {pruned}", flush=True)
    if not done:
        raise PruneHooksError(f"no method could select from {args.run}")


def cmd_unseen_folds(args: argparse.Namespace) -> None:
    from .core.outputs.unseen import write_folds

    pairs = write_folds(args.annotations, args.k, args.seed, args.out)
    for i, (train, score) in enumerate(pairs, 1):
        print(f"fold {i}: train {train}, score {score}")


def cmd_unseen_merge(args: argparse.Namespace) -> None:
    from .core.outputs.unseen import merge_runs

    meta = merge_runs(args.runs, args.annotations, args.out)
    print(f"merged {len(args.runs)} runs over {meta['num_images']} images -> {args.out}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .core.io import write_json
    from .core.outputs.unseen import SUBSET_RATIOS, compare_runs

    rows = compare_runs(args.run_a, args.run_b)
    head = ["column", "images", "spearman", "kendall", *(f"overlap@{k:g}" for k in SUBSET_RATIOS)]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    if args.out:
        write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b), "columns": rows})


def cmd_audit(args: argparse.Namespace) -> None:
    th = AuditThresholds(**{f.name: getattr(args, f.name) for f in fields(AuditThresholds)})
    rows = audit_run(args.run, th)
    counts = {k: sum(r[0] == k for r in rows) for k in ISSUE_KINDS}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {Path(args.run) / 'label_issues.csv'}")


def cmd_clean(args: argparse.Namespace) -> None:
    path, changes_path, changes = clean_run(
        args.run,
        args.out,
        relabel=args.relabel,
        ignore_bad_location=args.ignore_bad_location,
        add_missing=args.add_missing,
    )
    counts = {k: sum(c[0] == k for c in changes) for k in ("relabel", "ignore", "add")}
    note = "" if changes else " (nothing asked: pass --relabel, --ignore-bad-location or --add-missing)"
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"{note} -> {path}, {changes_path}")


def cmd_report(args: argparse.Namespace) -> None:
    from .core.outputs.report import write_report

    path = write_report(args.run, subset=args.subset, out=args.out, image_root=args.image_root)
    print(f"report -> {path}")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, like every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"prune-hooks: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="prune-hooks",
        description="Dataset pruning for object detection: score images, select subsets, write pruned COCO files.",
    )
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
    folds.add_argument("annotations", help="COCO instances file of the training set")
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
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--out", help="also write the table as JSON")
    cmp_.set_defaults(func=cmd_compare)

    aud = sub.add_parser(
        "audit",
        help="label issues of a run again, at other thresholds",
        description="Rewrite RUN/label_issues.csv (wrong_class, bad_location, missing_box, outlier; docs/methods.md, "
        "'Label audit') from the run's audit.npz, soft_labels.npz and objects.csv. Thresholds in (0, 1].",
    )
    aud.add_argument("run", help="run directory of a hook (or of `score vps`)")
    for f in fields(AuditThresholds):
        aud.add_argument(f"--{f.name.replace('_', '-')}", type=float, default=f.default, help=f"default {f.default}")
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
    except (PruneHooksError, OSError) as e:
        print(f"prune-hooks: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
