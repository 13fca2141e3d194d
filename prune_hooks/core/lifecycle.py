"""One hook lifecycle for every framework: options, scoring passes, the final features pass, outputs.

A framework hook owns a :class:`ScoringRun` and an :class:`Adapter`. The run does everything that
does not depend on the framework; the adapter answers the few questions that do:

    Adapter method          detectron2                         mmdet
    batches()               build_detection_test_loader        the train set with the test pipeline
    infer(model, batch, …)  backbone → RPN → ROI heads, and     extract_feat → rpn_head → roi_head, and
                            the box head on the GT boxes        the bbox head on the GT boxes
    model_classes()         metadata's contiguous → COCO ids   the loader's cat_ids
    gt_outputs(model)       box head (FPN, C4, cascade) or     roi_head bbox head, or a dense head's
                            a dense head: soft labels, feats   pyramid and class maps
    threshold_owners(model) box_predictor.test_score_thresh    roi_head/bbox_head test_cfg.score_thr
    all_gather / is_main    detectron2.utils.comm              mmengine.dist
    log / put_scalar        logger / EventStorage              runner.logger / message hub
    write_retrain(...)      retrain.yaml                       retrain.py

When to run a pass stays with the hook (each framework has its own loop events).
"""

from __future__ import annotations

import abc
import contextlib
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .capture import VPSCapture
from .coco import CocoIndex
from .errors import PruneHooksError
from .inloop import original_frame
from .methods import MASKS, PROTOTYPES, REGISTRY, SOFT_LABELS, needs_of
from .scores import AGGREGATIONS
from .select import write_hook_run

__all__ = [
    "Adapter",
    "CAPTURES",
    "COVERAGE",
    "ImageOutput",
    "ScoringRun",
    "StepImage",
    "check_coverage",
    "check_options",
    "inference_context",
]

CAPTURES = ("pass", "in_loop")  # scoring passes over the training set / the training batches (core.inloop)


class ImageOutput(NamedTuple):
    """One image of a scoring pass, as an adapter hands it to the core.

    Attributes:
        image_id: COCO image id.
        boxes: Tensor[M, 4] xyxy in original image coordinates.
        scores: Tensor[M].
        labels: Tensor[M] int, the model's class indices (``Adapter.model_classes`` maps them to COCO ids).
        probs: Tensor[n, K + 1] or None: the class distribution on each GT box of the image
            (``gt_boxes(image_id)`` order), the model's classes then background.
        features: Tensor[n, D] or None: the RoI feature of each GT box (the predictor's input).
    """

    image_id: int
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    probs: torch.Tensor | None = None
    features: torch.Tensor | None = None


class StepImage(NamedTuple):
    """One image of a training batch scored in the loop (:mod:`~prune_hooks.core.inloop`), in the
    augmented image's coordinates.

    Attributes:
        image_id: COCO image id.
        boxes, scores, labels: the predictions (as :class:`ImageOutput`), augmented coordinates.
        probs: Tensor[n, K + 1] or None: the class distribution on each GT box of the batch.
        gt_boxes: Tensor[n, 4] xyxy, the image's GT boxes as the batch holds them.
        augmented_size, original_size: (height, width) of the augmented image (unpadded) and of the file's.
    """

    image_id: int
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    probs: torch.Tensor | None
    gt_boxes: torch.Tensor
    augmented_size: tuple[int, int]
    original_size: tuple[int, int]


