"""Per-image per-class prototypes: the mean RoI feature of an image's GT boxes of one class (CSOD).

``prototypes.npz`` holds ``image_id`` int64[P], ``category_id`` int64[P] and ``feature`` float32[P, D],
rows in the annotation file's image order, then ascending category id.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .coco import CocoIndex
from .errors import PruneHooksError
from .io import atomic_write_bytes

__all__ = ["PrototypeCollector", "save_prototypes", "load_prototypes", "image_features"]


class PrototypeCollector:
    """Collects prototypes image by image during one pass (on the CPU: they are written, not updated)."""

    def __init__(self, index: CocoIndex) -> None:
        self.index = index
        self._pos = index.image_position()
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, image_id: int, features: torch.Tensor) -> None:
        """``features`` Tensor[n, D]: one row per object of the image, in the index's object order."""
        pos = self._pos[int(image_id)]
        a, b = int(self.index.offsets[pos]), int(self.index.offsets[pos + 1])
        if features.shape[0] != b - a:
            raise PruneHooksError(f"image {image_id}: {features.shape[0]} feature rows for {b - a} objects")
        if a == b or pos in self._rows:
            return
        cats = self.index.obj_category_ids[a:b]
        uniq, inverse = np.unique(cats, return_inverse=True)
        feats = features.detach().float()
        inv = torch.as_tensor(inverse, device=feats.device)
        sums = torch.zeros(len(uniq), feats.shape[1], device=feats.device).index_add_(0, inv, feats)
        counts = torch.bincount(inv, minlength=len(uniq)).to(feats.dtype)
        self._rows[pos] = (uniq.astype(np.int64), (sums / counts[:, None]).cpu().numpy())

    def __len__(self) -> int:
        return len(self._rows)

    def arrays(self, all_gather: Callable[[Any], list[Any]] | None = None) -> dict[str, np.ndarray]:
        """All ranks' prototypes (every rank gets them) as the npz arrays, in file order."""
        parts = all_gather(self._rows) if all_gather is not None else [self._rows]
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part in parts:
            for pos, value in part.items():
                rows.setdefault(pos, value)
        order = sorted(rows)
        if not order:
            return {
                "image_id": np.zeros(0, np.int64),
                "category_id": np.zeros(0, np.int64),
                "feature": np.zeros((0, 0), np.float32),
            }
        return {
            "image_id": np.concatenate([np.full(len(rows[p][0]), self.index.image_ids[p], np.int64) for p in order]),
            "category_id": np.concatenate([rows[p][0] for p in order]),
            "feature": np.concatenate([rows[p][1] for p in order]).astype(np.float32),
        }


def save_prototypes(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    buf = io.BytesIO()
    np.savez(buf, image_id=arrays["image_id"], category_id=arrays["category_id"], feature=arrays["feature"])
    return atomic_write_bytes(path, buf.getvalue())


def load_prototypes(path: str | os.PathLike, index: CocoIndex | None = None) -> dict[str, np.ndarray]:
    """Read and validate ``prototypes.npz`` (against ``index`` when given)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("image_id", "category_id", "feature") if k not in z.files]
            if missing:
                raise PruneHooksError(f"{path}: missing arrays {missing} (has {z.files})")
            image_id, category_id, feature = z["image_id"], z["category_id"], z["feature"]
    except FileNotFoundError:
        raise PruneHooksError(
            f"prototypes not found: {path} (written by the hooks when 'csod' is among the methods)"
        ) from None
    except (ValueError, OSError) as e:
        raise PruneHooksError(f"{path}: not a readable npz file ({e})") from None
    if feature.ndim != 2 or image_id.shape != (feature.shape[0],) or category_id.shape != (feature.shape[0],):
        raise PruneHooksError(
            f"{path}: mismatched array lengths: image_id {image_id.shape}, category_id {category_id.shape}, feature "
            f"{feature.shape}"
        )
    if not np.issubdtype(image_id.dtype, np.integer) or not np.issubdtype(category_id.dtype, np.integer):
        raise PruneHooksError(
            f"{path}: image_id and category_id must be integers, got {image_id.dtype}, {category_id.dtype}"
        )
    feature = feature.astype(np.float32, copy=False)
    bad = ~np.isfinite(feature).all(axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise PruneHooksError(
            f"{path}: feature row {r} (image {image_id[r]}, category {category_id[r]}) has NaN or inf "
            f"({int(bad.sum())} rows)"
        )
    zero = ~(feature != 0).any(axis=1)
    if zero.any():
        r = int(np.flatnonzero(zero)[0])
        raise PruneHooksError(
            f"{path}: feature row {r} (image {image_id[r]}, category {category_id[r]}) is a zero vector: its cosine "
            f"is undefined ({int(zero.sum())} rows)"
        )
    if index is not None:
        unknown = np.setdiff1d(image_id, index.image_ids)
        if unknown.size:
            raise PruneHooksError(f"{path}: image ids not in {index.path}: {unknown[:5].tolist()}")
        unknown = np.setdiff1d(category_id, index.category_ids)
        if unknown.size:
            raise PruneHooksError(f"{path}: category ids not in {index.path}: {unknown[:5].tolist()}")
    return {"image_id": image_id.astype(np.int64), "category_id": category_id.astype(np.int64), "feature": feature}


def image_features(protos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(image ids ndarray[I], features ndarray[I, D]): mean of each image's unit prototypes."""
    ids, inverse = np.unique(protos["image_id"], return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    unit = protos["feature"][order]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    starts = np.searchsorted(inverse[order], np.arange(len(ids)))
    sums = np.add.reduceat(unit, starts, axis=0, dtype=np.float64)
    return ids, (sums / np.bincount(inverse)[:, None]).astype(np.float32)
