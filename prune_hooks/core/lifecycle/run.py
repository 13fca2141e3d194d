"""One hook lifecycle for every framework: scoring passes or in-loop capture, the final features pass, outputs.

A framework hook owns a :class:`ScoringRun` built on its :class:`~prune_hooks.core.lifecycle.adapter.Adapter`;
the run does everything that does not depend on the framework. When to run a pass stays with the hook
(each framework has its own loop events).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data.coco import CocoIndex
from ..errors import PruneHooksError, fail
from ..outputs.rundir import write_hook_run
from ..scoring.capture import VPSCapture
from ..scoring.inloop import StepStash, original_frame
from ..selection.methods import MASKS, PROTOTYPES, REGISTRY, SOFT_LABELS, needs_of
from .adapter import Adapter

__all__ = ["ScoringRun", "inference_context"]


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
        self.capture = VPSCapture(index, device=device, record=self.dump, comm=adapter.comm())
        needs = needs_of(self.methods)
        self.want_prototypes = PROTOTYPES in needs or self.coverage.get("dedup_threshold") is not None
        self._lut: torch.Tensor | None = None
        self.stash = StepStash()  # in-loop capture: the training step's batch, features and head outputs
        # shape scores need no pass: scored once, now (one process: forking a trainer is not safe)
        self.shape = None
        if MASKS in needs:
            from ..scoring.shape import shape_scores

            try:
                self.shape = shape_scores(index, workers=1)
            except PruneHooksError as e:
                raise fail(str(e)) from None

    def check_model(self, model: torch.nn.Module, methods_label: str) -> None:
        """Refuse methods the model cannot serve, before any training (``methods_label``: the option's name)."""
        has = self.adapter.gt_outputs(model)
        what = {PROTOTYPES: "GT-box RoI features", SOFT_LABELS: "class distributions on GT boxes"}
        for need in (PROTOTYPES, SOFT_LABELS):
            users = [m for m in self.methods if need in REGISTRY[m].needs]
            if users and need not in has:
                raise fail(
                    f"{methods_label} {users} need {what[need]}, which this adapter cannot read from "
                    f"the model ({type(model).__name__}: {self.adapter.gt_description(model)})"
                )
        if self.want_prototypes and PROTOTYPES not in has:  # no method needs them: dedup does
            raise fail(
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
        batches = ad.batches()
        eta = _PassProgress(ad, self.capture.acc.passes + 1, _length(batches), start)
        cap.features_only = not vps
        with inference_context(model, owners, self.score_thresh):
            for batch in batches:
                eta.step()
                for out in ad.infer(model, batch, cap.gt_boxes, with_gt):
                    cap.add_image(
                        out.image_id,
                        out.boxes,
                        out.scores,
                        self._labels_to_coco(out.labels),
                        probs=out.probs,
                        features=out.features,
                    )
        cap.features_only = False
        closed = cap.close_pass(self.out_dir, ad.is_main(), vps=vps, dump=self.dump)
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

    def start_in_loop(self, model: torch.nn.Module) -> None:
        """In-loop capture: keep each training step's batch, features and replayable head outputs."""
        feature_module, heads, batch_of = self.adapter.in_loop_parts(model)
        self.stash.attach(model, feature_module, heads, batch_of)
        self.adapter.log(self.stash.replay.describe())

    def observe_step(self, model: torch.nn.Module) -> None:
        """In-loop capture: score the last training step's images (each once per period)."""
        step = self.stash.take()
        if step is None:
            return
        cap, start = self.capture, time.perf_counter()
        with inference_context(model, self.adapter.threshold_owners(model), self.score_thresh):
            with self.stash.replay.replaying():
                images = list(self.adapter.step_images(model, step))
            for im in images:
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
        closed = self.capture.close_pass(self.out_dir, ad.is_main(), dump=self.dump)
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

    def finish(self, model: torch.nn.Module, completed: bool = True) -> dict[str, Any] | None:
        """When training ends: in-loop hooks removed, a features-only pass if the prototypes were not taken
        with the final model, then (main process) the run directory (meta.json with the adapter's
        ``run_meta``), subset, pruned file, retrain config and report.
        ``completed`` False (training died or was stopped early): nothing is written that would look
        finished — the checkpoints hold the state, and resuming goes on from them.
        Returns the subset record (None when nothing was written)."""
        self.stash.detach()
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
        return self.write_outputs(self.adapter.run_meta())

    def write_outputs(self, meta: dict[str, Any]) -> dict[str, Any]:
        from ..outputs.report import report_or_warn  # matplotlib only when a run is written

        run, n_total = self.out_dir, self.index.num_images
        capture = self.capture.whole()  # every rank's objects
        never = self.never_matched(capture)
        meta = {**meta, "methods": self.methods, "scores_training_set": self.scores_training_set}
        meta["capture"] = self.capture_mode
        meta["never_matched"] = never
        meta.update(self.shape.meta() if self.shape is not None else {})
        method = self.methods[0]
        subset, pruned, n_keep = write_hook_run(
            run,
            capture,
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

    def never_matched(self, capture: VPSCapture) -> int:
        """Objects no prediction ever matched in any pass (matched IoU and confidence 0 throughout);
        when they are most objects, say so loudly: their VPS is 0 and carries no information."""
        n = self.index.num_objects
        if not n or capture.acc.passes == 0:
            return 0
        vps = capture.acc.vps()
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


def _length(batches: Any) -> int | None:
    try:
        return len(batches)
    except TypeError:  # an iterable loader without a length: no ETA
        return None


class _PassProgress:
    """Log lines with the pass's progress and ETA, about every tenth of a pass of at least ``MIN_BATCHES``
    batches (a COCO pass at batch 1 is an hour on one GPU: the log says how far it is)."""

    MIN_BATCHES = 200

    def __init__(self, adapter: Adapter, t: int, total: int | None, start: float) -> None:
        self.adapter, self.t, self.total, self.start, self.done = adapter, t, total, start, 0
        self.every = max(total // 10, 1) if total and total >= self.MIN_BATCHES and adapter.is_main() else 0

    def step(self) -> None:
        if self.every and self.done and self.done % self.every == 0:
            spent = time.perf_counter() - self.start
            left = spent / self.done * (self.total - self.done)
            self.adapter.log(
                f"scoring pass {self.t}: {self.done}/{self.total} batches (this rank), {spent:.0f} s, ETA {left:.0f} s"
            )
        self.done += 1
