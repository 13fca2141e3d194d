"""VPS: per-object spread of matched IoU / confidence over scoring passes, and image scores."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from ..data.coco import CocoIndex, Detections
from ..errors import PruneHooksError
from .audit import unexplained
from .matching import cipa_match, learned, near_prediction
from .welford import Welford

__all__ = ["AGGREGATIONS", "VPSAccumulator", "cipa_pass", "PassMatch", "aggregate", "forgetting_scores", "rank_images"]

AGGREGATIONS = ("max", "mean", "sum")


class VPSAccumulator:
    """Running IoU / confidence statistics of N objects over scoring passes, and forgetting counters.

    One Welford state of shape (N, 2) (column 0: IoU, column 1: confidence) plus the number of
    completed passes, so a resumed run knows what it already holds; per object also the passes in
    which it was learned (:func:`~prune_hooks.core.scoring.matching.learned`), its forgetting events
    (learned at a pass, not learned at the next pass that saw it) and whether it was learned at the
    last pass that saw it. 4 + 2 * 2 * 4 + 2 + 2 + 1 = 25 bytes per object (counters of at most
    ``MAX_PASSES`` passes).
    """

    MAX_PASSES = 2**15 - 1  # the int16 counters' range

    def __init__(self, num_objects: int, device: torch.device | str | None = None) -> None:
        self.stats = Welford(num_objects, shape=(2,), device=device)
        self.learned_passes = torch.zeros(num_objects, dtype=torch.int16, device=device)
        self.forget_events = torch.zeros(num_objects, dtype=torch.int16, device=device)
        self.learned_last = torch.zeros(num_objects, dtype=torch.bool, device=device)
        self.passes = 0

    @property
    def num_objects(self) -> int:
        return self.stats.num

    def update(self, indices: torch.Tensor, iou: torch.Tensor, conf: torch.Tensor, learned: torch.Tensor) -> None:
        """Record one pass's CIPA IoU/confidence and learned flag for ``indices`` (Tensor[K] each)."""
        self.stats.update(indices, torch.stack([torch.as_tensor(iou), torch.as_tensor(conf)], dim=1))
        idx = torch.as_tensor(indices, device=self.stats.device).long()
        now = torch.as_tensor(learned, device=idx.device).bool()
        self.forget_events[idx] += (self.learned_last[idx] & ~now).to(torch.int16)
        self.learned_passes[idx] += now.to(torch.int16)
        self.learned_last[idx] = now

    def end_pass(self) -> None:
        if self.passes >= self.MAX_PASSES:
            raise PruneHooksError(f"[VPSAccumulator] at most {self.MAX_PASSES} scoring passes a run (PERIOD thins)")
        self.passes += 1

    def merge(self, other: VPSAccumulator) -> None:
        """Combine with another rank's accumulator that scored other objects over the same passes."""
        if other.passes != self.passes:
            raise PruneHooksError(f"[VPSAccumulator] cannot merge {other.passes} passes into {self.passes}")
        self.stats.merge(other.stats)
        self.learned_passes += other.learned_passes.to(self.learned_passes.device)
        self.forget_events += other.forget_events.to(self.forget_events.device)
        self.learned_last |= other.learned_last.to(self.learned_last.device)

    def vps(self) -> dict[str, np.ndarray]:
        """ndarray[N] each: ``passes``, ``iou_mean, iou_std, conf_mean, conf_std`` (float64),
        ``learned_passes``, ``forget_events``, ``learned_last`` (int)."""
        mean = self.stats.means().double().cpu().numpy()
        std = self.stats.std().double().cpu().numpy()
        return {
            "passes": self.stats.count.cpu().numpy(),
            "iou_mean": mean[:, 0],
            "iou_std": std[:, 0],
            "conf_mean": mean[:, 1],
            "conf_std": std[:, 1],
            "learned_passes": self.learned_passes.cpu().numpy().astype(np.int64),
            "forget_events": self.forget_events.cpu().numpy().astype(np.int64),
            "learned_last": self.learned_last.cpu().numpy().astype(np.int64),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "stats": self.stats.state_dict(),
            "learned_passes": self.learned_passes.cpu(),
            "forget_events": self.forget_events.cpu(),
            "learned_last": self.learned_last.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        for name in ("learned_passes", "forget_events", "learned_last"):
            value = torch.as_tensor(state[name])
            if value.shape != (self.num_objects,):
                raise PruneHooksError(
                    f"[VPSAccumulator] state {name} has shape {tuple(value.shape)}, expected ({self.num_objects},)"
                )
            getattr(self, name).copy_(value)
        self.passes = int(state["passes"])


def forgetting_scores(vps: dict[str, np.ndarray]) -> np.ndarray:
    """Object forgetting score: forgetting events; never-learned objects (seen, never learned) +inf."""
    score = vps["forget_events"].astype(np.float64)
    score[(vps["learned_passes"] == 0) & (vps["passes"] > 0)] = np.inf
    score[vps["passes"] == 0] = np.nan
    return score


class PassMatch(NamedTuple):
    """One pass's CIPA matches in object order, and its unexplained detections (core.scoring.audit)."""

    iou: np.ndarray  # [N]
    conf: np.ndarray  # [N]
    learned: np.ndarray  # [N] bool
    near_conf: np.ndarray  # [N] the most confident prediction of the object's class near it (0: none)
    near_box: np.ndarray  # [N, 4] its box, xyxy (zeros: none)
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image position, category id, box, score


def cipa_pass(index: CocoIndex, dets: Detections) -> PassMatch:
    """CIPA-match every object of ``index`` to the pass's detections (what the hooks do image by image)."""
    n = index.num_objects
    iou, conf, ok, near_conf, near_box = np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros((n, 4))
    boxes_t = torch.from_numpy(index.obj_boxes)
    labels_t = torch.from_numpy(index.obj_category_ids)
    det_boxes = torch.from_numpy(dets.boxes)
    det_scores = torch.from_numpy(dets.scores)
    det_labels = torch.from_numpy(dets.category_ids)
    cands: list[tuple[np.ndarray, ...]] = []
    for i in range(index.num_images):
        a, b = index.offsets[i], index.offsets[i + 1]
        c, d = dets.offsets[i], dets.offsets[i + 1]
        odd = unexplained(boxes_t[a:b].float(), det_boxes[c:d].float(), det_scores[c:d].float()).numpy()
        if odd.any():
            cands.append(
                (np.full(int(odd.sum()), i), dets.category_ids[c:d][odd], dets.boxes[c:d][odd], dets.scores[c:d][odd])
            )
        if a == b:
            continue
        m_iou, m_conf, m_index = cipa_match(
            boxes_t[a:b], labels_t[a:b], det_boxes[c:d], det_scores[c:d], det_labels[c:d]
        )
        iou[a:b] = m_iou.numpy()
        conf[a:b] = m_conf.numpy()
        ok[a:b] = learned(labels_t[a:b], det_labels[c:d], m_index, m_iou).numpy()
        n_conf, n_box = near_prediction(boxes_t[a:b], labels_t[a:b], det_boxes[c:d], det_scores[c:d], det_labels[c:d])
        near_conf[a:b], near_box[a:b] = n_conf.numpy(), n_box.numpy()
    if cands:
        candidates = tuple(np.concatenate(t) for t in zip(*cands))
    else:
        candidates = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))
    return PassMatch(iou, conf, ok, near_conf, near_box, candidates)


