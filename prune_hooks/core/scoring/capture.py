"""What a framework hook feeds during a scoring pass: per-image predictions -> CIPA -> accumulator.

The adapters turn their outputs (detectron2 ``Instances``, mmdet ``DetDataSample``) into plain tensors
in original image coordinates with COCO category ids and call :meth:`VPSCapture.add_image`; the
ground truth comes from the annotation file itself, so objects are keyed by COCO annotation id
whatever the framework's loader keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.coco import CocoIndex
from ..errors import PruneHooksError
from ..io import write_json
from .audit import LabelAudit, unexplained
from .matching import box_iou, cipa_match, learned, near_prediction
from .prototypes import PrototypeCollector, save_prototypes
from .scores import VPSAccumulator
from .softlabels import SoftLabels

__all__ = ["VPSCapture"]


class VPSCapture:
    """Scores scoring passes of a detector over the images of one COCO file.

    Args:
        index: the training annotation file.
        device: where the accumulator and the ground-truth boxes live (the model's device).
        record: also keep each pass's predictions as COCO results (for checking against the CLI).
    """

    def __init__(self, index: CocoIndex, device: torch.device | str = "cpu", record: bool = False) -> None:
        self.index = index
        self.device = torch.device(device)
        self.acc = VPSAccumulator(index.num_objects, device=self.device)
        self.audit = LabelAudit(index.num_objects, device=self.device)
        self._pos = index.image_position()
        self._gt_boxes = torch.as_tensor(index.obj_boxes, dtype=torch.float32, device=self.device)
        self._gt_labels = torch.as_tensor(index.obj_category_ids, device=self.device)
        self._pending: list[tuple[torch.Tensor, ...]] = []  # per image: the objects' matches
        self._candidates: list[tuple[torch.Tensor, ...]] = []  # per image: unexplained detections (label audit)
        self._seen: set[int] = set()
        self.record = record
        self.results: list[dict[str, Any]] = []
        # soft labels: columns = index.category_ids then background; made when a model reports classes
        self.soft: SoftLabels | None = None
        self._columns: torch.Tensor | None = None
        self.prototypes: PrototypeCollector | None = None
        self.prototypes_taken = False  # prototypes of a pass were gathered (the hooks save them)

    def set_model_classes(self, coco_ids: list[int]) -> None:
        """The COCO category id of each of the model's foreground outputs, in the model's order.

        Enables soft labels: :meth:`add_image` then accepts ``probs`` in the model's order (foreground
        classes, then background) and stores them in the index's order. Categories the model does
        not predict get probability 0.
        """
        k = len(coco_ids)
        where = {int(c): j for j, c in enumerate(coco_ids)}
        cols = [where.get(int(c), k + 1) for c in self.index.category_ids] + [k]  # k + 1: a zero column
        self._columns = torch.as_tensor(cols, device=self.device)
        if self.soft is None:
            self.soft = SoftLabels(self.index.num_objects, len(cols), device=self.device)

    def collect_prototypes(self) -> None:
        """Also keep per-image per-class mean features in :meth:`add_image` (until :meth:`take_prototypes`)."""
        self.prototypes = PrototypeCollector(self.index)

    def take_prototypes(self, all_gather: Callable[[Any], list[Any]] | None = None) -> dict[str, Any]:
        if self.prototypes is None:
            raise PruneHooksError("no prototypes collected: call collect_prototypes() before the pass")
        arrays = self.prototypes.arrays(all_gather)
        self.prototypes = None
        self.prototypes_taken = True
        return arrays

    def _position(self, image_id: int) -> int:
        pos = self._pos.get(int(image_id))
        if pos is None:
            raise PruneHooksError(f"image id {image_id} of the scoring pass is not in {self.index.path}")
        return pos

    def object_slice(self, image_id: int) -> tuple[int, int]:
        """Rows ``a:b`` of the image's objects (non-crowd GT boxes, file order) in the index."""
        pos = self._position(image_id)
        return int(self.index.offsets[pos]), int(self.index.offsets[pos + 1])

    def gt_boxes(self, image_id: int) -> torch.Tensor:
        """The image's object boxes, Tensor[n, 4] xyxy in original image coordinates, on the device."""
        a, b = self.object_slice(image_id)
        return self._gt_boxes[a:b]

    def add_image(
        self,
        image_id: int,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        category_ids: torch.Tensor,
        probs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> None:
        """Record one image's predictions of the current pass.

        Args:
            image_id: COCO image id.
            boxes: Tensor[M, 4] xyxy in original image coordinates.
            scores: Tensor[M].
            category_ids: Tensor[M], COCO category ids.
            probs: Tensor[n, K + 1], the box predictor's class distribution on each of the image's
                objects (rows as :meth:`gt_boxes`), the model's class order then background.
            features: Tensor[n, D], the RoI feature of each object's GT box (for prototypes).
        """
        pos = self._position(image_id)
        if pos in self._seen:
            return  # a sampler that pads its last batch repeats images; count each once per pass
        self._seen.add(pos)
        if self.record:
            xywh = boxes.detach().cpu().clone()
            xywh[:, 2:] -= xywh[:, :2]
            self.results.extend(
                {"image_id": int(image_id), "category_id": int(c), "bbox": b, "score": float(s)}
                for b, s, c in zip(xywh.tolist(), scores.tolist(), category_ids.tolist())
            )
        a, b = self.object_slice(image_id)
        if features is not None and self.prototypes is not None:
            self.prototypes.add(image_id, features)
        boxes = boxes.to(self.device, torch.float32)
        scores = scores.to(self.device, torch.float32)
        pred_labels = category_ids.to(self.device)
        gt = self._gt_boxes[a:b]
        pair_iou = box_iou(gt.float(), boxes) if a < b and len(boxes) else None  # shared by the three uses
        odd = unexplained(gt, boxes, scores, pair_iou)
        if odd.any():
            pos_t = torch.full((int(odd.sum()),), pos, dtype=torch.long)
            self._candidates.append((pos_t, pred_labels[odd].long().cpu(), boxes[odd].cpu(), scores[odd].cpu()))
        if a == b:
            return
        labels = self._gt_labels[a:b]
        iou, conf, index = cipa_match(gt, labels, boxes, scores, pred_labels, iou=pair_iou)
        ok = learned(labels, pred_labels, index, iou)
        near_conf, near_box = near_prediction(gt, labels, boxes, scores, pred_labels, iou=pair_iou)
        rows = torch.arange(a, b, device=self.device)
        if probs is not None and self._columns is not None:
            probs = probs.to(self.device, torch.float32)
            padded = torch.cat([probs, probs.new_zeros(probs.shape[0], 1)], dim=1)
            soft = self.soft.reduce(rows, padded[:, self._columns])
        else:
            soft = torch.zeros(b - a, 0, device=self.device)
        self._pending.append((rows, iou, conf, ok, soft, near_conf, near_box))

    def local_pass(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], list[dict[str, Any]]]:
        """What this process recorded in the pass (CPU tensors): object matches, audit candidates, results."""
        if self._pending:
            objects = tuple(torch.cat(t).cpu() for t in zip(*self._pending))
        else:
            k = self.soft.packed_width if self.soft is not None else 0
            e = torch.zeros(0)
            objects = (e.long(), e, e, e.bool(), torch.zeros(0, k), e, torch.zeros(0, 4))
        if self._candidates:
            cands = tuple(torch.cat(t) for t in zip(*self._candidates))
        else:
            cands = (
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, 4),
                torch.zeros(0),
            )
        return objects, cands, self.results

    def end_pass(self, all_gather: Callable[[Any], list[Any]] | None = None) -> list[dict[str, Any]]:
        """Close the pass: one vectorized accumulator update with every image of the pass.

        Args:
            all_gather: in distributed runs, the framework's gather (e.g. detectron2
                ``comm.all_gather``). Every rank then applies all ranks' matches, so every rank, and
                so any checkpoint, holds the complete state.

        Returns:
            the pass's recorded COCO results from all ranks (empty unless ``record``).
        """
        local = self.local_pass()
        self._pending.clear()
        self._candidates.clear()
        parts = all_gather(local) if all_gather is not None else [local]
        idx, iou, conf, ok, soft, near_conf, near_box = (torch.cat([p[0][k] for p in parts]) for k in range(7))
        if idx.numel():
            # Shards of some samplers overlap (padding): an object counts once per pass.
            order = torch.argsort(idx, stable=True)
            keep = torch.ones_like(order, dtype=torch.bool)
            keep[1:] = idx[order][1:] != idx[order][:-1]
            first = order[keep].to(self.device)
            idx, iou, conf, ok, soft, near_conf, near_box = (
                t.to(self.device)[first] for t in (idx, iou, conf, ok, soft, near_conf, near_box)
            )
            self.acc.update(idx, iou, conf, ok)
            if self.soft is not None and soft.shape[1] == self.soft.packed_width:
                self.soft.apply(idx, soft)
        self.acc.end_pass()
        self.audit.add_pass(idx, near_conf, near_box, _distinct_candidates([p[1] for p in parts]))
        self._seen.clear()
        results, seen_images = [], set()
        for _, _, res in parts:
            ids = {r["image_id"] for r in res} - seen_images
            results.extend(r for r in res if r["image_id"] in ids)
            seen_images |= ids
        self.results = []
        return results

    def close_pass(
        self,
        out_dir: Path,
        all_gather: Callable[[Any], list[Any]] | None,
        main_process: bool,
        vps: bool = True,
        dump: bool = False,
    ) -> tuple[int, int] | None:
        """End a hook's pass: collected prototypes gathered and saved to ``out_dir/prototypes.npz``,
        then the VPS pass closed (and its detections dumped to ``out_dir/passes/``), only the main
        process writing. Returns (pass number, images this rank saw), or None for a features-only pass."""
        if self.prototypes is not None:
            arrays = self.take_prototypes(all_gather)
            if main_process:
                save_prototypes(Path(out_dir) / "prototypes.npz", arrays)
        if not vps:
            self.discard_pass()
            return None
        seen = self.images_seen
        results = self.end_pass(all_gather=all_gather)
        if main_process and dump:
            write_json(Path(out_dir) / "passes" / f"pass_{self.acc.passes:03d}.json", results, indent=None)
        return self.acc.passes, seen

    def discard_pass(self) -> None:
        """Forget what this pass recorded (a features-only pass)."""
        self._pending.clear()
        self._candidates.clear()
        self._seen.clear()
        self.results = []

    @property
    def images_seen(self) -> int:
        return len(self._seen)

    def state_dict(self) -> dict[str, Any]:
        state = {"vps": self.acc.state_dict(), "audit": self.audit.state_dict()}
        if self.soft is not None:
            state["soft_labels"] = self.soft.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.acc.load_state_dict(state["vps"])
        if "audit" in state:  # checkpoints of earlier versions have none: the audit starts at the resume
            self.audit.load_state_dict(state["audit"])
        if "soft_labels" in state:
            if self.soft is None:
                k = SoftLabels.columns_of(state["soft_labels"])
                self.soft = SoftLabels(self.index.num_objects, k, device=self.device)
            self.soft.load_state_dict(state["soft_labels"])


def _distinct_candidates(parts: list[tuple[torch.Tensor, ...]]) -> tuple[np.ndarray, ...]:
    """The ranks' unexplained detections as numpy arrays, exact repeats (an image two ranks both saw) once."""
    image, cat, box, score = (torch.cat([p[k] for p in parts]).cpu().numpy() for k in range(4))
    if len(parts) > 1 and len(image):
        rows = np.column_stack([image, cat, box, score])
        _, first = np.unique(rows, axis=0, return_index=True)
        first.sort()
        image, cat, box, score = image[first], cat[first], box[first], score[first]
    return image.astype(np.int64), cat.astype(np.int64), box.astype(np.float64), score.astype(np.float64)