class Adapter(abc.ABC):
    """What a framework adapter implements (see the module docstring for both frameworks)."""

    framework: str = ""

    @abc.abstractmethod
    def batches(self) -> Iterable[Any]:
        """The scoring pass's batches: every image of the scored set once (this rank's shard), test pipeline."""

    @abc.abstractmethod
    def infer(
        self, model: torch.nn.Module, batch: Any, gt_boxes: Callable[[int], torch.Tensor], with_gt: bool
    ) -> Iterable[ImageOutput]:
        """Predictions of ``model`` on ``batch``, and with ``with_gt`` the GT-box class distributions and
        features computed on the same backbone features (``gt_boxes(image_id)``: Tensor[n, 4] xyxy,
        original image coordinates)."""

    @abc.abstractmethod
    def model_classes(self) -> list[int]:
        """The COCO category id of each of the model's foreground outputs, in the model's order."""

    @abc.abstractmethod
    def gt_outputs(self, model: torch.nn.Module) -> frozenset[str]:
        """What ``infer(with_gt=True)`` gives for this model: a subset of {SOFT_LABELS, PROTOTYPES}
        (GT-box class distributions, GT-box features); empty when it cannot run on GT boxes."""

    @abc.abstractmethod
    def threshold_owners(self, model: torch.nn.Module) -> list[tuple[Any, str]]:
        """(object, attribute) pairs holding the model's detection score threshold(s)."""

    @abc.abstractmethod
    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        """Write the retraining config for the pruned file; returns its path."""

    def step_images(self, model: torch.nn.Module) -> Iterable[StepImage]:
        """In-loop capture: the last training step's batch scored from its own features (eval behaviour,
        no grad; the run holds :func:`inference_context`). Adapters without in-loop capture leave it."""
        raise NotImplementedError(f"{self.framework}: no in-loop capture")

    def gt_description(self, model: torch.nn.Module) -> str:
        """Where ``infer`` reads GT-box outputs for this model, in a few words (for logs and refusals)."""
        return "no box head or dense head this adapter knows"

    def all_gather(self) -> Callable[[Any], list[Any]] | None:
        """The framework's gather of picklable objects in a distributed run, else None."""
        return None

    def is_main(self) -> bool:
        return True

    def log(self, message: str, warning: bool = False) -> None:
        pass

    def put_scalar(self, name: str, value: float) -> None:
        pass

    def iteration(self) -> int:
        """Training iterations completed so far."""
        return 0


def check_options(
    methods: Sequence[str] | str,
    keep_ratio: Any,
    aggregation: str,
    labels: dict[str, str],
    capture: str = "pass",
    other_set: bool = False,
) -> list[str]:
    """Validate the options both hooks share; returns ``methods`` as a list.

    ``labels`` names each option as the user wrote it (``{"methods": "PRUNE.METHODS", ...}``), so a
    bad value is reported in the user's own words: ``[prune_hooks] PRUNE.KEEP_RATIO must be in (0, 1], got 1.5``.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise _fail(f"{labels['methods']} is empty")
    for m in methods:
        if m not in REGISTRY:
            raise _fail(f"{labels['methods']}: unknown method {m!r}; choose from {list(REGISTRY)}")
    if aggregation not in AGGREGATIONS:
        raise _fail(f"{labels['aggregation']} must be one of {list(AGGREGATIONS)}, got {aggregation!r}")
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
        raise _fail(f"{labels['keep_ratio']} must be in (0, 1], got {keep_ratio}")
    if capture not in CAPTURES:
        raise _fail(f"{labels['capture']} must be one of {list(CAPTURES)}, got {capture!r}")
    if capture == "in_loop" and other_set:
        raise _fail(
            f"{labels['capture']} in_loop scores the training batches; {labels['other_set']} scores another set, "
            "which needs scoring passes (capture 'pass')"
        )
    return methods


COVERAGE = ("stratify", "group_by", "per_group_max", "dedup")  # the hooks' coverage options (docs/methods.md)


def check_coverage(
    coverage: dict[str, Any], methods: Sequence[str], labels: dict[str, str], index: CocoIndex
) -> dict[str, Any]:
    """Validate the hooks' coverage options (``COVERAGE``: ``stratify`` bool, ``group_by`` image field
    or FIELD:REGEX, ``per_group_max`` int, ``dedup`` cosine; None = off) before training, each named
    as the user wrote it (``labels``); returns them as ``select``'s keyword arguments."""
    stratify, group_by = coverage.get("stratify") or False, coverage.get("group_by") or None
    per_group_max, dedup = coverage.get("per_group_max"), coverage.get("dedup")
    if not isinstance(stratify, bool):
        raise _fail(f"{labels['stratify']} must be True or False, got {stratify!r}")
    if stratify and not REGISTRY[methods[0]].is_score:
        raise _fail(
            f"{labels['stratify']} needs a score method first in {labels['methods']}, {methods[0]} ranks without scores"
        )
    if group_by is not None:
        if not isinstance(group_by, str):
            raise _fail(f"{labels['group_by']} must be an image field or FIELD:REGEX, got {group_by!r}")
        from .coverage import group_labels

        try:
            group_labels(index, group_by, option=labels["group_by"])
        except PruneHooksError as e:
            raise _fail(str(e)) from None
    if per_group_max is not None:
        if isinstance(per_group_max, bool) or not isinstance(per_group_max, int) or per_group_max < 1:
            raise _fail(f"{labels['per_group_max']} must be an integer >= 1, got {per_group_max!r}")
        if group_by is None:
            raise _fail(f"{labels['per_group_max']} needs {labels['group_by']}")
    if dedup is not None and (isinstance(dedup, bool) or not isinstance(dedup, (int, float)) or not -1 <= dedup <= 1):
        raise _fail(f"{labels['dedup']} must be a cosine in [-1, 1], got {dedup!r}")
    return {
        "stratify": stratify,
        "group_by": group_by,
        "per_group_max": per_group_max,
        "dedup_threshold": None if dedup is None else float(dedup),
    }


