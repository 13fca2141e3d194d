"""Detectron2 hooks: VPS scoring passes during training, run directory and retrain.yaml at the end.

The lifecycle is the core's (:class:`~prune_hooks.core.lifecycle.ScoringRun`); this module is the
detectron2 side of it: the test loader, one batch through ``GeneralizedRCNN`` with the box head also
run on the GT boxes, ``comm`` gathering, and ``retrain.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import HookBase, hooks
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList
from detectron2.utils import comm

from ..core import PruneHooksError, describe_changes, load_coco, scale_schedule
from ..core.dense import pyramid_gt_outputs
from ..core.inloop import HeadReplay, replayable
from ..core.io import atomic_write_text
from ..core.lifecycle import Adapter, ImageOutput, ScoringRun, StepImage, check_coverage, check_options
from ..core.methods import PROTOTYPES, SOFT_LABELS
from ..core.schedule import cap_warmup, drop_late_milestones
from ..core.unseen import check_score_set

__all__ = ["PruneHook", "build_prune_hooks", "check_prune_config", "insert_prune_hooks", "write_retrain_config"]

logger = logging.getLogger("detectron2.prune_hooks")

SCHEDULE_KEYS = (
    "SOLVER.MAX_ITER",
    "SOLVER.STEPS",
    "TEST.EVAL_PERIOD",
    "SOLVER.CHECKPOINT_PERIOD",
)
OPTION_LABELS = {
    "methods": "PRUNE.METHODS",
    "keep_ratio": "PRUNE.KEEP_RATIO",
    "aggregation": "PRUNE.AGGREGATION",
    "capture": "PRUNE.CAPTURE",
    "other_set": "PRUNE.SCORE_DATASET",
    "stratify": "PRUNE.STRATIFY",
    "group_by": "PRUNE.GROUP_BY",
    "per_group_max": "PRUNE.PER_GROUP_MAX",
    "dedup": "PRUNE.DEDUP",
}


def _fail(msg: str) -> PruneHooksError:
    return PruneHooksError(f"[prune_hooks] {msg}")


class PruneHook(HookBase):
    """Scores every training object at each epoch end; writes ``OUTPUT_DIR/prune/`` when training ends.

    Place it before ``PeriodicCheckpointer`` (:func:`insert_prune_hooks`): a checkpoint written at an
    epoch end then already holds that epoch's pass, so ``--resume`` neither loses nor repeats one.

    With ``PRUNE.CAPTURE: in_loop`` it scores each training batch after its step instead, from the
    features the step computed (kept by forward hooks on the model while it trains), and from the
    step's RPN head or dense head outputs where that head computes the same in eval (``HeadReplay``).
    """

    def __init__(self, cfg: CfgNode) -> None:
        # the scored set: the training set unless SCORE_DATASET; train_net.py's check, when it made one
        self.dataset, index, n_train = _LAST_CHECK.pop(_check_key(cfg), None) or _check(cfg)
        self.train_dataset = cfg.DATASETS.TRAIN[0]
        p = cfg.PRUNE
        self.cfg = cfg.clone()
        self.image_root = getattr(MetadataCatalog.get(self.dataset), "image_root", "")
        self.period = int(p.PERIOD) or math.ceil(n_train / cfg.SOLVER.IMS_PER_BATCH)
        self.index = index
        self.run = ScoringRun(
            _Detectron2Adapter(self),
            index,
            methods=p.METHODS,
            keep_ratio=p.KEEP_RATIO,
            aggregation=p.AGGREGATION,
            score_thresh=p.SCORE_THRESH,
            dump=p.DUMP_DETECTIONS,
            device=cfg.MODEL.DEVICE,
            out_dir=Path(cfg.OUTPUT_DIR) / "prune",
            scores_training_set=self.dataset == self.train_dataset,
            capture=p.CAPTURE,
            coverage=_coverage(cfg, index),
        )
        self.in_loop = p.CAPTURE == "in_loop"
        self._stash: dict[str, Any] = {}
        self._handles: list[Any] = []
        self._replay = HeadReplay({})

    @property
    def model(self) -> torch.nn.Module:
        return _unwrap(self.trainer.model)

    def before_train(self) -> None:
        model = self.model
        self.run.check_model(model, "PRUNE.METHODS")
        if self.in_loop:
            if _gt_kind(model) is None:
                raise _fail(
                    f"PRUNE.CAPTURE in_loop runs the model's inference branch on its training features: "
                    f"{type(model).__name__} has no box head or dense head this adapter knows"
                )
            self._handles = [
                model.register_forward_pre_hook(self._keep_inputs),
                model.backbone.register_forward_hook(self._keep_features),
            ]
            self._replay = HeadReplay(_replay_heads(model))
            logger.info(self._replay.describe())

    def _keep_inputs(self, module, args) -> None:
        if module.training and args:
            self._stash = {"inputs": args[0]}
            self._replay.start()

    def _keep_features(self, module, args, output) -> None:
        if self.model.training and "inputs" in self._stash:
            self._stash.update(tensor=args[0], features=output)

    def after_step(self) -> None:
        end = (self.trainer.iter + 1) % self.period == 0
        if self.in_loop:
            self.run.observe_step(self.model)
            if end:
                self.run.close_period()
        elif end:
            # The pass after the last iteration scores with the final model: it also takes the prototypes.
            last = self.trainer.iter + 1 >= self.trainer.max_iter
            self.run.scoring_pass(self.model, prototypes=self.run.want_prototypes and last)

    def after_train(self) -> None:
        for h in self._handles:
            h.remove()
        self._replay.remove()
        self._handles, self._stash = [], {}
        meta = {
            "dataset": self.dataset,
            "train_dataset": self.train_dataset,
            "image_root": self.image_root,
            "period": self.period,
            "iterations": self.trainer.iter,
        }
        # detectron2 calls after_train also when training raised: only a finished loop has iter == max_iter
        self.run.finish(self.model, meta, completed=self.trainer.iter >= self.trainer.max_iter)

    # -- checkpoint state (saved by TrainerBase.state_dict) ---------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run.load_state_dict(state)


class _Detectron2Adapter(Adapter):
    """The detectron2 answers of :class:`~prune_hooks.core.lifecycle.Adapter` for a :class:`PruneHook`."""

    framework = "detectron2"

    def __init__(self, hook: PruneHook) -> None:
        self.hook = hook
        self._loader = None

    def batches(self) -> Iterable[Any]:
        if self._loader is None:
            self._loader = build_detection_test_loader(self.hook.cfg, self.hook.dataset)
        return self._loader

    def model_classes(self) -> list[int]:
        # Predictions come in contiguous ids; the index speaks COCO category ids.
        meta = MetadataCatalog.get(self.hook.dataset)
        to_coco = getattr(meta, "thing_dataset_id_to_contiguous_id", None) or {
            int(c): i for i, c in enumerate(self.hook.index.category_ids)
        }
        lut = [0] * (max(to_coco.values()) + 1)
        for coco_id, contiguous in to_coco.items():
            lut[contiguous] = int(coco_id)
        return lut

    def gt_outputs(self, model: torch.nn.Module) -> frozenset[str]:
        return frozenset({SOFT_LABELS, PROTOTYPES}) if _gt_kind(model) else frozenset()

    def gt_description(self, model: torch.nn.Module) -> str:
        return GT_KINDS.get(_gt_kind(model), "no box head or dense head this adapter knows")

    def threshold_owners(self, model: torch.nn.Module) -> list[tuple[Any, str]]:
        predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        if isinstance(predictor, torch.nn.ModuleList):  # cascade: every stage (the last one filters the output)
            candidates = list(predictor)
        else:  # R-CNN: the box predictor; dense detectors: the model itself
            candidates = [predictor if predictor is not None else model]
        return [(m, "test_score_thresh") for m in candidates if hasattr(m, "test_score_thresh")]

    def infer(self, model, batch, gt_boxes, with_gt: bool) -> Iterable[ImageOutput]:
        """Inference; with ``with_gt`` also the class distribution and feature of each GT box, from the
        same backbone features (the box head on the GT boxes, or a dense head's pyramid: :func:`_gt_kind`)."""
        if not with_gt:
            for inp, out in zip(batch, model(batch)):
                inst = out["instances"]
                yield ImageOutput(inp["image_id"], inst.pred_boxes.tensor, inst.scores, inst.pred_classes)
            return
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        gt = []
        for inp, (h, w) in zip(batch, images.image_sizes):
            boxes = gt_boxes(inp["image_id"]).to(images.tensor.device)
            gt.append(boxes * boxes.new_tensor([w / inp["width"], h / inp["height"]] * 2))
        results, probs, feats = _heads(model, images, features, gt)
        for inp, r, pr, ft, (h, w) in zip(batch, results, probs, feats, images.image_sizes):
            inst = detector_postprocess(r, inp.get("height", h), inp.get("width", w))
            yield ImageOutput(inp["image_id"], inst.pred_boxes.tensor, inst.scores, inst.pred_classes, pr, ft)

    def step_images(self, model) -> Iterable[StepImage]:
        """The last training step's batch, from the backbone features it computed (the stash)."""
        stash, self.hook._stash = self.hook._stash, {}
        batch = stash.get("inputs")
        if "features" not in stash or not batch or any("instances" not in x for x in batch):
            return
        sizes = [tuple(x["image"].shape[-2:]) for x in batch]
        images = ImageList(stash["tensor"].detach(), sizes)
        features = {k: v.detach().float() for k, v in stash["features"].items()}  # AMP steps: half precision
        gt = [x["instances"].gt_boxes.tensor.to(images.tensor.device) for x in batch]
        with self.hook._replay.replaying():
            results, probs, _ = _heads(model, images, features, gt)
        for x, r, pr, g, size in zip(batch, results, probs, gt, sizes):
            original = (int(x.get("height", size[0])), int(x.get("width", size[1])))
            yield StepImage(x["image_id"], r.pred_boxes.tensor, r.scores, r.pred_classes, pr, g, size, original)

    def all_gather(self):
        return comm.all_gather if comm.get_world_size() > 1 else None

    def is_main(self) -> bool:
        return comm.is_main_process()

    def log(self, message: str, warning: bool = False) -> None:
        (logger.warning if warning else logger.info)(message)

    def put_scalar(self, name: str, value: float) -> None:
        self.hook.trainer.storage.put_scalar(name, value, smoothing_hint=False)

    def iteration(self) -> int:
        return self.hook.trainer.iter + 1

    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        h = self.hook
        return write_retrain_config(h.cfg, h.dataset, pruned, h.image_root, n_keep, n_total, run / "retrain.yaml")


def _heads(model, images: ImageList, features: dict, gt: list[torch.Tensor]) -> tuple[list, list, list]:
    """The inference branch on computed backbone features: per image (Instances in ``images``'
    coordinates, class distributions Tensor[n, K + 1] on the GT boxes ``gt`` (same coordinates),
    their features Tensor[n, D]); the box head on the GT boxes, or a dense head's pyramid."""
    kind = _gt_kind(model)
    if kind == "dense":
        pyramid = [features[f] for f in model.head_in_features]
        predictions = model.head(pyramid)
        strides = [model.backbone.output_shape()[f].stride for f in model.head_in_features]
        probs, feats = pyramid_gt_outputs(pyramid, strides, gt, predictions[0], model.num_classes)
        return model.forward_inference(images, pyramid, predictions), probs, feats
    roi = model.roi_heads
    proposals, _ = model.proposal_generator(images, features, None)
    instances, _ = roi(images, features, proposals, None)
    gt_b = [Boxes(b) for b in gt]
    if kind == "res5":  # C4: pooler -> res5 -> mean over space, what the predictor consumes
        box_features = roi._shared_roi_transform([features[f] for f in roi.in_features], gt_b).mean(dim=(2, 3))
        predictor = roi.box_predictor
    else:  # FPN box head; cascade: its final stage
        head = roi.box_head[-1] if kind == "cascade" else roi.box_head
        predictor = roi.box_predictor[-1] if kind == "cascade" else roi.box_predictor
        box_features = head(roi.box_pooler([features[f] for f in roi.box_in_features], gt_b))
    counts = [len(b) for b in gt]
    probs = predictor(box_features)[0].softmax(dim=-1).split(counts)
    return instances, probs, box_features.flatten(1).split(counts)


def _replay_heads(model) -> dict[str, torch.nn.Module]:
    """The head the training forward runs on the features and in-loop capture can take the outputs
    of: a dense detector's head, else the RPN head; none where it computes differently in eval."""
    head = model.head if _gt_kind(model) == "dense" else getattr(model.proposal_generator, "rpn_head", None)
    return {"head": head} if replayable(head) else {}


def check_prune_config(cfg: CfgNode) -> tuple[str, Any]:
    """Validate ``cfg.PRUNE`` and the datasets; returns (the scored dataset's name, its CocoIndex): the
    training set, or ``PRUNE.SCORE_DATASET`` (UNSEEN's fold proxies score images they never train on).

    Call it before the trainer loads data (``tools/train_net.py`` does) so a bad config fails at once;
    the hook built from the same config (and unchanged annotation files) takes this result instead of
    reading the files again.
    """
    result = _check(cfg)
    _LAST_CHECK.clear()
    _LAST_CHECK[_check_key(cfg)] = result
    return result[:2]


# check_prune_config's last result, for the hook built from the same config: (scored set, its index, training images)
_LAST_CHECK: dict[tuple, tuple[str, Any, int]] = {}


def _check_key(cfg: CfgNode) -> tuple:
    """The config and the size and time of each annotation file it names."""
    files = []
    for name in (*cfg.DATASETS.TRAIN, cfg.PRUNE.SCORE_DATASET):
        path = getattr(MetadataCatalog.get(name), "json_file", None) if name else None
        st = os.stat(path) if path and os.path.isfile(path) else None
        files.append((path, st and (st.st_mtime_ns, st.st_size)))
    return cfg.dump(), tuple(files)


def _check(cfg: CfgNode) -> tuple[str, Any, int]:
    p = cfg.PRUNE
    other = bool(p.SCORE_DATASET) and tuple(cfg.DATASETS.TRAIN) != (p.SCORE_DATASET,)
    check_options(p.METHODS, p.KEEP_RATIO, p.AGGREGATION, OPTION_LABELS, p.CAPTURE, other_set=other)
    if p.CAPTURE == "in_loop" and cfg.INPUT.CROP.ENABLED:
        raise _fail(
            "PRUNE.CAPTURE in_loop needs the batch's boxes to be the file's boxes resized and flipped; "
            "INPUT.CROP.ENABLED True moves them by a random offset: use PRUNE.CAPTURE pass with crops"
        )
    if int(p.PERIOD) < 0:
        raise _fail(f"PRUNE.PERIOD must be >= 0 (0 = one epoch), got {p.PERIOD}")
    if len(cfg.DATASETS.TRAIN) != 1:
        raise _fail(f"DATASETS.TRAIN must name one COCO dataset to prune, got {list(cfg.DATASETS.TRAIN)}")
    train = cfg.DATASETS.TRAIN[0]
    train_index = _coco_index(train, "DATASETS.TRAIN")
    scored = p.SCORE_DATASET
    if not scored or scored == train:
        _coverage(cfg, train_index)
        return train, train_index, train_index.num_images
    index = _coco_index(scored, "PRUNE.SCORE_DATASET")
    try:
        check_score_set(train_index, index, bool(p.SCORE_ALLOW_OVERLAP), "PRUNE.SCORE_DATASET", warn=logger.warning)
    except PruneHooksError as e:
        raise _fail(str(e)) from None
    _coverage(cfg, index)
    return scored, index, train_index.num_images


def _coverage(cfg: CfgNode, index) -> dict[str, Any]:
    p = cfg.PRUNE
    options = {"stratify": p.STRATIFY, "group_by": p.GROUP_BY, "per_group_max": p.PER_GROUP_MAX, "dedup": p.DEDUP}
    return check_coverage(options, list(p.METHODS), OPTION_LABELS, index)


def _coco_index(dataset: str, what: str = "DATASETS.TRAIN"):
    json_file = getattr(MetadataCatalog.get(dataset), "json_file", None)
    if not json_file:
        raise _fail(
            f"{what} {dataset!r} is not COCO-registered (its metadata has no json_file, so there is "
            "no annotation file to prune): register it with register_coco_instances or PRUNE.COCO_DATASETS"
        )
    try:
        return load_coco(json_file)
    except PruneHooksError as e:
        raise _fail(str(e)) from None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


GT_KINDS = {
    "box_head": "the FPN box head on GT boxes",
    "res5": "the C4 head (pooler, res5) on GT boxes",
    "cascade": "the cascade's final stage on GT boxes",
    "dense": "the dense head's pyramid and class maps on GT boxes",
}


def _gt_kind(model: torch.nn.Module) -> str | None:
    """How GT-box outputs are read from ``model`` (a key of :data:`GT_KINDS`), or None.

    ``box_head``: StandardROIHeads (FPN, Mask R-CNN); ``res5``: Res5ROIHeads (C4); ``cascade``:
    CascadeROIHeads, final stage; ``dense``: RetinaNet/FCOS-style detectors (``head`` on
    ``head_in_features`` with sigmoid class logits first in its outputs).
    """
    roi = getattr(model, "roi_heads", None)
    if roi is not None:
        if not all(hasattr(model, n) for n in ("preprocess_image", "backbone", "proposal_generator", "_postprocess")):
            return None
        if all(hasattr(roi, n) for n in ("pooler", "res5", "in_features", "box_predictor")):
            return "res5"
        if all(hasattr(roi, n) for n in ("box_pooler", "box_head", "box_predictor", "box_in_features")):
            return "cascade" if isinstance(roi.box_predictor, torch.nn.ModuleList) else "box_head"
        return None
    dense = ("preprocess_image", "backbone", "head", "head_in_features", "forward_inference", "num_classes")
    return "dense" if all(hasattr(model, n) for n in dense) else None


def write_retrain_config(
    cfg: CfgNode, dataset: str, pruned_json: Path, image_root: str, n_keep: int, n_total: int, path: Path
) -> Path:
    """``cfg`` training on the pruned file, schedule scaled by ``n_keep / n_total``, PRUNE disabled."""
    new = cfg.clone()
    new.defrost()
    name = f"{dataset}_{Path(pruned_json).stem}"
    new.DATASETS.TRAIN = (name,)
    new.PRUNE.COCO_DATASETS = [e for e in cfg.PRUNE.COCO_DATASETS if e[0] != name] + [
        [name, str(Path(pruned_json).resolve()), str(image_root)]
    ]
    new.PRUNE.ENABLED = False
    new.OUTPUT_DIR = str(Path(cfg.OUTPUT_DIR).resolve()) + "_retrain"
    fraction = n_keep / n_total
    changes = scale_d2_schedule(new, fraction)
    logger.info(describe_changes(changes, fraction))
    header = (
        f"# generated by prune_hooks: {n_keep}/{n_total} images of {dataset}; {describe_changes(changes, fraction)}\n"
    )
    return atomic_write_text(path, header + new.dump())


def scale_d2_schedule(cfg: CfgNode, fraction: float) -> list:
    """Scale ``cfg``'s iteration settings (:data:`SCHEDULE_KEYS`) by ``fraction``, in place, dropping
    LR steps the shorter schedule no longer reaches (detectron2 refuses a step at or beyond MAX_ITER);
    the warm-up is kept (at most half the new schedule)."""
    changes = scale_schedule(cfg, SCHEDULE_KEYS, fraction)
    drop_late_milestones(cfg, "SOLVER.STEPS", int(cfg.SOLVER.MAX_ITER), changes)
    return cap_warmup(cfg, "SOLVER.WARMUP_ITERS", int(cfg.SOLVER.MAX_ITER), changes)


def build_prune_hooks(cfg: CfgNode) -> list[HookBase]:
    """The prune hooks ``cfg.PRUNE`` asks for (none when ``PRUNE.ENABLED`` is False)."""
    return [PruneHook(cfg)] if cfg.PRUNE.ENABLED else []


def insert_prune_hooks(hook_list: list[HookBase], cfg: CfgNode) -> list[HookBase]:
    """``hook_list`` with the prune hooks placed just before the first ``PeriodicCheckpointer``.

    Use in ``DefaultTrainer.build_hooks``: ``return insert_prune_hooks(super().build_hooks(), self.cfg)``.
    """
    new = build_prune_hooks(cfg)
    at = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.PeriodicCheckpointer)), len(hook_list))
    return hook_list[:at] + new + hook_list[at:]