def aggregate(values: np.ndarray, offsets: np.ndarray, how: str) -> np.ndarray:
    """Image score from its objects' scores.

    Args:
        values: ndarray[N], object scores grouped by image; NaN = object without a score (ignored).
        offsets: ndarray[I + 1], objects of image i are ``values[offsets[i]:offsets[i + 1]]``.
        how: ``max`` | ``mean`` | ``sum``.

    Returns:
        ndarray[I] float64; NaN for an image without scored objects.
    """
    if how not in AGGREGATIONS:
        raise PruneHooksError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    values = np.asarray(values, dtype=np.float64)
    num_images = len(offsets) - 1
    owner = np.repeat(np.arange(num_images), np.diff(offsets))
    ok = ~np.isnan(values)
    owner, v = owner[ok], values[ok]
    n = np.bincount(owner, minlength=num_images)
    if how == "max":
        out = np.full(num_images, -np.inf)
        np.maximum.at(out, owner, v)
    else:
        out = np.bincount(owner, weights=v, minlength=num_images).astype(np.float64)
        if how == "mean":
            out = out / np.maximum(n, 1)
    out[n == 0] = np.nan
    return out


def rank_images(image_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Image ids best first: highest score first, ties by lower image id; NaN (no score) last by id.

    Args:
        image_ids: ndarray[I] int.
        scores: ndarray[I] float, NaN for images without a score.
    """
    image_ids = np.asarray(image_ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(scores)
    # lexsort: last key is primary. Scored before unscored, then score descending, then id ascending.
    order = np.lexsort((image_ids, np.where(missing, 0.0, -scores), missing))
    return image_ids[order]
