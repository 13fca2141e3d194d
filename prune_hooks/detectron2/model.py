"""The detectron2 side of the lifecycle: the test loader, one batch through ``GeneralizedRCNN`` (or a
dense detector) with the box head also run on the GT boxes, ``comm`` gathering, in-loop capture.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList
from detectron2.utils import comm

from ..core.errors import fail
from ..core.lifecycle import Adapter, ImageOutput, StepImage
from ..core.scoring.dense import pyramid_gt_outputs
from ..core.scoring.inloop import Step, replayable
from ..core.scoring.shards import Comm
from ..core.selection.methods import PROTOTYPES, SOFT_LABELS

__all__ = ["Detectron2Adapter", "GT_KINDS", "unwrap"]

logger = logging.getLogger("detectron2.prune_hooks")


class Detectron2Adapter(Adapter):
    """The detectron2 answers of :class:`~prune_hooks.core.lifecycle.Adapter` for a
    :class:`~prune_hooks.detectron2.hook.PruneHook` (``hook.setup``, ``hook.period``, ``hook.trainer``)."""

    framework = "detectron2"

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self._loader = None

    def batches(self) -> Iterable[Any]:
        if self._loader is None:
            self._loader = self.hook.setup.test_loader(self.hook.setup.dataset)
        return self._loader

    def model_classes(self) -> list[int]:
        # Predictions come in contiguous ids; the index speaks COCO category ids.
        meta = MetadataCatalog.get(self.hook.setup.dataset)
        to_coco = getattr(meta, "thing_dataset_id_to_contiguous_id", None) or {
            int(c): i for i, c in enumerate(self.hook.setup.index.category_ids)
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

    def in_loop_parts(self, model):
        if _gt_kind(model) is None:
            raise fail(
                f"PRUNE.CAPTURE in_loop runs the model's inference branch on its training features: "
                f"{type(model).__name__} has no box head or dense head this adapter knows"
            )
        return model.backbone, _replay_heads(model), _training_inputs

    def step_images(self, model, step: Step) -> Iterable[StepImage]:
        """The training step's batch, from the backbone features it computed."""
        batch = step.batch
        if any("instances" not in x for x in batch):
            return
        sizes = [tuple(x["image"].shape[-2:]) for x in batch]
        images = ImageList(step.feature_input.detach(), sizes)
        features = {k: v.detach().float() for k, v in step.features.items()}  # AMP steps: half precision
        gt = [x["instances"].gt_boxes.tensor.to(images.tensor.device) for x in batch]
        results, probs, _ = _heads(model, images, features, gt)
        for x, r, pr, g, size in zip(batch, results, probs, gt, sizes):
            original = (int(x.get("height", size[0])), int(x.get("width", size[1])))
            yield StepImage(x["image_id"], r.pred_boxes.tensor, r.scores, r.pred_classes, pr, g, size, original)

    def comm(self) -> Comm:
        return Comm(comm.get_rank(), comm.get_world_size(), lambda obj, dst: comm.gather(obj, dst=dst))

    def is_main(self) -> bool:
        return comm.is_main_process()

    def log(self, message: str, warning: bool = False) -> None:
        (logger.warning if warning else logger.info)(message)

    def put_scalar(self, name: str, value: float) -> None:
        self.hook.trainer.storage.put_scalar(name, value, smoothing_hint=False)

    def iteration(self) -> int:
        return self.hook.trainer.iter + 1

    def run_meta(self) -> dict[str, Any]:
        h = self.hook
        return {
            "dataset": h.setup.dataset,
            "train_dataset": h.setup.train_dataset,
            "image_root": h.setup.image_root,
            "period": h.period,
            "iterations": h.trainer.iter,
        }

    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        return self.hook.setup.write_retrain(pruned, n_keep, n_total, run)


def _training_inputs(args: tuple, kwargs: dict) -> Any:
    """The batch (list of dicts) of a training forward of ``GeneralizedRCNN`` / a dense detector."""
    return args[0] if args else kwargs.get("batched_inputs")


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
    gt_b = [Boxes(b) for b in gt]
    counts = [len(b) for b in gt]
    box_features_of = _box_features_of(roi, kind)
    if _stock_inference(roi, kind):
        # One pooler / head / predictor call on each image's proposals followed by its GT boxes: the head's
        # weights are read once, not twice (a second call on a few GT boxes cost ~10% of a CPU pass), and the
        # proposals' rows go through the predictor's own inference as the heads' forward sends them.
        box_features = box_features_of(features, [Boxes.cat([p.proposal_boxes, g]) for p, g in zip(proposals, gt_b)])
        predictions = roi.box_predictor(box_features)
        is_gt = torch.cat([torch.arange(len(p) + n) >= len(p) for p, n in zip(proposals, counts)])
        is_gt = is_gt.to(box_features.device)
        instances, _ = roi.box_predictor.inference(tuple(x[~is_gt] for x in predictions), proposals)
        instances = roi.forward_with_given_boxes(features, instances)
        box_features, logits = box_features[is_gt], predictions[0][is_gt]
    else:
        instances, _ = roi(images, features, proposals, None)
        box_features = box_features_of(features, gt_b)
        predictor = roi.box_predictor[-1] if kind == "cascade" else roi.box_predictor
        logits = predictor(box_features)[0]
    probs = logits.softmax(dim=-1).split(counts)
    return instances, probs, box_features.flatten(1).split(counts)


def _box_features_of(roi, kind: str):
    """``(features, boxes) -> Tensor[n, D]``: what the (final) box predictor consumes for ``boxes``."""
    if kind == "res5":  # C4: pooler -> res5 -> mean over space
        return lambda features, boxes: roi._shared_roi_transform([features[f] for f in roi.in_features], boxes).mean(
            dim=(2, 3)
        )
    head = roi.box_head[-1] if kind == "cascade" else roi.box_head  # FPN box head; cascade: its final stage
    return lambda features, boxes: head(roi.box_pooler([features[f] for f in roi.box_in_features], boxes))


def _stock_inference(roi, kind: str) -> bool:
    """Whether ``roi``'s inference is detectron2's own (pooler, head, predictor, ``predictor.inference``,
    ``forward_with_given_boxes``), so that GT boxes can ride along with the proposals; a subclass that
    changes it, and the cascade (three stages), run their forward and a separate call on the GT boxes."""
    from detectron2.modeling.roi_heads import Res5ROIHeads, StandardROIHeads

    if kind == "res5":
        return type(roi).forward is Res5ROIHeads.forward
    return (
        kind == "box_head"
        and type(roi).forward is StandardROIHeads.forward
        and (type(roi)._forward_box is StandardROIHeads._forward_box)
    )


def _replay_heads(model) -> dict[str, torch.nn.Module]:
    """The head the training forward runs on the features and in-loop capture can take the outputs
    of: a dense detector's head, else the RPN head; none where it computes differently in eval."""
    head = model.head if _gt_kind(model) == "dense" else getattr(model.proposal_generator, "rpn_head", None)
    return {"head": head} if replayable(head) else {}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
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
