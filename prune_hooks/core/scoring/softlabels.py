"""Soft labels: the running mean of the class distribution the box predictor gives on each GT box.

Columns are the annotation file's categories in ascending id order, then background (docs/methods.md,
"Soft labels and entropy"). Importance of an object = entropy of its soft label; a suspected mislabel is an
object whose soft label's argmax is another foreground class with mean probability >= ``tau``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import PruneHooksError

__all__ = ["SoftLabels", "entropy", "suspects", "outliers", "SUSPECT_COLUMNS"]

SUSPECT_COLUMNS = ("ann_id", "image_id", "category_id", "suspected_category_id", "mean_prob")


class SoftLabels:
    """Per-object running mean of K-way distributions: a sum Tensor[N, K] (float32) and a count Tensor[N]."""

    def __init__(self, num_objects: int, num_columns: int, device: torch.device | str | None = None) -> None:
        self.sum = torch.zeros(num_objects, num_columns, dtype=torch.float32, device=device)
        self.count = torch.zeros(num_objects, dtype=torch.int32, device=device)

    @property
    def num_columns(self) -> int:
        return int(self.sum.shape[1])

    def update(self, indices: torch.Tensor, probs: torch.Tensor) -> None:
        """Add one distribution per object of ``indices`` (distinct), ``probs`` Tensor[K_idx, K]."""
        idx = torch.as_tensor(indices, device=self.sum.device).long()
        probs = torch.as_tensor(probs, device=self.sum.device, dtype=torch.float32)
        if probs.shape != (idx.numel(), self.num_columns):
            raise PruneHooksError(
                f"[SoftLabels] probs must have shape {(idx.numel(), self.num_columns)}, got {tuple(probs.shape)}"
            )
        self.sum.index_add_(0, idx, probs)
        self.count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))

    def merge(self, other: SoftLabels) -> None:
        self.sum += other.sum.to(self.sum.device)
        self.count += other.count.to(self.count.device)

    def means(self) -> np.ndarray:
        """ndarray[N, K] float64; rows of objects never recorded are NaN."""
        s = self.sum.double().cpu().numpy()
        c = self.count.cpu().numpy()[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def state_dict(self) -> dict[str, Any]:
        return {"sum": self.sum.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["sum"].shape) != tuple(self.sum.shape):
            raise PruneHooksError(
                f"[SoftLabels] state has shape {tuple(state['sum'].shape)}, expected {tuple(self.sum.shape)}"
            )
        self.sum.copy_(state["sum"])
        self.count.copy_(state["count"])


def entropy(soft: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of ``soft`` ndarray[N, K]; NaN rows stay NaN."""
    p = np.clip(np.asarray(soft, dtype=np.float64), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    out = terms.sum(axis=1)
    out[np.isnan(p).any(axis=1)] = np.nan
    return out


def suspects(
    soft: np.ndarray, obj_category_ids: np.ndarray, category_ids: np.ndarray, tau: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Suspected mislabels: the soft label's argmax is another foreground class with mean prob >= ``tau``.

    Args:
        soft: ndarray[N, C + 1], columns ``category_ids`` then background.
        obj_category_ids: ndarray[N], the annotated class of each object.
        category_ids: ndarray[C], ascending.

    Returns:
        (rows ndarray[S] int, suspected category id ndarray[S], its mean probability ndarray[S]).
    """
    if not 0 < tau <= 1:
        raise PruneHooksError(f"suspect threshold tau must be in (0, 1], got {tau}")
    soft = np.asarray(soft, dtype=np.float64)
    valid = ~np.isnan(soft).any(axis=1)
    top = np.argmax(np.where(valid[:, None], soft, -1.0), axis=1)
    prob = soft[np.arange(len(soft)), top]
    fg = top < len(category_ids)
    top_cat = np.where(fg, np.asarray(category_ids)[np.minimum(top, len(category_ids) - 1)], -1)
    rows = np.flatnonzero(valid & fg & (top_cat != obj_category_ids) & (prob >= tau))
    return rows, top_cat[rows], prob[rows]


def outliers(soft: np.ndarray, learned_passes: np.ndarray, near_uniform: float = 0.9) -> np.ndarray:
    """Rows of objects never learned whose soft label is near uniform (entropy >= ``near_uniform`` * log K)."""
    h = entropy(soft)
    k = soft.shape[1]
    return np.flatnonzero((learned_passes == 0) & ~np.isnan(h) & (h >= near_uniform * np.log(k)))
