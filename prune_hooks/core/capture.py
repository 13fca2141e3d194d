"""What a framework hook feeds during a scoring pass: per-image predictions -> CIPA -> accumulator.

The adapters turn their outputs (detectron2 ``Instances``, mmdet ``DetDataSample``) into plain tensors
in original image coordinates with COCO category ids and call :meth:`VPSCapture.add_image`; the
ground truth comes from the annotation file itself, so objects are keyed by COCO annotation id
whatever the framework's loader keeps.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .coco import CocoIndex
from .errors import PruneHooksError
from .matching import cipa_match
from .scores import VPSAccumulator

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
        self._pos = index.image_position()
        self._gt_boxes = torch.as_tensor(index.obj_boxes, dtype=torch.float32, device=self.device)
        self._gt_labels = torch.as_tensor(index.obj_category_ids, device=self.device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._seen: set[int] = set()
        self.record = record
        self.results: list[dict[str, Any]] = []

    def add_image(
        self, image_id: int, boxes: torch.Tensor, scores: torch.Tensor, category_ids: torch.Tensor
    ) -> None:
        """Record one image's predictions of the current pass.

        Args:
            image_id: COCO image id.
            boxes: Tensor[M, 4] xyxy in original image coordinates.
            scores: Tensor[M].
            category_ids: Tensor[M], COCO category ids.
        """
        pos = self._pos.get(int(image_id))
        if pos is None:
            raise PruneHooksError(f"image id {image_id} of the scoring pass is not in {self.index.path}")
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
        a, b = int(self.index.offsets[pos]), int(self.index.offsets[pos + 1])
        if a == b:
            return
        iou, conf, _ = cipa_match(
            self._gt_boxes[a:b],
            self._gt_labels[a:b],
            boxes.to(self.device, torch.float32),
            scores.to(self.device, torch.float32),
            category_ids.to(self.device),
        )
        self._pending.append((torch.arange(a, b, device=self.device), iou, conf))

    def end_pass(self, all_gather: Callable[[Any], list[Any]] | None = None) -> list[dict[str, Any]]:
        """Close the pass: one vectorized accumulator update with every image of the pass.

        Args:
            all_gather: in distributed runs, the framework's gather (e.g. detectron2
                ``comm.all_gather``). Every rank then applies all ranks' matches, so every rank, and
                so any checkpoint, holds the complete state.

        Returns:
            the pass's recorded COCO results from all ranks (empty unless ``record``).
        """
        if self._pending:
            local = tuple(torch.cat(t).cpu() for t in zip(*self._pending))
        else:
            local = (torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
        self._pending.clear()
        parts = all_gather((local, self.results)) if all_gather is not None else [(local, self.results)]
        idx, iou, conf = (torch.cat([p[0][k] for p in parts]) for k in range(3))
        if idx.numel():
            # Shards of some samplers overlap (padding): an object counts once per pass.
            order = torch.argsort(idx, stable=True)
            keep = torch.ones_like(order, dtype=torch.bool)
            keep[1:] = idx[order][1:] != idx[order][:-1]
            first = order[keep]
            self.acc.update(idx[first].to(self.device), iou[first].to(self.device), conf[first].to(self.device))
        self.acc.end_pass()
        self._seen.clear()
        results, seen_images = [], set()
        for _, res in parts:
            ids = {r["image_id"] for r in res} - seen_images
            results.extend(r for r in res if r["image_id"] in ids)
            seen_images |= ids
        self.results = []
        return results

    @property
    def images_seen(self) -> int:
        return len(self._seen)

    def state_dict(self) -> dict[str, Any]:
        return self.acc.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.acc.load_state_dict(state)
