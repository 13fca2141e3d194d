"""Soft labels: the running mean of the class distribution the box predictor gives on each GT box.

Columns are the annotation file's categories in ascending id order, then background (docs/methods.md,
"Soft labels and entropy"). Importance of an object = entropy of its soft label; a suspected mislabel is an
object whose soft label's argmax is another foreground class with mean probability >= ``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import PruneHooksError
from ..io import atomic_writer

__all__ = [
    "DEFAULT_TOP_K",
    "SoftLabels",
    "SoftMeans",
    "entropy",
    "suspects",
    "outliers",
    "save_soft_labels",
    "load_soft_labels",
    "SUSPECT_COLUMNS",
]

SUSPECT_COLUMNS = ("ann_id", "image_id", "category_id", "suspected_category_id", "mean_prob")


DEFAULT_TOP_K = 8
CHUNK = 1 << 20  # rows of one apply step


class SoftLabels:
    """Per-object running mean of K-way distributions, in memory that does not grow with K.

    Each object keeps the ``top_k`` columns of largest accumulated probability (``cols`` int16, ``mass``
    float32 sums), the mass of every other column in one number (``rest``, read as spread evenly over
    them), two sums that describe the rest's shape (for the entropy) and its number of distributions
    (``count``): 6·k + 14 bytes an object (k = 8: 62). A pass brings each object's 2·k largest columns and the
    mass of the others (:meth:`reduce`, whatever rank scored it) and adds that to the picture: a kept column adds
    its probability (its even share of the columns not brought, if it is not among them), a brought column not
    kept enters with its probability plus its even share of the rest, and the k largest stay kept; the others'
    mass is the new rest. With ``top_k`` >= K every column is kept and the sums are the dense ones, float for float.
    """

    def __init__(
        self,
        num_objects: int,
        num_columns: int,
        device: torch.device | str | None = None,
        top_k: int = DEFAULT_TOP_K,
    ) -> None:
        if top_k < 1:
            raise PruneHooksError(f"[SoftLabels] top_k must be >= 1, got {top_k}")
        self.num_columns = int(num_columns)
        k = min(int(top_k), self.num_columns)
        kind = torch.int16 if self.num_columns < 2**15 else torch.int32
        self.cols = torch.full((num_objects, k), -1, dtype=kind, device=device)
        self.mass = torch.zeros(num_objects, k, dtype=torch.float32, device=device)
        self.rest = torch.zeros(num_objects, dtype=torch.float32, device=device)
        # the shape of the rest: sums over passes of its mass r and of r·(its normalized entropy) in that pass
        self.rest_r = torch.zeros(num_objects, dtype=torch.float32, device=device)
        self.rest_rh = torch.zeros(num_objects, dtype=torch.float32, device=device)
        self.count = torch.zeros(num_objects, dtype=torch.int16, device=device)

    @property
    def top_k(self) -> int:
        return int(self.cols.shape[1])

    @property
    def sent(self) -> int:
        """Columns of a pass's distribution :meth:`reduce` keeps: the 2·k largest (all when K <= 2·k)."""
        return min(2 * self.top_k, self.num_columns)

    @property
    def packed_width(self) -> int:
        """Columns of :meth:`reduce`'s output."""
        return 2 * self.sent + 3

    def reduce(self, probs: torch.Tensor) -> torch.Tensor:
        """One pass's distributions ``probs`` Tensor[n, K] in O(k) numbers a row, whatever the state:
        Tensor[n, 2m + 3] = (the m = :attr:`sent` largest columns, their probabilities, the row's total, the
        mass and -sum p·log p of the other columns). Stateless, so any rank can reduce an object's row and
        send it to the rank that keeps the object."""
        probs = torch.as_tensor(probs, device=self.mass.device, dtype=torch.float32)
        if probs.ndim != 2 or probs.shape[1] != self.num_columns:
            raise PruneHooksError(
                f"[SoftLabels] probs must have shape (n, {self.num_columns}), got {tuple(probs.shape)}"
            )
        vals, cols = probs.topk(self.sent, dim=1)
        total = probs.sum(1, keepdim=True)
        h_all = _plogp(probs).sum(1, keepdim=True)
        h_sent = _plogp(vals).sum(1, keepdim=True)
        unsent = (total - vals.clamp(min=0).sum(1, keepdim=True)).clamp(min=0)
        return torch.cat([cols.float(), vals, total, unsent, (h_all - h_sent).clamp(min=0)], 1)

    def apply(self, indices: torch.Tensor, packed: torch.Tensor) -> None:
        """Add :meth:`reduce`'s rows to the objects ``indices`` (distinct), ``CHUNK`` rows at a time (bounded
        temporaries however many objects a pass holds)."""
        idx = torch.as_tensor(indices, device=self.mass.device).long()
        packed = torch.as_tensor(packed, device=self.mass.device, dtype=torch.float32)
        if packed.shape != (idx.numel(), self.packed_width):
            raise PruneHooksError(
                f"[SoftLabels] packed rows must have shape {(idx.numel(), self.packed_width)}, got "
                f"{tuple(packed.shape)}"
            )
        for a in range(0, idx.numel(), CHUNK):
            self._apply(idx[a : a + CHUNK], packed[a : a + CHUNK])

    def _apply(self, idx: torch.Tensor, packed: torch.Tensor) -> None:
        k, m = self.top_k, self.sent
        p_cols, p_vals = packed[:, :m].long(), packed[:, m : 2 * m]
        total, unsent, h_un = packed[:, 2 * m], packed[:, 2 * m + 1], packed[:, 2 * m + 2]
        cols, mass, rest = self.cols[idx].long(), self.mass[idx], self.rest[idx]
        before = mass.sum(1) + rest
        has = cols >= 0
        # the pass's probability of each kept column: sent, or its even share of the columns not sent
        share = unsent / max(self.num_columns - m, 1)
        match = (cols[:, :, None] == p_cols[:, None, :]) & has[:, :, None]
        in_pass = match.any(2)
        p_kept = torch.where(in_pass, (match * p_vals[:, None, :]).sum(2), share[:, None]) * has
        # a sent column not kept enters with its probability plus its even share of the rest so far
        free = (self.num_columns - has.sum(1)).clamp(min=1)
        new = ~((p_cols[:, :, None] == cols[:, None, :]) & has[:, None, :]).any(2)
        cand_v = torch.where(new, p_vals + (rest / free)[:, None], float("-inf"))
        new_mass, new_cols, pos = _top(torch.cat([mass + p_kept, cand_v], 1), torch.cat([cols, p_cols], 1), k)
        # this pass's mass and entropy outside the columns kept now: the shape of the rest
        p_all = torch.cat([p_kept, torch.where(new, p_vals, 0.0)], 1)
        r_pass = (total - (p_all.gather(1, pos.clamp(min=0)) * (pos >= 0)).sum(1)).clamp(min=0)
        sent_kept = (p_cols[:, :, None] == new_cols[:, None, :]).any(2)
        unsent_kept = ((pos >= 0) & (pos < k) & ~in_pass.gather(1, pos.clamp(min=0, max=k - 1))).sum(1)
        h_pass = (_plogp(torch.where(sent_kept, 0.0, p_vals)).sum(1) + h_un - unsent_kept * _plogp(share)).clamp(min=0)
        self.rest_r[idx] += r_pass
        self.rest_rh[idx] += h_pass + r_pass * torch.log(r_pass.clamp(min=1e-30))  # r·H(rest / r)
        self.cols[idx] = new_cols.to(self.cols.dtype)
        self.mass[idx] = new_mass
        self.rest[idx] = (before + total - new_mass.sum(1)).clamp(min=0)
        self.count[idx] += 1

    def update(self, indices: torch.Tensor, probs: torch.Tensor) -> None:
        """Add one distribution per object of ``indices`` (distinct), ``probs`` Tensor[n, K]."""
        self.apply(indices, self.reduce(probs))

    def merge(self, other: SoftLabels) -> None:
        """Add another state of the same objects (e.g. another rank's): columns kept by both add up."""
        if other.num_columns != self.num_columns or other.cols.shape != self.cols.shape:
            raise PruneHooksError("[SoftLabels] cannot merge states of other shapes")
        cols = torch.cat([self.cols.long(), other.cols.long().to(self.cols.device)], 1)
        mass = torch.cat([self.mass, other.mass.to(self.mass.device)], 1)
        order = torch.argsort(torch.where(cols >= 0, cols, self.num_columns), dim=1, stable=True)
        cols, mass = cols.gather(1, order), mass.gather(1, order)
        same = (cols[:, 1:] == cols[:, :-1]) & (cols[:, 1:] >= 0)  # a column kept by both states
        mass[:, :-1] += torch.where(same, mass[:, 1:], 0.0)
        cols[:, 1:] = torch.where(same, -1, cols[:, 1:])
        total = self.mass.sum(1) + self.rest + (other.mass.sum(1) + other.rest).to(self.rest.device)
        new_mass, new_cols, _ = _top(mass, cols, self.top_k)
        self.rest_r += other.rest_r.to(self.rest_r.device)
        self.rest_rh += other.rest_rh.to(self.rest_rh.device)
        self.cols.copy_(new_cols.to(self.cols.dtype))
        self.mass.copy_(new_mass)
        self.rest.copy_((total - new_mass.sum(1)).clamp(min=0))
        self.count += other.count.to(self.count.device)

    def means(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """ndarray[n, K] float64 of ``rows`` (default all: N·K values, for small K), the columns not kept
        sharing ``rest`` evenly; rows of objects never recorded are NaN."""
        return self.top().dense(rows)

    def top(self) -> SoftMeans:
        """The running means as kept columns (ascending column order in each row) and the rest."""
        count = self.count.cpu().numpy().astype(np.float64)
        n, k = self.cols.shape
        cols, probs = np.empty((n, k), np.int64), np.empty((n, k), np.float64)
        for a in range(0, n, CHUNK):  # bounded temporaries: the sort order of a chunk of rows at a time
            c = self.cols[a : a + CHUNK].cpu().numpy().astype(np.int64)
            order = np.argsort(np.where(c >= 0, c, self.num_columns), axis=1, kind="stable")
            cols[a : a + CHUNK] = np.take_along_axis(c, order, 1)
            mass = np.take_along_axis(self.mass[a : a + CHUNK].cpu().numpy(), order, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                probs[a : a + CHUNK] = mass / count[a : a + CHUNK, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            rest = self.rest.double().cpu().numpy() / count
            shape = self.rest_rh.double().cpu().numpy() / self.rest_r.double().cpu().numpy()
        seen = count > 0
        probs[~seen], rest[~seen] = np.nan, np.nan
        return SoftMeans(cols, probs, rest, self.num_columns, np.where(np.isfinite(shape), shape, np.nan))

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_columns": self.num_columns,
            "cols": self.cols.cpu(),
            "mass": self.mass.cpu(),
            "rest": self.rest.cpu(),
            "rest_r": self.rest_r.cpu(),
            "rest_rh": self.rest_rh.cpu(),
            "count": self.count.cpu(),
        }

    @staticmethod
    def columns_of(state: dict[str, Any]) -> int:
        """K of a :meth:`state_dict` (also of an earlier version's dense one)."""
        return int(state["num_columns"]) if "num_columns" in state else int(state["sum"].shape[1])

    @classmethod
    def of_means(cls, soft: SoftMeans, top_k: int) -> SoftLabels:
        """A state holding ``soft`` as one distribution per recorded row (for averaging written soft labels)."""
        out = cls(len(soft), soft.num_columns, top_k=top_k)
        seen = ~np.isnan(soft.rest)
        k = min(soft.cols.shape[1], out.top_k)
        order = np.argsort(-np.where(soft.cols >= 0, np.nan_to_num(soft.probs, nan=0.0), -1.0), axis=1, kind="stable")
        cols = np.take_along_axis(soft.cols, order, 1)[:, :k]
        probs = np.take_along_axis(np.nan_to_num(soft.probs, nan=0.0), order, 1)[:, :k]
        dropped = np.nan_to_num(soft.probs, nan=0.0).sum(1) - probs.sum(1)
        out.cols[:, :k] = torch.from_numpy(np.where(seen[:, None], cols, -1)).to(out.cols.dtype)
        out.mass[:, :k] = torch.from_numpy(np.where(seen[:, None] & (cols >= 0), probs, 0.0)).float()
        out.rest.copy_(torch.from_numpy(np.where(seen, np.nan_to_num(soft.rest) + dropped, 0.0)).float())
        if soft.rest_entropy is not None:
            known = seen & np.isfinite(soft.rest_entropy)
            out.rest_r.copy_(torch.from_numpy(np.where(known, np.nan_to_num(soft.rest), 0.0)).float())
            out.rest_rh.copy_(torch.from_numpy(np.where(known, np.nan_to_num(soft.rest * soft.rest_entropy), 0.0)))
        out.count.copy_(torch.from_numpy(seen.astype(np.int16)))
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "sum" in state:  # a dense state of an earlier version: its top_k columns and the rest
            state = _from_dense_sums(torch.as_tensor(state["sum"]), torch.as_tensor(state["count"]), self.top_k)
        n, k = tuple(state["cols"].shape)
        if n != self.cols.shape[0] or (k != self.top_k):
            raise PruneHooksError(
                f"[SoftLabels] state has shape {(n, k)} (objects, kept columns), expected {tuple(self.cols.shape)}"
            )
        self.cols.copy_(state["cols"])
        self.mass.copy_(state["mass"])
        self.rest.copy_(state["rest"])
        self.rest_r.copy_(state["rest_r"])
        self.rest_rh.copy_(state["rest_rh"])
        self.count.copy_(state["count"])


def _plogp(p: torch.Tensor) -> torch.Tensor:
    """-p·log p elementwise (0 where p <= 0)."""
    p = p.clamp(min=0)
    return -p * torch.log(p.clamp(min=1e-30))


def _top(mass: torch.Tensor, cols: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row among those with a column (>= 0, finite): (mass, cols, their
    positions in the row; -1 where none); 0 / -1 pad."""
    live = (cols >= 0) & torch.isfinite(mass)
    vals, pos = torch.where(live, mass, float("-inf")).topk(k, dim=1)
    cols = cols.gather(1, pos)
    ok = torch.isfinite(vals)
    return torch.where(ok, vals, 0.0), torch.where(ok, cols, -1), torch.where(ok, pos, -1)


def _from_dense_sums(total: torch.Tensor, count: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    mass, cols = total.float().topk(min(k, total.shape[1]), dim=1)
    seen = (count > 0)[:, None]
    kind = torch.int16 if total.shape[1] < 2**15 else torch.int32
    return {
        "cols": torch.where(seen, cols, -1).to(kind),
        "mass": torch.where(seen, mass, 0.0),
        "rest": (total.float().sum(1) - mass.sum(1)).clamp(min=0),
        "rest_r": torch.zeros(total.shape[0]),
        "rest_rh": torch.zeros(total.shape[0]),
        "count": count.to(torch.int16),
    }


@dataclass
class SoftMeans:
    """Soft labels as written and read: per object its kept columns (ascending, -1 = none) and their mean
    probabilities, and ``rest`` = the mean mass of every other column; NaN rows: never recorded."""

    cols: np.ndarray  # [N, k] int64
    probs: np.ndarray  # [N, k] float64
    rest: np.ndarray  # [N] float64
    num_columns: int
    rest_entropy: np.ndarray | None = None  # [N] the rest's normalized entropy as seen in the passes (NaN: unknown)

    @classmethod
    def from_dense(cls, probs: np.ndarray) -> SoftMeans:
        """Every column kept (the exact form)."""
        probs = np.asarray(probs, dtype=np.float64)
        n, k = probs.shape
        rest = np.where(np.isnan(probs).any(axis=1), np.nan, 0.0)
        return cls(np.tile(np.arange(k), (n, 1)), probs.copy(), rest, k)

    @property
    def exact(self) -> bool:
        """Every column of every recorded row is kept: :meth:`dense` is the exact running mean."""
        return self.cols.shape[1] >= self.num_columns

    def __len__(self) -> int:
        return len(self.rest)

    def dense(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """ndarray[n, K] of ``rows``; columns not kept share ``rest`` evenly (the most even completion)."""
        cols, probs, rest = self.cols[rows], self.probs[rows], self.rest[rows]
        kept = (cols >= 0).sum(1)
        free = self.num_columns - kept
        with np.errstate(invalid="ignore", divide="ignore"):
            fill = np.where(free > 0, rest / np.maximum(free, 1), 0.0)
        out = np.repeat(fill[:, None], self.num_columns, axis=1)
        r, j = np.nonzero(cols >= 0)
        out[r, cols[r, j]] = probs[r, j]
        return out


def save_soft_labels(path, ann_ids: np.ndarray, columns: np.ndarray, soft: SoftMeans) -> None:
    """RUN/soft_labels.npz: ``probs`` [N, K] when every column is kept (the exact means), else the kept
    columns ``top_columns`` [N, k] (-1 = none), ``top_probs`` [N, k] and ``rest`` [N]; with ``ann_id`` and
    ``columns`` (category ids, -1 = background) either way, and ``rest_entropy`` [N] (the rest's normalized
    entropy as the passes saw it) in the top-k form."""
    with atomic_writer(path) as f:
        _savez_soft(f, ann_ids, columns, soft)


def _savez_soft(f, ann_ids: np.ndarray, columns: np.ndarray, soft: SoftMeans) -> None:
    if soft.exact:
        np.savez(f, ann_id=ann_ids, columns=columns, probs=soft.dense().astype(np.float32))
    else:
        kind = np.int16 if soft.num_columns < 2**15 else np.int32
        shape = soft.rest_entropy if soft.rest_entropy is not None else np.full(len(soft), np.nan)
        np.savez(f, ann_id=ann_ids, columns=columns, top_columns=soft.cols.astype(kind),
                 top_probs=soft.probs.astype(np.float32), rest=soft.rest.astype(np.float32),
                 rest_entropy=shape.astype(np.float32))  # fmt: skip


def load_soft_labels(path) -> tuple[np.ndarray, np.ndarray, SoftMeans]:
    """(ann_id, columns, soft labels) of a soft_labels.npz in either form of :func:`save_soft_labels`."""
    with np.load(path) as z:
        ann, columns = z["ann_id"], z["columns"]
        if "probs" in z.files:
            return ann, columns, SoftMeans.from_dense(z["probs"])
        cols, probs, rest = z["top_columns"].astype(np.int64), z["top_probs"], z["rest"]
        shape = z["rest_entropy"].astype(np.float64) if "rest_entropy" in z.files else None
    return ann, columns, SoftMeans(cols, probs.astype(np.float64), rest.astype(np.float64), len(columns), shape)


def _as_means(soft: np.ndarray | SoftMeans) -> SoftMeans:
    return soft if isinstance(soft, SoftMeans) else SoftMeans.from_dense(soft)


def entropy(soft: np.ndarray | SoftMeans) -> np.ndarray:
    """Entropy (nats) of each row of ``soft`` (ndarray[N, K], or kept columns + rest: the rest counted with its
    normalized entropy as the passes saw it, at most an even spread over the columns not kept); NaN rows stay NaN."""
    if not isinstance(soft, SoftMeans):
        return _entropy(np.asarray(soft, dtype=np.float64))
    out = np.empty(len(soft))
    for a in range(0, len(soft), CHUNK):  # bounded temporaries: a chunk of rows at a time
        part = slice(a, a + CHUNK)
        out[part] = _entropy(np.where(soft.cols[part] >= 0, soft.probs[part], 0.0))
    free = soft.num_columns - (soft.cols >= 0).sum(1)
    r = np.clip(soft.rest, 0.0, None)
    # the rest's normalized entropy: as the passes saw it (a lower bound, exact when its shape holds from pass to
    # pass), at most that of an even spread over the columns not kept; even where the passes saw none
    even = np.log(np.maximum(free, 1))
    seen = soft.rest_entropy if soft.rest_entropy is not None else np.full(len(r), np.nan)
    shape = np.where(np.isfinite(seen), np.clip(seen, 0.0, even), even)
    with np.errstate(divide="ignore", invalid="ignore"):
        out += np.where((free > 0) & (r > 0), r * shape - r * np.log(r), 0.0)
    out[np.isnan(soft.rest)] = np.nan
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    out = terms.sum(axis=1)
    out[np.isnan(p).any(axis=1)] = np.nan
    return out


def suspects(
    soft: np.ndarray | SoftMeans, obj_category_ids: np.ndarray, category_ids: np.ndarray, tau: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Suspected mislabels: the soft label's argmax is another foreground class with mean prob >= ``tau``.

    Args:
        soft: ndarray[N, C + 1] or :class:`SoftMeans` of C + 1 columns: ``category_ids`` then background.
        obj_category_ids: ndarray[N], the annotated class of each object.
        category_ids: ndarray[C], ascending.

    Returns:
        (rows ndarray[S] int, suspected category id ndarray[S], its mean probability ndarray[S]).
    """
    if not 0 < tau <= 1:
        raise PruneHooksError(f"suspect threshold tau must be in (0, 1], got {tau}")
    soft = _as_means(soft)
    valid = ~np.isnan(soft.rest)
    best = np.argmax(np.where(valid[:, None] & (soft.cols >= 0), soft.probs, -1.0), axis=1)  # first of ties
    top = soft.cols[np.arange(len(soft)), best]
    prob = soft.probs[np.arange(len(soft)), best]
    fg = (top >= 0) & (top < len(category_ids))
    top_cat = np.where(fg, np.asarray(category_ids)[np.minimum(top, len(category_ids) - 1)], -1)
    rows = np.flatnonzero(valid & fg & (top_cat != obj_category_ids) & (prob >= tau))
    return rows, top_cat[rows], prob[rows]


def outliers(soft: np.ndarray | SoftMeans, learned_passes: np.ndarray, near_uniform: float = 0.9) -> np.ndarray:
    """Rows of objects never learned whose soft label is near uniform (entropy >= ``near_uniform`` * log K)."""
    soft = _as_means(soft)
    h = entropy(soft)
    k = soft.num_columns
    return np.flatnonzero((learned_passes == 0) & ~np.isnan(h) & (h >= near_uniform * np.log(k)))
