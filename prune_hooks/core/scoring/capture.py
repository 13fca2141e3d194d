"""What a framework hook feeds during a scoring pass: per-image predictions -> CIPA -> accumulator.

The adapters turn their outputs (detectron2 ``Instances``, mmdet ``DetDataSample``) into plain tensors
in original image coordinates with COCO category ids and call :meth:`VPSCapture.add_image`; the
ground truth comes from the annotation file itself, so objects are keyed by COCO annotation id
whatever the framework's loader keeps. In a run of several processes each rank keeps the state of its range
of the file's objects (:mod:`.shards`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.coco import CocoIndex
from ..errors import PruneHooksError
from ..io import write_json
from .audit import LabelAudit, unexplained
from .matching import box_iou, cipa_match, learned, near_prediction
from .prototypes import PrototypeCollector, save_prototypes
from .scores import VPSAccumulator
from .shards import SINGLE, Comm, exchange, image_ranges, join_states, shard_state
from .softlabels import SoftLabels

__all__ = ["VPSCapture"]


class VPSCapture:
    """Scores scoring passes of a detector over the images of one COCO file.

    A pass's rows of this rank's own objects are applied every ``FLUSH_ROWS`` rows, so the pass holds at most
    that many of them (~177 bytes each at the default soft-label width) plus the rows of objects other ranks
    keep, which travel when the pass closes.

    Args:
        index: the training annotation file.
        device: where the accumulator and the ground-truth boxes live (the model's device).
        record: also keep each pass's predictions as COCO results (for checking against the CLI).
        comm: the process's rank, the world size and the framework's gather; with several ranks the
            accumulators hold this rank's range of objects (``rows``, ``images``) only.
    """

    FLUSH_ROWS = 1 << 18

    def __init__(
        self, index: CocoIndex, device: torch.device | str = "cpu", record: bool = False, comm: Comm = SINGLE
    ) -> None:
        self.index = index
        self.device = torch.device(device)
        self.comm = comm
        self._image_ranges = image_ranges(index.offsets, comm.world)
        self._row_ranges = np.asarray(index.offsets, dtype=np.int64)[self._image_ranges]
        r = comm.rank
        self.images = (int(self._image_ranges[r]), int(self._image_ranges[r + 1]))
        self.rows = (int(self._row_ranges[r]), int(self._row_ranges[r + 1]))
        n = self.rows[1] - self.rows[0]
        self.acc = VPSAccumulator(n, device=self.device)
        self.audit = LabelAudit(index.obj_boxes[self.rows[0] : self.rows[1]], device=self.device)
        self._whole: dict[str, Any] | None = None  # main of a sharded run: every rank's state after the last pass
        self._pos = index.image_position()
        self._pending: list[tuple[torch.Tensor, ...]] = []  # per image: the objects' matches
        self._pending_rows = 0
        self._travelling: list[tuple[torch.Tensor, ...]] = []  # flushed rows of objects other ranks keep
        self._applied: torch.Tensor | None = None  # this pass: which of this rank's objects are updated
        self.features_only = False  # a features-only pass: add_image keeps prototypes, not a VPS row
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
        self._start_soft_labels()

    def _start_soft_labels(self) -> None:
        """Soft labels of this rank's objects, columns = the file's categories then background (once)."""
        if self.soft is None:
            self.soft = SoftLabels(self.acc.num_objects, len(self.index.category_ids) + 1, device=self.device)

    def collect_prototypes(self) -> None:
        """Also keep per-image per-class mean features in :meth:`add_image` (until :meth:`take_prototypes`)."""
        self.prototypes = PrototypeCollector(self.index)

    def take_prototypes(self) -> dict[str, Any] | None:
        """Every rank's prototypes of the pass (on the main process; None on the others)."""
        if self.prototypes is None:
            raise PruneHooksError("no prototypes collected: call collect_prototypes() before the pass")
        arrays = self.prototypes.arrays(self.comm)
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
        """The image's object boxes, Tensor[n, 4] xyxy in original image coordinates, on the device (read from
        the index's host arrays per image: no copy of every box on the device)."""
        return self._gt_boxes(*self.object_slice(image_id))

    def _gt_boxes(self, a: int, b: int) -> torch.Tensor:
        return torch.as_tensor(self.index.obj_boxes[a:b], dtype=torch.float32).to(self.device)

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
        if self.features_only:
            return
        boxes = boxes.to(self.device, torch.float32)
        scores = scores.to(self.device, torch.float32)
        pred_labels = category_ids.to(self.device)
        gt = self._gt_boxes(a, b)
        pair_iou = box_iou(gt.float(), boxes) if a < b and len(boxes) else None  # shared by the three uses
        odd = unexplained(gt, boxes, scores, pair_iou)
        if odd.any():
            pos_t = torch.full((int(odd.sum()),), pos, dtype=torch.long)
            self._candidates.append((pos_t, pred_labels[odd].long().cpu(), boxes[odd].cpu(), scores[odd].cpu()))
        if a == b:
            return
        labels = torch.as_tensor(self.index.obj_category_ids[a:b]).to(self.device)
        iou, conf, index = cipa_match(gt, labels, boxes, scores, pred_labels, iou=pair_iou)
        ok = learned(labels, pred_labels, index, iou)
        near_conf, near_box = near_prediction(gt, labels, boxes, scores, pred_labels, iou=pair_iou)
        rows = torch.arange(a, b, device=self.device)
        if probs is not None and self._columns is not None:
            probs = probs.to(self.device, torch.float32)
            padded = torch.cat([probs, probs.new_zeros(probs.shape[0], 1)], dim=1)
            soft = self.soft.reduce(padded[:, self._columns])
        else:
            soft = torch.zeros(b - a, 0, device=self.device)
        self._queue((rows, iou, conf, ok, soft, near_conf, near_box))

    def _queue(self, rows: tuple[torch.Tensor, ...]) -> None:
        """Hold one image's (or a batch's) pass rows; every ``FLUSH_ROWS`` of them, apply this rank's own."""
        self._pending.append(rows)
        self._pending_rows += len(rows[0])
        if self._pending_rows >= self.FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Apply the pending rows of this rank's own objects now; rows of objects another rank keeps stay
        pending until the pass closes."""
        rows = self._take_pending()
        if rows is None:
            return
        if self.comm.world > 1:
            own = (rows[0] >= self.rows[0]) & (rows[0] < self.rows[1])
            others = tuple(t[~own] for t in rows)
            rows = tuple(t[own] for t in rows)
            if len(others[0]):
                self._travelling.append(others)
        self._apply_rows(rows)

    def _take_pending(self, travelling: bool = False) -> tuple[torch.Tensor, ...] | None:
        """The pending rows (with ``travelling``, also the flushed rows bound for other ranks) joined on their
        device, handed over one field at a time: held once, not twice."""
        parts = self._travelling + self._pending if travelling else self._pending
        if not parts:
            return None
        fields: list[list[torch.Tensor] | None] = [list(t) for t in zip(*parts)]
        del parts
        self._pending.clear()
        if travelling:
            self._travelling.clear()
        self._pending_rows = 0
        return _join(fields)

    def _apply_rows(self, rows: tuple[torch.Tensor, ...]) -> None:
        """Update this rank's objects from pass rows (file rows, any order): an object counts once a pass, its
        first row (padding samplers and other ranks may score an image twice)."""
        idx, iou, conf, ok, soft, near_conf, near_box = rows
        if not idx.numel():
            return
        idx = idx.to(self.device) - self.rows[0]
        if self._applied is None:
            self._applied = torch.zeros(self.acc.num_objects, dtype=torch.bool, device=self.device)
        order = torch.argsort(idx, stable=True)
        ordered = idx[order]
        first = ~self._applied[ordered]
        first[1:] &= ordered[1:] != ordered[:-1]
        take = None if bool(first.all()) else order[first]
        del order, ordered, first
        if take is not None:
            idx = idx[take]
        iou, conf, ok, soft, near_conf, near_box = (
            t.to(self.device) if take is None else t.to(self.device)[take]
            for t in (iou, conf, ok, soft, near_conf, near_box)
        )
        self._applied[idx] = True
        self.acc.update(idx, iou, conf, ok)
        if self.soft is not None and soft.shape[1] == self.soft.packed_width:
            self.soft.apply(idx, soft)
        self.audit.add_rows(idx, near_conf, near_box)

    def take_local_pass(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], list[dict[str, Any]]]:
        """What this process recorded in the pass and has not applied (CPU tensors): object matches, audit
        candidates, results; the pending rows are handed over."""
        rows = self._take_pending(travelling=True)
        if rows is not None:
            objects = tuple(t.cpu() for t in rows)
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

    def end_pass(self) -> list[dict[str, Any]]:
        """Close the pass: every rank's rows go to the rank that keeps their objects, then one vectorized
        accumulator update; with several ranks the main process then gathers every rank's state (host memory),
        which checkpoints and the written run read.

        Returns:
            the pass's recorded COCO results from all ranks on the main process (empty unless ``record``).
        """
        objects, cands, results = self.take_local_pass()
        self._candidates.clear()
        world = self.comm.world
        if world > 1:
            obj_owner = torch.from_numpy(np.searchsorted(self._row_ranges, objects[0].numpy(), "right") - 1)
            cand_owner = torch.from_numpy(np.searchsorted(self._image_ranges, cands[0].numpy(), "right") - 1)
            parts = exchange(
                self.comm,
                [
                    (tuple(t[obj_owner == d] for t in objects), tuple(t[cand_owner == d] for t in cands))
                    for d in range(world)
                ],
            )
            recorded = (self.comm.to(results, 0) or []) if self.record else []
        else:
            parts, recorded = [(objects, cands)], [results]
        # a rank that has scored no image yet has no soft labels: its empty rows take the others' width
        widths = [p[0][4].shape[1] for p in parts if len(p[0][4])]
        width = max(widths, default=0)
        for p in parts:
            if not len(p[0][4]):
                p[0][4].resize_(0, width)
        if width:  # this rank may keep objects others scored before it scored any image
            self._start_soft_labels()
        candidates = [p[1] for p in parts]
        rows = parts[0][0] if len(parts) == 1 else tuple(torch.cat([p[0][k] for p in parts]) for k in range(7))
        del parts, objects
        self._apply_rows(rows)
        del rows
        self._applied = None
        self.acc.end_pass()
        self.audit.end_pass(_distinct_candidates(candidates))
        self._seen.clear()
        if world > 1:
            states = self.comm.to(self._local_state(), 0)
            if states is not None:
                self._whole = join_states(states)
        out, seen_images = [], set()
        for res in recorded:
            ids = {r["image_id"] for r in res} - seen_images
            out.extend(r for r in res if r["image_id"] in ids)
            seen_images |= ids
        self.results = []
        return out

    def close_pass(
        self, out_dir: Path, main_process: bool, vps: bool = True, dump: bool = False
    ) -> tuple[int, int] | None:
        """End a hook's pass: collected prototypes gathered and saved to ``out_dir/prototypes.npz``,
        then the VPS pass closed (and its detections dumped to ``out_dir/passes/``), only the main
        process writing. Returns (pass number, images this rank saw), or None for a features-only pass."""
        if self.prototypes is not None:
            arrays = self.take_prototypes()
            if main_process and arrays is not None:
                save_prototypes(Path(out_dir) / "prototypes.npz", arrays)
        if not vps:
            self.discard_pass()
            return None
        seen = self.images_seen
        results = self.end_pass()
        if main_process and dump:
            write_json(Path(out_dir) / "passes" / f"pass_{self.acc.passes:03d}.json", results, indent=None)
        return self.acc.passes, seen

    def discard_pass(self) -> None:
        """Forget what this pass recorded (a features-only pass)."""
        if self._applied is not None:
            raise PruneHooksError("this pass already updated the state (set features_only before it starts)")
        self._pending.clear()
        self._travelling.clear()
        self._pending_rows = 0
        self._candidates.clear()
        self._seen.clear()
        self.results = []

    @property
    def images_seen(self) -> int:
        return len(self._seen)

    def _local_state(self) -> dict[str, Any]:
        state = {"vps": self.acc.state_dict(), "audit": self.audit.state_dict()}
        if self.soft is not None:
            state["soft_labels"] = self.soft.state_dict()
        return state

    def state_dict(self) -> dict[str, Any]:
        """The whole state, every object in the file's order (on the main process of a sharded run: as gathered
        at the last pass; other ranks return their part, marked, which :meth:`load_state_dict` refuses)."""
        if self.comm.world == 1:
            return self._local_state()
        if self.comm.rank != 0:
            return {**self._local_state(), "rows": torch.tensor(self.rows)}
        if self._whole is None:  # no pass yet: nothing recorded
            return VPSCapture(self.index).state_dict()
        return self._whole

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a whole state (any world size wrote it): this rank takes its range of objects."""
        if "rows" in state:
            raise PruneHooksError(f"prune state holds objects {state['rows'].tolist()} of one rank, not the whole run")
        held = int(torch.as_tensor(state["vps"]["learned_passes"]).shape[0])
        if held != self.index.num_objects:
            raise PruneHooksError(
                f"prune state holds {held} objects, {self.index.path} has {self.index.num_objects}: "
                "was the dataset changed?"
            )
        mine = shard_state(state, self.rows, self.images) if self.comm.world > 1 else state
        self.acc.load_state_dict(mine["vps"])
        if "audit" in mine:  # checkpoints of earlier versions have none: the audit starts at the resume
            self.audit.load_state_dict(mine["audit"])
        if "soft_labels" in mine:
            if self.soft is None:
                k = SoftLabels.columns_of(mine["soft_labels"])
                self.soft = SoftLabels(self.acc.num_objects, k, device=self.device)
            self.soft.load_state_dict(mine["soft_labels"])
        if self.comm.world > 1 and self.comm.rank == 0:
            self._whole = state

    def whole(self) -> VPSCapture:
        """The whole state as one capture (for writing the run, on the main process): this capture in a run of
        one process, else one on the CPU holding what every rank kept at the last pass."""
        if self.comm.world == 1:
            return self
        cap = VPSCapture(self.index)
        cap.load_state_dict(self.state_dict())
        return cap


def _distinct_candidates(parts: list[tuple[torch.Tensor, ...]]) -> tuple[np.ndarray, ...]:
    """The ranks' unexplained detections as numpy arrays, exact repeats (an image two ranks both saw) once."""
    image, cat, box, score = (torch.cat([p[k] for p in parts]).cpu().numpy() for k in range(4))
    if len(parts) > 1 and len(image):
        rows = np.column_stack([image, cat, box, score])
        _, first = np.unique(rows, axis=0, return_index=True)
        first.sort()
        image, cat, box, score = image[first], cat[first], box[first], score[first]
    return image.astype(np.int64), cat.astype(np.int64), box.astype(np.float64), score.astype(np.float64)


def _join(fields: list[list[torch.Tensor] | None]) -> tuple[torch.Tensor, ...]:
    """Each field's tensors concatenated, the parts of a field released as soon as it is joined (held once)."""
    joined = []
    for j in range(len(fields)):
        joined.append(torch.cat(fields[j]) if len(fields[j]) > 1 else fields[j][0])
        fields[j] = None
    return tuple(joined)
