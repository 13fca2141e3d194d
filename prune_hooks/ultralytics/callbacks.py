"""The prune hooks as Ultralytics callbacks: a scoring pass at epoch ends, the run directory when training ends.

    from ultralytics import YOLO
    from prune_hooks.ultralytics import add_prune_callbacks

    model = YOLO("yolov8n.yaml")
    add_prune_callbacks(model, methods=["vps_iou", "vps_conf", "csod"], keep_ratio=0.5)
    model.train(data="data.yaml", epochs=100)

Events: ``on_pretrain_routine_start`` refuses what cannot be pruned before any download (a URL or hub name as
``data``, a task other than detect / segment); ``on_pretrain_routine_end`` reads the training set's labels into
``<save_dir>/prune/annotations.json``; ``on_train_epoch_end`` runs the pass with the EMA weights (what Ultralytics
validates and saves); ``on_model_save`` writes the state beside ``last.pt`` so ``resume=True`` continues it;
``on_train_end`` writes the run directory, ``subset.txt``, the pruned data file and ``retrain_args.yaml``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core.data.coco import load_coco
from ..core.errors import fail
from ..core.io import atomic_write_bytes
from ..core.lifecycle import COVERAGE, ScoringRun, check_coverage, check_options
from .data import check_label_files, write_yolo_coco
from .model import UltralyticsAdapter

__all__ = ["OPTION_LABELS", "PruneCallbacks", "add_prune_callbacks"]

OPTION_LABELS = {
    "methods": "add_prune_callbacks methods",
    "keep_ratio": "add_prune_callbacks keep_ratio",
    "aggregation": "add_prune_callbacks aggregation",
    "capture": "add_prune_callbacks capture",
    "other_set": "add_prune_callbacks score set",
    **{name: f"add_prune_callbacks {name}" for name in COVERAGE},
}
TASKS = ("detect", "segment")
STATE = "prune_state.pt"  # beside last.pt
EVENTS = (
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_epoch_end",
    "on_model_save",
    "on_train_end",
)


class PruneCallbacks:
    """The callbacks and their state (one object per training).

    Args:
        methods, keep_ratio, aggregation: as the other frameworks' hooks (the first method chooses the subset).
        period: epochs between scoring passes (1: every epoch).
        score_thresh: the NMS confidence of the passes (0: every anchor competes, as the other hooks keep every
            detection; Ultralytics validates at 0.001, which an early proxy's detections do not reach).
        dump_detections: also write each pass's detections as COCO results under ``prune/passes/``.
        stratify, group_by, per_group_max, dedup: coverage of the written subset (docs/methods.md).
        batch, workers: the pass's loader (default: the training's ``batch`` and ``workers``).
    """

    def __init__(
        self,
        methods: Sequence[str] = ("vps_iou", "vps_conf"),
        keep_ratio: float = 0.5,
        aggregation: str = "max",
        period: int = 1,
        score_thresh: float = 0.0,
        dump_detections: bool = False,
        stratify: bool = False,
        group_by: str | None = None,
        per_group_max: int | None = None,
        dedup: float | None = None,
        batch: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.methods = check_options(methods, keep_ratio, aggregation, OPTION_LABELS)
        for name, value in (("period", period), ("batch", batch), ("workers", workers)):
            low = 0 if name == "workers" else 1
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise fail(f"add_prune_callbacks {name} must be a positive integer, got {value!r}")
        if not 0 <= score_thresh < 1:
            raise fail(f"add_prune_callbacks score_thresh must be in [0, 1), got {score_thresh}")
        self.keep_ratio, self.aggregation, self.period = float(keep_ratio), aggregation, int(period)
        self.score_thresh, self.dump = float(score_thresh), bool(dump_detections)
        self.coverage = {"stratify": stratify, "group_by": group_by, "per_group_max": per_group_max, "dedup": dedup}
        self.batch, self.workers = batch, workers
        self.run: ScoringRun | None = None

    def register(self, model: Any) -> None:
        for event in EVENTS:
            model.add_callback(event, getattr(self, event))

    # -- events ---------------------------------------------------------------------------------

    def on_pretrain_routine_start(self, trainer: Any) -> None:
        task = trainer.args.task
        if task not in TASKS:
            raise fail(f"task {task!r}: the prune callbacks score detection models (tasks {list(TASKS)})")
        data = str(trainer.args.data or "")
        if "://" in data or not Path(data).is_file():
            raise fail(
                f"data {data!r} is not a local data file: a URL or a hub name would be downloaded; "
                "give the path of your data.yaml (train: a folder, a list of folders or a .txt of image paths)"
            )

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        from ultralytics.utils import LOGGER, RANK

        if RANK not in {-1, 0}:
            return  # rank 0 scores every image, as Ultralytics validates on rank 0
        dataset = trainer.train_loader.dataset
        images = [str(f) for f in dataset.im_files]
        names = dict(trainer.data["names"])
        dropped = sorted(set(map(str, dataset.get_img_files(dataset.img_path))) - set(images))
        check_label_files(dropped, names)  # a bad label is one line here, not an image lost in a warning
        if dropped:
            note = f"{len(dropped)} training images Ultralytics could not read are not scored (e.g. {dropped[0]})"
            LOGGER.warning(f"[prune_hooks] {note}")
        shapes = [tuple(int(v) for v in lb["shape"]) for lb in dataset.labels]
        out = Path(trainer.save_dir) / "prune"
        index = load_coco(write_yolo_coco(out, images, shapes, names))
        ids = {im["file_name"]: im["id"] for im in index.images}
        model = _scored(trainer)
        self.run = ScoringRun(
            UltralyticsAdapter(self, trainer, ids),
            index,
            methods=self.methods,
            keep_ratio=self.keep_ratio,
            aggregation=self.aggregation,
            score_thresh=self.score_thresh,
            dump=self.dump,
            device=next(model.parameters()).device,
            out_dir=out,
            coverage=check_coverage(self.coverage, self.methods, OPTION_LABELS, index),
        )
        self.run.check_model(model, OPTION_LABELS["methods"])
        if trainer.start_epoch > 0:  # resume=True: the state of the checkpoint's epoch
            self._resume(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        if self.run is None:
            return
        last = trainer.epoch + 1 >= trainer.epochs
        if (trainer.epoch + 1) % self.period == 0 or last:
            self.run.scoring_pass(_scored(trainer), prototypes=self.run.want_prototypes and last)

    def on_model_save(self, trainer: Any) -> None:
        if self.run is not None:  # after last.pt: the state never runs ahead of the checkpoint
            state = {"epoch": trainer.epoch, "run": self.run.state_dict()}
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(Path(trainer.wdir) / STATE, buf.getvalue())

    def on_train_end(self, trainer: Any) -> None:
        if self.run is not None:
            self.run.finish(_scored(trainer))

    def _resume(self, trainer: Any) -> None:
        path = Path(trainer.wdir) / STATE
        if not path.is_file():
            raise fail(f"resume: {path} not found: this run was not trained with the prune callbacks")
        state = torch.load(path, weights_only=True, map_location="cpu")
        done = trainer.start_epoch - 1
        if state["epoch"] != done:
            self.run.adapter.log(
                f"resume: prune state of epoch {state['epoch'] + 1}, checkpoint of epoch {done + 1}: the passes "
                "in between are missing (the process stopped between the two writes)",
                warning=True,
            )
        self.run.load_state_dict(state["run"])


def _scored(trainer: Any) -> torch.nn.Module:
    """The weights a pass scores: the EMA Ultralytics validates and saves, else the model."""
    ema = getattr(trainer, "ema", None)
    model = ema.ema if ema is not None else trainer.model
    return getattr(model, "module", model)


def add_prune_callbacks(model: Any, **options: Any) -> PruneCallbacks:
    """Add the prune callbacks to an Ultralytics ``YOLO`` model (options: :class:`PruneCallbacks`); then
    ``model.train(...)`` as usual. Returns the callbacks object (its ``run`` after training)."""
    callbacks = PruneCallbacks(**options)
    callbacks.register(model)
    return callbacks
