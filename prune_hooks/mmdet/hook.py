"""The mmengine hook: scoring passes (or in-loop capture) during training, the run directory and
``retrain.py`` when it ends. Lifecycle calls only: the work is the core's :class:`ScoringRun` on an
:class:`~prune_hooks.mmdet.model.MMDetAdapter`.
"""

from __future__ import annotations

import copy
import math
import os.path as osp
from pathlib import Path
from typing import Sequence

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..core.data.coco import load_coco
from ..core.errors import PruneHooksError, fail
from ..core.lifecycle import ScoringRun, check_coverage, check_options
from ..core.outputs.unseen import check_score_set
from .checkpoint import trust_own_checkpoints
from .config import OPTION_LABELS, check_dataset, repeats
from .model import MMDetAdapter, unwrap

__all__ = ["PruneHook"]


@HOOKS.register_module()
class PruneHook(Hook):
    """Scores every training object at each epoch end (iteration loops: every ``interval`` iterations)
    and writes ``<work_dir>/prune/`` when training ends.

    Priority BELOW_NORMAL (60): after the EMA hook (NORMAL, 50; it keeps the live weights in the model
    during training and swaps only around validation and saving, so the pass scores the weights being
    trained) and before ``CheckpointHook`` (VERY_LOW, 90), so a checkpoint written at an epoch end
    already holds that epoch's pass and ``--resume`` neither loses nor repeats one.

    Args:
        methods: scores to compute; the first chooses the subset written at the end (others: the CLI).
            Any registered method (:mod:`prune_hooks.core.selection.methods`); those that need prototypes make
            the hook save them.
        keep_ratio: fraction of images in the subset written at the end, in (0, 1].
        aggregation: image score from object scores: max | mean | sum.
        interval: iterations between passes in iteration-based loops (default: one epoch).
        score_thr: detection score threshold during passes (low, so every object can be matched).
        dump_detections: also write each pass's detections as COCO results under ``prune/passes/``.
        score_ann_file: score this COCO file's images instead of the training set's (UNSEEN fold
            proxies; relative paths are joined to the training set's ``data_root``). Its images must
            not be training images unless ``score_allow_overlap`` (then a warning). Such a run writes
            no retrain.py: its subset is not a training plan by itself.
        score_data_prefix: image directory of ``score_ann_file`` (default: the training set's ``data_prefix``).
        capture: ``pass`` (scoring passes over the training set with the test pipeline) or ``in_loop``
            (each training batch after its step, from the features the step computed; docs/methods.md,
            "In-loop capture"). in_loop is refused with train pipelines that move or mix boxes
            (:data:`~prune_hooks.core.scoring.inloop.BREAKING_TRANSFORMS`) and with ``score_ann_file``.
        stratify, group_by, per_group_max, dedup: coverage of the subset written at the end
            (docs/methods.md, "Coverage options"; the CLI's --stratify, --group-by, --per-group-max,
            --dedup): CCS strata over the first method's score; spread over an image field or
            FIELD:REGEX, at most ``per_group_max`` per group (None: round robin); skip images whose mean
            prototype has cosine >= ``dedup`` with a kept one. None / False = off.
        pass_batch_size, pass_workers: the scoring pass's loader (the test pipeline over the training set):
            images per batch on each rank and loader workers. None: ``test_dataloader``'s, except a test
            batch of 1 (the model zoo's) becomes ``train_dataloader``'s batch size.
    """

    priority = "BELOW_NORMAL"

    def __init__(
        self,
        methods: Sequence[str] = ("vps_iou", "vps_conf"),
        keep_ratio: float = 0.5,
        aggregation: str = "max",
        interval: int | None = None,
        score_thr: float = 0.0,
        dump_detections: bool = False,
        score_ann_file: str | None = None,
        score_data_prefix: str | dict | None = None,
        score_allow_overlap: bool = False,
        capture: str = "pass",
        stratify: bool = False,
        group_by: str | None = None,
        per_group_max: int | None = None,
        dedup: float | None = None,
        pass_batch_size: int | None = None,
        pass_workers: int | None = None,
    ) -> None:
        self.coverage = {"stratify": stratify, "group_by": group_by, "per_group_max": per_group_max, "dedup": dedup}
        self.methods = check_options(
            methods, keep_ratio, aggregation, OPTION_LABELS, capture, other_set=bool(score_ann_file)
        )
        self.in_loop = capture == "in_loop"
        self.score_ann_file, self.score_data_prefix = score_ann_file, score_data_prefix
        self.score_allow_overlap = bool(score_allow_overlap)
        if interval is not None and (not isinstance(interval, int) or interval < 1):
            raise fail(f"PruneHook interval must be a positive number of iterations, got {interval}")
        self.keep_ratio, self.aggregation = float(keep_ratio), aggregation
        self.interval, self.score_thr, self.dump = interval, float(score_thr), bool(dump_detections)
        for name, value, low in (("pass_batch_size", pass_batch_size, 1), ("pass_workers", pass_workers, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise fail(f"PruneHook {name} must be an integer >= {low} or None, got {value!r}")
        self.pass_batch_size, self.pass_workers = pass_batch_size, pass_workers
        self.run: ScoringRun | None = None

    def before_run(self, runner) -> None:
        self.ann_file, self.dataset_cfg = check_dataset(runner.cfg)
        self.train_ann_file = self.ann_file
        try:
            index = train_index = load_coco(self.ann_file)
        except PruneHooksError as e:
            raise fail(str(e)) from None
        if self.score_ann_file:  # score another set: the train set's config with its file and images
            self.ann_file = osp.join(self.dataset_cfg.get("data_root") or "", self.score_ann_file)
            if not osp.isfile(self.ann_file):
                raise fail(f"PruneHook score_ann_file {self.ann_file!r} not found")
            self.dataset_cfg = copy.deepcopy(self.dataset_cfg)
            self.dataset_cfg["ann_file"] = self.score_ann_file
            if self.score_data_prefix is not None:
                prefix = self.score_data_prefix
                self.dataset_cfg["data_prefix"] = dict(img=prefix) if isinstance(prefix, str) else dict(prefix)
            try:
                index = load_coco(self.ann_file)
                check_score_set(
                    train_index, index, self.score_allow_overlap, "PruneHook score_ann_file", warn=runner.logger.warning
                )
            except PruneHooksError as e:
                raise fail(str(e)) from None
        prefix = self.dataset_cfg.get("data_prefix", {}) or {}
        self.image_root = osp.join(
            self.dataset_cfg.get("data_root") or "", prefix.get("img", prefix.get("img_path", ""))
        )
        model = unwrap(runner.model)
        self.run = ScoringRun(
            MMDetAdapter(self, runner),
            index,
            methods=self.methods,
            keep_ratio=self.keep_ratio,
            aggregation=self.aggregation,
            score_thresh=self.score_thr,
            dump=self.dump,
            device=next(model.parameters()).device,
            out_dir=Path(runner.work_dir) / "prune",
            scores_training_set=not self.score_ann_file,
            capture="in_loop" if self.in_loop else "pass",
            coverage=check_coverage(self.coverage, self.methods, OPTION_LABELS, index),
        )
        self.run.check_model(model, "PruneHook methods")
        if self.in_loop:
            self.run.start_in_loop(model)
        self.iter_based = isinstance(runner.train_loop, IterBasedTrainLoop)
        batch = runner.cfg.train_dataloader.get("batch_size", 1) * get_world_size()
        self.epoch_iters = math.ceil(train_index.num_images * repeats(runner.cfg.train_dataloader.dataset) / batch)
        self._undo_trust = trust_own_checkpoints(runner.work_dir) if getattr(runner, "_resume", False) else None

    def before_train(self, runner) -> None:
        if self._undo_trust is not None:  # the resume is done
            self._undo_trust()
            self._undo_trust = None

    def after_train_epoch(self, runner) -> None:
        if not self.iter_based:
            self._pass(runner, last=self.is_last_train_epoch(runner))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.in_loop:
            self.run.observe_step(unwrap(runner.model))
        if self.iter_based and self.every_n_train_iters(runner, self.interval or self.epoch_iters):
            self._pass(runner, last=self.is_last_train_iter(runner))

    def _pass(self, runner, last: bool) -> None:
        if self.in_loop:
            self.run.close_period()
            return
        # The pass after the last iteration scores with the final model: it also takes the prototypes.
        self.run.scoring_pass(unwrap(runner.model), prototypes=self.run.want_prototypes and last)

    def after_train(self, runner) -> None:
        if self.run is not None:
            self.run.finish(unwrap(runner.model))

    # -- checkpoint state -----------------------------------------------------------------------

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.run is not None:
            checkpoint["prune_hooks"] = self.run.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only a resumed run continues the statistics; load_from (new training) starts empty.
        if "prune_hooks" in checkpoint and getattr(runner, "_resume", False) and self.run is not None:
            self.run.load_state_dict(checkpoint["prune_hooks"])
