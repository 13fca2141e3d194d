"""What a framework adapter answers for the lifecycle (:class:`Adapter`), and the per-image records it hands over.

Adapter method          detectron2                         mmdet
batches()               build_detection_test_loader        the train set with the test pipeline
infer(model, batch, …)  backbone → RPN → ROI heads, and     extract_feat → rpn_head → roi_head, and
                        the box head on the GT boxes        the bbox head on the GT boxes
model_classes()         metadata's contiguous → COCO ids   the loader's cat_ids
gt_outputs(model)       box head (FPN, C4, cascade) or     roi_head bbox head, or a dense head's
                        a dense head: soft labels, feats   pyramid and class maps
threshold_owners(model) box_predictor.test_score_thresh    roi_head/bbox_head test_cfg.score_thr
in_loop_parts(model)    backbone, RPN head, inputs         neck, RPN head, data_samples
step_images(model, s)   the step's batch on its features   the step's samples on its features
run_meta()              dataset names, period, iterations  ann_file, iterations
comm / is_main          detectron2.utils.comm              mmengine.dist
log / put_scalar        logger / EventStorage              runner.logger / message hub
write_retrain(...)      retrain.yaml                       retrain.py
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import torch

from ..scoring.inloop import Step
from ..scoring.shards import SINGLE, Comm

__all__ = ["Adapter", "ImageOutput", "StepImage"]


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
    """One image of a training batch scored in the loop (:mod:`~prune_hooks.core.scoring.inloop`), in the
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

    def run_meta(self) -> dict[str, Any]:
        """What meta.json records of this framework's run (data sets, iterations), when training ends."""
        return {}

    def in_loop_parts(
        self, model: torch.nn.Module
    ) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], Callable[[tuple, dict], Any]]:
        """In-loop capture: (the module whose output are the features, the heads whose training outputs
        the inference branch can take (``replayable``), ``batch_of(args, kwargs)``: the batch of a
        training forward of ``model``, None for other calls). Raises where the model cannot be served."""
        raise NotImplementedError(f"{self.framework}: no in-loop capture")

    def step_images(self, model: torch.nn.Module, step: Step) -> Iterable[StepImage]:
        """In-loop capture: the training step's batch scored from its own features (eval behaviour,
        no grad; the run holds :func:`inference_context` and the head replay)."""
        raise NotImplementedError(f"{self.framework}: no in-loop capture")

    def gt_description(self, model: torch.nn.Module) -> str:
        """Where ``infer`` reads GT-box outputs for this model, in a few words (for logs and refusals)."""
        return "no box head or dense head this adapter knows"

    def comm(self) -> Comm:
        """This process's rank, the world size and the framework's gather of picklable objects to one rank."""
        return SINGLE

    def is_main(self) -> bool:
        return True

    def log(self, message: str, warning: bool = False) -> None:
        pass

    def put_scalar(self, name: str, value: float) -> None:
        pass

    def iteration(self) -> int:
        """Training iterations completed so far."""
        return 0