def _fail(msg: str) -> PruneHooksError:
    return PruneHooksError(f"[prune_hooks] {msg}")


@contextlib.contextmanager
def _random_state_kept(model: torch.nn.Module) -> Iterator[None]:
    """Python's, numpy's and torch's global random states (the CPU's and the model's CUDA device's)
    as they were on entry, restored on exit: a scoring loader draws its worker seed from torch's
    generator, which would otherwise shift every random number the training draws after it (the
    RPN's and ROI heads' sampling), so that a proxy with scoring passes trained differently from the
    same run without the hook."""
    param = next(model.parameters(), None)
    cuda = [param.device] if param is not None and param.device.type == "cuda" else []
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextlib.contextmanager
def inference_context(model: torch.nn.Module, owners: list[tuple[Any, str]], score_thresh: float) -> Iterator[None]:
    """Eval mode, no grad and every score threshold in ``owners`` set to ``score_thresh``; the
    model's mode, thresholds and the global random states (:func:`_random_state_kept`) are restored
    on exit, whatever happened inside."""
    was_training = model.training
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in owners]
    try:
        for obj, attr, _ in saved:
            setattr(obj, attr, score_thresh)
        model.eval()
        with torch.no_grad(), _random_state_kept(model):
            yield
    finally:
        model.train(was_training)
        for obj, attr, value in saved:
            setattr(obj, attr, value)


