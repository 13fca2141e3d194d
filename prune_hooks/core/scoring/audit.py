"""Label audit: wrong classes, badly placed boxes, missing boxes and outliers (docs/methods.md, "Label audit").

State kept during the proxy run (bounded, no history beyond the last ``RECENT_PASSES`` passes):

- per object, in each of the last passes, the most confident prediction of its class that overlaps it
  (score and box: where the model puts the object);
- per image, *tracks* of unexplained confident detections (no GT box of the image overlaps them): one track
  per place and class, with the passes it was seen in among the last ones and its running mean box and score.

:func:`label_issues` turns that state, the soft labels and the learned counts into one table of flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ..errors import PruneHooksError
from ..io import no_gc
from .matching import NEAR_IOU, box_iou
from .softlabels import SoftMeans, entropy, outliers, suspects

__all__ = [
    "RECENT_PASSES",
    "CANDIDATE_SCORE",
    "UNEXPLAINED_IOU",
    "ISSUE_KINDS",
    "AuditThresholds",
    "LabelAudit",
    "unexplained",
    "label_issues",
]

RECENT_PASSES = 3  # passes of history per object and per track
CANDIDATE_SCORE = 0.3  # a detection can start or feed a missing-box track from this score
UNEXPLAINED_IOU = 0.3  # ... when its IoU with every GT box of its image is below this
TRACK_IOU = 0.5  # a detection continues a track of its class when its IoU with the track's box reaches this

ISSUE_KINDS = ("wrong_class", "bad_location", "missing_box", "outlier")


@dataclass(frozen=True)
class AuditThresholds:
    """Thresholds of the four flags (all in (0, 1]; defaults documented in docs/methods.md)."""

    tau: float = 0.5  # wrong_class: mean probability of the other class
    loc_iou: float = 0.5  # bad_location: IoU of the suggested box with the annotation below this
    loc_conf: float = 0.5  # bad_location: confidence of the own-class match at least this in every recent pass
    loc_agree: float = 0.7  # bad_location: every recent matched box overlaps the suggested box at least this
    miss_conf: float = 0.5  # missing_box: mean score of the track at least this
    near_uniform: float = 0.9  # outlier: entropy at least this fraction of log K

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise PruneHooksError(f"label audit threshold {f.name} must be in (0, 1], got {v!r}")


def unexplained(
    gt_boxes: torch.Tensor, pred_boxes: torch.Tensor, pred_scores: torch.Tensor, iou: torch.Tensor | None = None
) -> torch.Tensor:
    """Tensor[M] bool: detections scoring >= ``CANDIDATE_SCORE`` whose IoU with every GT box of the image is
    < ``UNEXPLAINED_IOU`` (``iou``: their IoU matrix [N, M] when the caller has it already)."""
    ok = pred_scores >= CANDIDATE_SCORE
    if gt_boxes.shape[0] and pred_boxes.shape[0]:
        if iou is None:
            iou = box_iou(gt_boxes.float(), pred_boxes.to(gt_boxes.device).float())
        ok &= iou.max(dim=0).values < UNEXPLAINED_IOU
    return ok


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[k] with b[k], ndarray[K, 4] xyxy each."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


class LabelAudit:
    """The audit's state over a run's passes (see the module docstring).

    Object history lives on ``device`` as ring buffers of ``recent`` slots: the confidence in float16 and the
    box as float16 offsets from the object's own box in units of its width and height (a near prediction sits
    within a few widths: about 1e-3 of the object's size, whatever the image's size), 11 bytes a slot;
    tracks live on the CPU.

    Args:
        gt_boxes: ndarray[N, 4] xyxy, the objects' boxes (the index's host array; read per pass, not copied).
    """

    def __init__(self, gt_boxes: np.ndarray, device: torch.device | str | None = None, recent: int = RECENT_PASSES):
        self.recent = recent
        self.passes = 0
        self._open = False  # add_rows has started the pass numbered self.passes
        self._gt = np.asarray(gt_boxes).reshape(-1, 4)
        n = len(self._gt)
        z = lambda *s, dtype=torch.float16: torch.zeros(recent, n, *s, dtype=dtype, device=device)  # noqa: E731
        self.conf, self.box_rel, self.valid = z(), z(4), z(dtype=torch.bool)
        self.tracks = {
            "image": np.zeros(0, np.int64),  # image position in the index
            "category_id": np.zeros(0, np.int64),
            "box_sum": np.zeros((0, 4)),
            "score_sum": np.zeros(0),
            "hits": np.zeros(0, np.int64),  # passes the track was seen in, since it started
            "recent": np.zeros(0, np.int64),  # bit k: seen k passes ago (k < recent)
        }

    @property
    def num_objects(self) -> int:
        return int(self.conf.shape[1])

    def add_pass(
        self,
        indices: torch.Tensor,
        conf: torch.Tensor,
        box: torch.Tensor,
        candidates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """Record one pass: :meth:`add_rows` of every object seen, then :meth:`end_pass`.

        Args:
            indices: Tensor[K] distinct object rows seen in this pass; conf Tensor[K] and box Tensor[K, 4] xyxy:
                the most confident prediction of each one's class near it (core.scoring.matching.near_prediction).
            candidates: (image position ndarray[C], category id ndarray[C], box ndarray[C, 4] xyxy, score
                ndarray[C]): the pass's unexplained detections (:func:`unexplained`).
        """
        self.add_rows(indices, conf, box)
        self.end_pass(candidates)

    def add_rows(self, indices: torch.Tensor, conf: torch.Tensor, box: torch.Tensor) -> None:
        """Record the open pass's near predictions of some objects (as :meth:`add_pass`; any number of calls a
        pass, each object in one of them)."""
        self._open_slot()
        slot = self.passes % self.recent
        idx = torch.as_tensor(indices, device=self.conf.device).long()
        if idx.numel():
            self.conf[slot, idx] = torch.as_tensor(conf, device=self.conf.device).to(self.conf.dtype)
            self.box_rel[slot, idx] = self._encode(idx, torch.as_tensor(box, device=self.conf.device))
            self.valid[slot, idx] = True

    def _open_slot(self) -> None:
        """Start the pass numbered ``passes`` once: its slot forgets the pass ``recent`` ago."""
        if not self._open:
            self.valid[self.passes % self.recent] = False
            self._open = True

    def end_pass(self, candidates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Close the pass :meth:`add_rows` recorded, with its unexplained detections (as :meth:`add_pass`)."""
        self._open_slot()
        self._open = False
        self.passes += 1
        with no_gc():  # many small lists per pass; none holds a cycle
            self._track(*candidates)

    def _track(self, image: np.ndarray, cat: np.ndarray, box: np.ndarray, score: np.ndarray) -> None:
        t = self.tracks
        t["recent"] = (t["recent"] << 1) & ((1 << self.recent) - 1)
        new: list[tuple[int, int, np.ndarray, float]] = []
        by_image: dict[int, list[int]] = {}
        for j, p in enumerate(t["image"].tolist()):
            by_image.setdefault(p, []).append(j)
        # highest scores first, so the best detection continues a track; ties in input order
        for c in np.lexsort((-np.asarray(score), np.asarray(image))).tolist():
            p, k, b, s = int(image[c]), int(cat[c]), np.asarray(box[c], np.float64), float(score[c])
            mine = [j for j in by_image.get(p, []) if t["category_id"][j] == k and not t["recent"][j] & 1]
            if mine:
                means = t["box_sum"][mine] / t["hits"][mine, None]
                ious = _np_iou(b[None], means)[0]
                best = int(np.argmax(ious))
                if ious[best] >= TRACK_IOU:
                    j = mine[best]
                    t["box_sum"][j] += b
                    t["score_sum"][j] += s
                    t["hits"][j] += 1
                    t["recent"][j] |= 1
                    continue
            new.append((p, k, b, s))
        if new:
            t["image"] = np.concatenate([t["image"], [n[0] for n in new]]).astype(np.int64)
            t["category_id"] = np.concatenate([t["category_id"], [n[1] for n in new]]).astype(np.int64)
            t["box_sum"] = np.concatenate([t["box_sum"], np.stack([n[2] for n in new])])
            t["score_sum"] = np.concatenate([t["score_sum"], [n[3] for n in new]])
            t["hits"] = np.concatenate([t["hits"], np.ones(len(new), np.int64)])
            t["recent"] = np.concatenate([t["recent"], np.ones(len(new), np.int64)])
        # live tracks in image order (stable): the same order whichever ranks kept which images
        keep = np.flatnonzero(t["recent"] != 0)
        keep = keep[np.argsort(t["image"][keep], kind="stable")]
        for key in t:
            t[key] = t[key][keep]

    def _scale(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = self._gt[rows].astype(np.float32)
        return g, np.tile(np.maximum(g[:, 2:] - g[:, :2], 1.0), 2)

    def _encode(self, idx: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        g, s = (torch.from_numpy(a).to(box.device) for a in self._scale(idx.cpu().numpy()))
        return ((box.float() - g) / s).to(torch.float16)

    def boxes(self, slots: list[int] | None = None) -> torch.Tensor:
        """Tensor[len(slots), N, 4] float32 xyxy (CPU): the recorded boxes of ``slots`` (default all) decoded,
        in place (one float32 copy of them)."""
        g, s = (torch.from_numpy(a) for a in self._scale(np.arange(len(self._gt))))
        rel = self.box_rel if slots is None else self.box_rel[slots]
        return rel.to("cpu", torch.float32, copy=True).mul_(s).add_(g)

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as numpy arrays, slots ordered oldest pass first (what RUN/audit.npz holds)."""
        order = [(self.passes + k) % self.recent for k in range(self.recent)]
        out = {"conf": self.conf[order].float().cpu().numpy(), "box": self.boxes(order).numpy()}
        out["valid"] = self.valid[order].cpu().numpy()
        out["passes"] = np.array(self.passes)
        out.update({f"track_{k}": v for k, v in self.tracks.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        state = {name: getattr(self, name).cpu() for name in ("conf", "box_rel", "valid")}
        # tensors only, so torch.load(..., weights_only=True) reads checkpoints and state.pt
        state.update(passes=self.passes, tracks={k: torch.from_numpy(v.copy()) for k, v in self.tracks.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["conf"].shape) != tuple(self.conf.shape):
            raise PruneHooksError(
                f"[LabelAudit] state has shape {tuple(state['conf'].shape)}, expected {tuple(self.conf.shape)}"
            )
        if "box" in state:  # an earlier version's absolute float32 boxes
            rows = torch.arange(self.num_objects)
            state = {**state, "box_rel": torch.stack([self._encode(rows, b) for b in torch.as_tensor(state["box"])])}
        for name in ("conf", "box_rel", "valid"):
            getattr(self, name).copy_(torch.as_tensor(state[name]))
        self.passes = int(state["passes"])
        self._open = False
        self.tracks = {k: torch.as_tensor(v).numpy().copy() for k, v in state["tracks"].items()}


def _xywh(b: np.ndarray) -> str:
    return json.dumps(
        [round(float(b[0]), 2), round(float(b[1]), 2), round(float(b[2] - b[0]), 2), round(float(b[3] - b[1]), 2)]
    )


def label_issues(
    index,
    audit: dict[str, np.ndarray] | None,
    soft: np.ndarray | SoftMeans | None,
    learned_passes: np.ndarray | None,
    th: AuditThresholds = AuditThresholds(),
) -> list[tuple]:
    """The flags of one run, rows of ``LABEL_ISSUE_COLUMNS``, each kind sorted by score (highest first).

    Args:
        index: the run's CocoIndex.
        audit: :meth:`LabelAudit.arrays` (None: no bad_location / missing_box flags).
        soft: soft labels, ndarray[N, C + 1] or SoftMeans (None: no wrong_class / outlier flags).
        learned_passes: ndarray[N] (for outliers).
    """
    rows: list[tuple] = []
    gt = index.obj_boxes

    def obj_row(kind, r, cat="", sbox="", score=0.0):
        return (kind, int(index.ann_ids[r]), int(index.obj_image_ids[r]), int(index.obj_category_ids[r]),
                _xywh(gt[r]), cat, sbox, float(score))  # fmt: skip

    if soft is not None:
        wrong, cats, probs = suspects(soft, index.obj_category_ids, index.category_ids, th.tau)
        rows += sorted(
            (obj_row("wrong_class", r, int(c), "", p) for r, c, p in zip(wrong, cats, probs)), key=lambda x: -x[-1]
        )
        if learned_passes is not None:
            h = entropy(soft) / np.log(soft.num_columns if isinstance(soft, SoftMeans) else soft.shape[1])
            rows += sorted(
                (obj_row("outlier", r, "", "", h[r]) for r in outliers(soft, learned_passes, th.near_uniform)),
                key=lambda x: -x[-1],
            )
    if audit is not None and int(audit["passes"]) >= audit["conf"].shape[0]:
        full = audit["valid"].all(axis=0)
        cand = np.flatnonzero(full & (audit["conf"].min(axis=0) >= th.loc_conf))
        boxes = audit["box"][:, cand].astype(np.float64)  # [R, K, 4]
        mean = boxes.mean(axis=0)
        agree = np.min([_paired_iou(mean, b) for b in boxes], axis=0) if len(cand) else np.zeros(0)
        fit = _paired_iou(mean, gt[cand])
        ok = (agree >= th.loc_agree) & (fit >= NEAR_IOU) & (fit < th.loc_iou)
        pos = index.image_position()
        loc = []
        for r, m, f in zip(cand[ok].tolist(), mean[ok], fit[ok].tolist()):
            p = pos[int(index.obj_image_ids[r])]
            others = _np_iou(m[None], gt[int(index.offsets[p]) : int(index.offsets[p + 1])])[0]
            if f >= others.max():  # the suggestion fits this object best of its image
                score = float(audit["conf"][:, r].mean()) * (1.0 - f)
                loc.append(obj_row("bad_location", r, int(index.obj_category_ids[r]), _xywh(m), score))
        rows += sorted(loc, key=lambda x: -x[-1])
        full_mask = (1 << audit["conf"].shape[0]) - 1
        t_mean = audit["track_score_sum"] / np.maximum(audit["track_hits"], 1)
        seen = np.flatnonzero((audit["track_recent"] == full_mask) & (t_mean >= th.miss_conf))
        miss = []
        for j in seen.tolist():
            if not _exhaustive(index, int(audit["track_image"][j]), int(audit["track_category_id"][j])):
                continue  # a federated (LVIS) image whose labels say nothing, or say "absent", of that category
            box = audit["track_box_sum"][j] / audit["track_hits"][j]
            image_id = int(index.image_ids[audit["track_image"][j]])
            miss.append(
                ("missing_box", "", image_id, "", "", int(audit["track_category_id"][j]), _xywh(box), t_mean[j])
            )
        rows += sorted(miss, key=lambda x: -x[-1])
    return rows


def _exhaustive(index, position: int, category_id: int) -> bool:
    """Are the image's boxes of ``category_id`` all labelled? COCO: always. A federated image (LVIS: it carries
    ``not_exhaustive_category_ids`` or ``neg_category_ids``) only for a category it holds boxes of and does not list
    as not exhaustive; a category it lists in ``neg_category_ids`` was verified absent, so a confident detection of
    it there is the model's error, not a missing label."""
    image = index.images[position]
    if "not_exhaustive_category_ids" not in image and "neg_category_ids" not in image:
        return True
    if category_id in set(image.get("not_exhaustive_category_ids") or ()):
        return False
    a, b = int(index.offsets[position]), int(index.offsets[position + 1])
    return category_id in set(index.obj_category_ids[a:b].tolist())


CHANGE_COLUMNS = ("change", "ann_id", "image_id", "field", "old", "new", "score")


def clean_dataset(
    dataset: dict, issues: list[dict[str, str]], *, relabel: bool, ignore_bad_location: bool, add_missing: bool
) -> tuple[dict, list[tuple]]:
    """Apply the chosen kinds of ``issues`` (rows of label_issues.csv) to a copy of ``dataset``.

    relabel: wrong_class objects get the suggested category; ignore_bad_location: bad_location objects
    become ``iscrowd: 1`` (ignored as training targets by both frameworks); add_missing: each missing_box
    becomes a new annotation (ids after the file's largest, a rectangle polygon as segmentation).

    Returns:
        (the cleaned dataset, rows of ``CHANGE_COLUMNS``: one per change, in label_issues order).
    """
    out = dict(dataset)
    anns = [dict(a) for a in dataset["annotations"]]
    out["annotations"] = anns
    row_of = {int(a["id"]): i for i, a in enumerate(anns)}
    changes: list[tuple] = []
    next_id = max(row_of, default=0) + 1
    for k, issue in enumerate(issues, 2):  # line numbers of label_issues.csv
        kind = issue["kind"]
        if kind not in ISSUE_KINDS:
            raise PruneHooksError(f"label_issues.csv line {k}: kind must be one of {list(ISSUE_KINDS)}, got {kind!r}")
        if kind in ("wrong_class", "bad_location") and (relabel if kind == "wrong_class" else ignore_bad_location):
            ann = anns[_ann_row(row_of, issue, k)]
            field, new = (
                ("category_id", int(issue["suggested_category_id"])) if kind == "wrong_class" else ("iscrowd", 1)
            )
            changes.append(("relabel" if kind == "wrong_class" else "ignore", ann["id"], ann["image_id"], field,
                            ann.get(field, 0), new, issue["score"]))  # fmt: skip
            ann[field] = new
        elif kind == "missing_box" and add_missing:
            x, y, w, h = json.loads(issue["suggested_bbox"])
            ann = {
                "id": next_id,
                "image_id": int(issue["image_id"]),
                "category_id": int(issue["suggested_category_id"]),
                "bbox": [x, y, w, h],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }
            anns.append(ann)
            next_id += 1
            new = json.dumps({"category_id": ann["category_id"], "bbox": ann["bbox"]})
            changes.append(("add", ann["id"], ann["image_id"], "annotation", "", new, issue["score"]))
    return out, changes


def _ann_row(row_of: dict[int, int], issue: dict[str, str], line: int) -> int:
    try:
        return row_of[int(issue["ann_id"])]
    except (KeyError, ValueError):
        raise PruneHooksError(
            f"label_issues.csv line {line}: ann_id {issue['ann_id']!r} is not an annotation of the run's file"
        ) from None
