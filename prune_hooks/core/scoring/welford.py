"""Running mean / variance over many objects at once (Welford's update, Chan's merge)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import PruneHooksError

__all__ = ["Welford"]


class Welford:
    """Per-object running count, mean and sum of squared deviations, kept on one device.

    State is ``count`` Tensor[N] (int32) and ``mean``/``m2`` Tensor[N, *shape] (float32 by default):
    O(N) memory whatever the number of updates. An object may be missing from an update.

    Float32 is enough here: for values in [0, 1] the incremental update keeps ~1e-7 relative error
    per step, so a hundred passes stay well within 1e-5 of a float64 computation.
    """

    def __init__(
        self,
        num: int,
        shape: tuple[int, ...] = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if num < 0:
            raise PruneHooksError(f"[Welford] num must be >= 0, got {num}")
        self.num = int(num)
        self.shape = tuple(shape)
        self.count = torch.zeros(num, dtype=torch.int32, device=device)
        self.mean = torch.zeros((num, *self.shape), dtype=dtype, device=device)
        self.m2 = torch.zeros((num, *self.shape), dtype=dtype, device=device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Add one observation for each object in ``indices``.

        Args:
            indices: Tensor[K] long, distinct object indices in [0, N).
            values: Tensor[K, *shape].
        """
        indices = torch.as_tensor(indices, device=self.device).long().view(-1)
        values = torch.as_tensor(values, device=self.device).to(self.mean.dtype)
        if values.shape != (indices.numel(), *self.shape):
            raise PruneHooksError(
                f"[Welford] values must have shape {(indices.numel(), *self.shape)}, got {tuple(values.shape)}"
            )
        if indices.numel() == 0:
            return
        if int(indices.min()) < 0 or int(indices.max()) >= self.num:
            raise PruneHooksError(
                f"[Welford] indices must be in [0, {self.num}), got {int(indices.min())}..{int(indices.max())}"
            )
        # A repeated index would be updated once with only one of its values: refuse it.
        if torch.unique(indices).numel() != indices.numel():
            raise PruneHooksError("[Welford] indices of one update must be distinct")
        count = self.count[indices] + 1
        c = count.to(self.mean.dtype).view(-1, *([1] * len(self.shape)))
        mean = self.mean[indices]
        delta = values - mean
        mean = mean + delta / c
        self.m2[indices] += delta * (values - mean)
        self.mean[indices] = mean
        self.count[indices] = count

    def variance(self) -> torch.Tensor:
        """Population variance (ddof=0), Tensor[N, *shape]; NaN where count is 0."""
        c = self.count.to(self.m2.dtype).view(-1, *([1] * len(self.shape)))
        return torch.where(c > 0, self.m2 / c.clamp(min=1), torch.full_like(self.m2, float("nan")))

    def std(self) -> torch.Tensor:
        """Population standard deviation (ddof=0), Tensor[N, *shape]; NaN where count is 0."""
        # m2 can come out a hair below zero in float arithmetic; the true value is >= 0.
        return self.variance().clamp(min=0).sqrt()

    def means(self) -> torch.Tensor:
        """Tensor[N, *shape]; NaN where count is 0."""
        c = self.count.view(-1, *([1] * len(self.shape)))
        return torch.where(c > 0, self.mean, torch.full_like(self.mean, float("nan")))

    def merge(self, other: Welford) -> None:
        """Fold in statistics of the same N objects computed elsewhere (another rank or shard)."""
        if other.num != self.num or other.shape != self.shape:
            raise PruneHooksError(
                f"[Welford] cannot merge state for {other.num} objects of shape {other.shape} "
                f"into {self.num} objects of shape {self.shape}"
            )
        nb = other.count.to(self.device)
        n = self.count + nb
        ca = self.count.to(self.mean.dtype).view(-1, *([1] * len(self.shape)))
        cb = nb.to(self.mean.dtype).view(-1, *([1] * len(self.shape)))
        cn = (ca + cb).clamp(min=1)
        mb = other.mean.to(self.device, self.mean.dtype)
        delta = mb - self.mean
        self.m2 = self.m2 + other.m2.to(self.device, self.m2.dtype) + delta * delta * ca * cb / cn
        self.mean = self.mean + delta * cb / cn
        self.count = n

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        count = torch.as_tensor(state["count"])
        if count.shape != self.count.shape or tuple(state["mean"].shape) != tuple(self.mean.shape):
            raise PruneHooksError(
                f"[Welford] state holds {count.shape[0]} objects of shape {tuple(state['mean'].shape[1:])}, "
                f"this accumulator has {self.num} of shape {self.shape}: was the dataset changed?"
            )
        self.count = count.to(self.device, torch.int32).clone()
        self.mean = torch.as_tensor(state["mean"]).to(self.device, self.mean.dtype).clone()
        self.m2 = torch.as_tensor(state["m2"]).to(self.device, self.m2.dtype).clone()