class ScoringRun:
    """The state and steps of one proxy run's scoring, shared by every framework hook.

    Args:
        adapter: the framework's answers (:class:`Adapter`).
        index: the scored annotation file.
        methods: selection methods; the first chooses the subset written at the end.
        keep_ratio, aggregation: the subset written at the end.
        score_thresh: detection score threshold during passes.
        dump: also write each pass's detections as COCO results under ``out_dir/passes/``.
        device: the model's device (where the accumulators live).
        out_dir: the run directory written when training ends.
        scores_training_set: False when the passes score another set than the training set (UNSEEN
            fold proxies): no retraining config is written then.
        capture: ``pass`` (scoring passes over the training set) or ``in_loop`` (the training batches,
            :meth:`observe_step` after each step and :meth:`close_period` at each epoch end).
        coverage: the subset's coverage options, as :func:`check_coverage` returns them (``dedup``
            reads prototypes: they are taken even when no method needs them).
    """

    def __init__(
        self,
        adapter: Adapter,
        index: CocoIndex,
        *,
        methods: Sequence[str],
        keep_ratio: float,
        aggregation: str,
        score_thresh: float,
        dump: bool,
        device: torch.device | str,
        out_dir: str | Path,
        scores_training_set: bool = True,
        capture: str = "pass",
        coverage: dict[str, Any] | None = None,
    ) -> None:
        self.adapter, self.index = adapter, index
        self.coverage = dict(coverage or {})
        self.capture_mode = capture
        self.skipped = 0  # in-loop: images of the current period whose batch boxes were not the file's
        self.in_loop_seconds = 0.0  # in-loop: the current period's time in observe_step (host wall clock)
        self.methods, self.keep_ratio, self.aggregation = list(methods), float(keep_ratio), aggregation
        self.score_thresh, self.dump = float(score_thresh), bool(dump)
        self.out_dir = Path(out_dir)
        self.scores_training_set = bool(scores_training_set)
        self.capture = VPSCapture(index, device=device, record=self.dump)
        needs = needs_of(self.methods)
        self.want_prototypes = PROTOTYPES in needs or self.coverage.get("dedup_threshold") is not None
        self._lut: torch.Tensor | None = None
        # shape scores need no pass: scored once, now (one process: forking a trainer is not safe)
        self.shape = None
        if MASKS in needs:
            from .shape import shape_scores

            try:
                self.shape = shape_scores(index, workers=1)
            except PruneHooksError as e:
                raise _fail(str(e)) from None

    def check_model(self, model: torch.nn.Module, methods_label: str) -> None:
        """Refuse methods the model cannot serve, before any training (``methods_label``: the option's name)."""
        has = self.adapter.gt_outputs(model)
        what = {PROTOTYPES: "GT-box RoI features", SOFT_LABELS: "class distributions on GT boxes"}
        for need in (PROTOTYPES, SOFT_LABELS):
            users = [m for m in self.methods if need in REGISTRY[m].needs]
            if users and need not in has:
                raise _fail(
                    f"{methods_label} {users} need {what[need]}, which this adapter cannot read from "
                    f"the model ({type(model).__name__}: {self.adapter.gt_description(model)})"
                )
        if self.want_prototypes and PROTOTYPES not in has:  # no method needs them: dedup does
            raise _fail(
                f"the coverage option dedup compares images by their GT-box RoI features, which this adapter "
                f"cannot read from the model ({type(model).__name__}: {self.adapter.gt_description(model)})"
            )
        if SOFT_LABELS not in has:
            self.adapter.log(
                f"no class distributions on GT boxes from this model ({self.adapter.gt_description(model)}): "
                "no soft labels (method entropy unavailable)",
                warning=True,
            )

    def _labels_to_coco(self, labels: torch.Tensor) -> torch.Tensor:
        if self._lut is None:
            classes = self.adapter.model_classes()
            self.capture.set_model_classes(classes)
            self._lut = torch.as_tensor(classes, dtype=torch.long, device=self.capture.device)
        return self._lut[labels.to(self._lut.device).long()]

    def scoring_pass(self, model: torch.nn.Module, *, prototypes: bool = False, vps: bool = True) -> None:
        """One pass over the scored images: CIPA + soft labels (+ prototypes with ``prototypes``;
        ``vps=False``: a features-only pass that leaves the VPS state untouched)."""
        ad, cap = self.adapter, self.capture
        start = time.perf_counter()
        if prototypes:
            cap.collect_prototypes()
        owners = ad.threshold_owners(model)
        if not owners:
            ad.log("model has no test score threshold this adapter knows: scoring passes use its own", warning=True)
        with_gt = bool(ad.gt_outputs(model))
        with inference_context(model, owners, self.score_thresh):
            for batch in ad.batches():
                for out in ad.infer(model, batch, cap.gt_boxes, with_gt):
                    cap.add_image(
                        out.image_id,
                        out.boxes,
                        out.scores,
                        self._labels_to_coco(out.labels),
                        probs=out.probs,
                        features=out.features,
                    )
        closed = cap.close_pass(self.out_dir, ad.all_gather(), ad.is_main(), vps=vps, dump=self.dump)
        if closed is None:
            return
        t, seen = closed
        elapsed = time.perf_counter() - start
        if ad.is_main():
            ad.put_scalar("prune/pass_seconds", elapsed)
            ad.log(
                f"scoring pass {t} after iteration {ad.iteration()}: {seen} images (this rank), "
                f"{elapsed:.1f}s ({elapsed / max(seen, 1):.3f}s/image)"
            )

    def observe_step(self, model: torch.nn.Module) -> None:
        """In-loop capture: score the last training step's images (each once per period)."""
        cap, start = self.capture, time.perf_counter()
        with inference_context(model, self.adapter.threshold_owners(model), self.score_thresh):
            for im in self.adapter.step_images(model):
                file_boxes = cap.gt_boxes(im.image_id)
                if not len(file_boxes) and not len(im.gt_boxes):
                    continue  # no object to score (and no box to read the flip from)
                frame = original_frame(im.gt_boxes, file_boxes, im.augmented_size, im.original_size)
                if frame is None:
                    self.skipped += 1
                    continue
                boxes = frame.to_original(im.boxes.to(cap.device, torch.float32))
                cap.add_image(im.image_id, boxes, im.scores, self._labels_to_coco(im.labels), probs=im.probs)
        self.in_loop_seconds += time.perf_counter() - start

    def close_period(self) -> None:
        """In-loop capture: end an epoch's observations like the end of a pass."""
        ad, skipped, self.skipped = self.adapter, self.skipped, 0
        seconds, self.in_loop_seconds = self.in_loop_seconds, 0.0
        closed = self.capture.close_pass(self.out_dir, ad.all_gather(), ad.is_main(), dump=self.dump)
        if closed is None or not ad.is_main():
            return
        t, seen = closed
        ad.put_scalar("prune/in_loop_skipped", skipped)
        ad.put_scalar("prune/in_loop_seconds", seconds)
        ad.log(
            f"in-loop period {t} after iteration {ad.iteration()}: {seen} images scored (this rank) in "
            f"{seconds:.1f} s, {skipped} skipped (their batch boxes were not the file's objects resized and flipped)",
            warning=seen < skipped,
        )

    def finish(self, model: torch.nn.Module, meta: dict[str, Any], completed: bool = True) -> dict[str, Any] | None:
        """When training ends: a features-only pass if the prototypes were not taken with the final
        model, then (main process) the run directory, subset, pruned file, retrain config and report.
        ``completed`` False (training died or was stopped early): nothing is written that would look
        finished — the checkpoints hold the state, and resuming goes on from them.
        Returns the subset record (None when nothing was written)."""
        if not completed:
            if self.adapter.is_main():
                self.adapter.log(
                    f"training stopped at iteration {self.adapter.iteration()} before its end: no prune run "
                    f"written (scores of {self.capture.acc.passes} passes are in the checkpoints; resume to finish)",
                    warning=True,
                )
            return None
        if self.capture.acc.passes == 0:
            if self.adapter.is_main():
                self.adapter.log(
                    f"no scoring pass ran (iterations {self.adapter.iteration()}): nothing written", warning=True
                )
            return None
        if self.want_prototypes and not self.capture.prototypes_taken:
            self.scoring_pass(model, prototypes=True, vps=False)
        if not self.adapter.is_main():
            return None
        return self.write_outputs(meta)

    def write_outputs(self, meta: dict[str, Any]) -> dict[str, Any]:
        from ..report import report_or_warn  # matplotlib only when a run is written

        run, n_total = self.out_dir, self.index.num_images
        never = self.never_matched()
        meta = {**meta, "methods": self.methods, "scores_training_set": self.scores_training_set}
        meta["capture"] = self.capture_mode
        meta["never_matched"] = never
        meta.update(self.shape.meta() if self.shape is not None else {})
        method = self.methods[0]
        subset, pruned, n_keep = write_hook_run(
            run,
            self.capture,
            self.adapter.framework,
            meta,
            method,
            self.keep_ratio,
            self.aggregation,
            objects=self.shape.columns if self.shape is not None else None,
            coverage=self.coverage,
        )
        report_or_warn(run, meta.get("image_root"))
        if subset is None:
            self.adapter.log(
                f"prune run written to {run} without a subset: {method} cannot rank the images", warning=True
            )
            return None
        how = f"{method}, {subset['aggregation']}" if subset.get("aggregation") else method
        if self.scores_training_set:
            then = f"retrain with {self.adapter.write_retrain(run, pruned, n_keep, n_total)}"
        else:
            then = "no retraining config: the scored images are not the training set"
        self.adapter.log(f"prune run written to {run}: kept {n_keep} of {n_total} images ({how}); {then}")
        return subset

    def never_matched(self) -> int:
        """Objects no prediction ever matched in any pass (matched IoU and confidence 0 throughout);
        when they are most objects, say so loudly: their VPS is 0 and carries no information."""
        n = self.index.num_objects
        if not n or self.capture.acc.passes == 0:
            return 0
        vps = self.capture.acc.vps()
        never = int(((vps["iou_mean"] == 0) & (vps["conf_mean"] == 0) & (vps["passes"] > 0)).sum())
        if never > n / 2:
            self.adapter.log(
                f"{never} of {n} objects ({100 * never / n:.0f}%) were never matched by any prediction in any scoring "
                "pass: their VPS and forgetting scores carry no information. Does the model detect anything yet, and "
                "does the pass lower its score threshold (the adapter warns when it cannot)?",
                warning=True,
            )
        return never

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.capture.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capture.load_state_dict(state)
        self.adapter.log(f"resumed prune state: {self.capture.acc.passes} scoring passes")
