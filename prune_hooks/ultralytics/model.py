"""The Ultralytics side of the lifecycle: the training images through the validator's pipeline (letterbox, no
augmentation), one batch through a YOLO detection model (the EMA weights Ultralytics validates and saves), NMS
at a lowered confidence, and the head's class maps and the neck's features read at the GT boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torchvision.ops import roi_align

from ..core.lifecycle import Adapter, ImageOutput
from ..core.scoring.dense import BINS, pyramid_gt_outputs
from ..core.selection.methods import PROTOTYPES, SOFT_LABELS

__all__ = ["UltralyticsAdapter", "detect_head", "multiscale_features"]


def detect_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's detection head (``Detect`` and its subclasses: ``Segment``...), or None."""
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, torch.nn.Sequential) and len(layers) else None
    wanted = ("cv3", "nc", "stride", "nl")
    return head if head is not None and all(hasattr(head, n) for n in wanted) else None


def multiscale_features(pyramid: list[torch.Tensor], strides: list[float], boxes: list[torch.Tensor]) -> list:
    """Per image, Tensor[n, sum C_l]: each GT box RoIAligned (7 x 7 bins, mean) on every pyramid level, the
    levels' vectors concatenated. YOLO's neck levels differ in width, so one level per box (the rule of
    ``core.scoring.dense`` for equal-width FPNs) would give vectors of different sizes."""
    counts = [len(b) for b in boxes]
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
    parts = []
    for level, stride in zip(pyramid, strides):
        pooled = roi_align(
            level, rois.to(level.dtype), BINS, spatial_scale=1 / float(stride), sampling_ratio=2, aligned=True
        )
        parts.append(pooled.mean(dim=(2, 3)).float())
    return list(torch.cat(parts, dim=1).split(counts))


class UltralyticsAdapter(Adapter):
    """The Ultralytics answers of :class:`~prune_hooks.core.lifecycle.Adapter` for a
    :class:`~prune_hooks.ultralytics.callbacks.PruneCallbacks` in ``trainer``."""

    framework = "ultralytics"

    def __init__(self, callbacks: Any, trainer: Any, image_ids: dict[str, int]) -> None:
        self.callbacks, self.trainer, self.image_ids = callbacks, trainer, image_ids
        self.conf = 0.0  # set by the run for each pass (threshold_owners)
        self._loader = None

    def batches(self) -> Iterable[Any]:
        if self._loader is None:
            from ultralytics.data import build_dataloader

            t, cb = self.trainer, self.callbacks
            batch = cb.batch or t.args.batch
            dataset = t.build_dataset(t.data["train"], mode="val", batch=batch)
            workers = t.args.workers if cb.workers is None else cb.workers
            self._loader = build_dataloader(dataset, batch, workers, shuffle=False, rank=-1)
        return self._loader

    def model_classes(self) -> list[int]:
        return list(range(int(self.trainer.data["nc"])))  # the COCO file's category ids are the class indices

    def gt_outputs(self, model: torch.nn.Module) -> frozenset[str]:
        return frozenset({SOFT_LABELS, PROTOTYPES}) if detect_head(model) is not None else frozenset()

    def gt_description(self, model: torch.nn.Module) -> str:
        if detect_head(model) is None:
            return "no YOLO detection head"
        return "the head's class maps and the neck's features on GT boxes"

    def threshold_owners(self, model: torch.nn.Module) -> list[tuple[Any, str]]:
        return [(self, "conf")]  # the NMS of the pass reads it

    def infer(self, model, batch, gt_boxes, with_gt: bool) -> Iterable[ImageOutput]:
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        head = detect_head(model)
        device = next(model.parameters()).device
        img = batch["img"].to(device).float() / 255
        y, raw = model(img)
        end2end = bool(getattr(head, "end2end", False))
        # y: decoded boxes, class scores (and a segment head's mask coefficients, or a (y, proto) pair): nc says which
        dets = non_max_suppression(y, self.conf, 0.7, multi_label=True, max_det=300, nc=head.nc, end2end=end2end)
        size = img.shape[2:]
        gt_in, ids = [], []
        for k, path in enumerate(batch["im_file"]):
            ids.append(self.image_ids[str(path)])
            (gain_h, gain_w), (pad_w, pad_h) = batch["ratio_pad"][k]
            boxes = gt_boxes(ids[-1]).to(device).float()
            gt_in.append(boxes * boxes.new_tensor([gain_w, gain_h] * 2) + boxes.new_tensor([pad_w, pad_h] * 2))
        probs = feats = [None] * len(ids)
        if with_gt and any(len(b) for b in gt_in):
            preds = raw.get("one2one" if end2end else "one2many", raw) if "one2many" in raw else raw
            pyramid = preds["feats"]
            sizes = [p.shape[2] * p.shape[3] for p in pyramid]
            cls_maps = [
                s.reshape(s.shape[0], head.nc, p.shape[2], p.shape[3])
                for s, p in zip(preds["scores"].split(sizes, dim=2), pyramid)
            ]
            strides = [float(s) for s in head.stride]
            probs, _ = pyramid_gt_outputs(cls_maps, strides, gt_in, cls_maps, head.nc)
            feats = multiscale_features(pyramid, strides, gt_in)
        for k, image_id in enumerate(ids):
            d = dets[k]
            boxes = scale_boxes(size, d[:, :4].clone(), batch["ori_shape"][k], ratio_pad=batch["ratio_pad"][k])
            yield ImageOutput(image_id, boxes, d[:, 4], d[:, 5].long(), probs[k], feats[k])

    def is_main(self) -> bool:
        from ultralytics.utils import RANK

        return RANK in {-1, 0}

    def log(self, message: str, warning: bool = False) -> None:
        from ultralytics.utils import LOGGER

        (LOGGER.warning if warning else LOGGER.info)(f"[prune_hooks] {message}")

    def iteration(self) -> int:
        return (self.trainer.epoch + 1) * len(self.trainer.train_loader)

    def run_meta(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "data": str(Path(t.args.data).resolve()),
            "image_root": "",
            "epochs": t.epoch + 1,
            "period_epochs": self.callbacks.period,
            "ultralytics_model": str(t.args.model),
        }

    def write_retrain(self, run: Path, pruned: Path, n_keep: int, n_total: int) -> Path:
        from .retrain import write_retrain

        return write_retrain(self.trainer, run, n_keep, n_total)
