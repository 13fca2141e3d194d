"""Per-object state split across the ranks of a distributed run.

Rank r of W keeps the state of a contiguous range of the annotation file's images, the ranges cut so each
holds about 1/W of the objects: device memory per rank ∝ objects / W. Whatever images a rank scores (its
share of a scoring pass, or its training batches in-loop), the rows it records go to the rank that keeps
them when the pass closes (:func:`exchange`). Checkpoints and the written run always hold the whole state
in the file's object order (:func:`join_states`), so a run resumes on any number of ranks: each takes its
range of the saved state (:func:`shard_state`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch

__all__ = ["Comm", "SINGLE", "image_ranges", "exchange", "shard_state", "join_states"]


class Comm(NamedTuple):
    """The process's place in the run and the framework's gather of picklable objects.

    ``gather(obj, dst)`` returns every rank's ``obj`` (rank order) on rank ``dst`` and anything on the others
    (detectron2 ``comm.gather``, mmengine ``gather_object``); it is a collective: every rank calls it.
    """

    rank: int = 0
    world: int = 1
    gather: Callable[[Any, int], Any] | None = None

    def to(self, obj: Any, dst: int) -> list[Any] | None:
        """Every rank's ``obj`` on rank ``dst`` (a list), None on the other ranks."""
        if self.world == 1 or self.gather is None:
            return [obj]
        got = self.gather(obj, dst)
        return list(got) if self.rank == dst else None


SINGLE = Comm()


def image_ranges(offsets: np.ndarray, world: int) -> np.ndarray:
    """ndarray[world + 1] of image positions: rank r keeps images ``ranges[r]:ranges[r + 1]`` (and so object
    rows ``offsets[ranges[r]]:offsets[ranges[r + 1]]``), each range about 1/world of the objects."""
    offsets = np.asarray(offsets, dtype=np.int64)
    targets = np.arange(world + 1) * (int(offsets[-1]) / world)
    cuts = np.searchsorted(offsets, targets, side="left")
    cuts[0], cuts[-1] = 0, len(offsets) - 1
    return np.maximum.accumulate(np.minimum(cuts, len(offsets) - 1))


def exchange(comm: Comm, parts: list[Any]) -> list[Any]:
    """``parts[d]``: what this rank sends rank d. Returns what every rank sent this one (rank order): one
    gather per destination, so a rank never holds more than what it receives."""
    if comm.world == 1:
        return [parts[0]]
    mine: list[Any] = []
    for dst in range(comm.world):
        got = comm.to(parts[dst], dst)
        if got is not None:
            mine = got
    return mine


# Where each part of VPSCapture.state_dict() keeps its objects: dim 0 of every tensor of "vps" and
# "soft_labels", dim 1 of the audit's ring buffers; the audit's tracks belong to image positions.
_AUDIT_ROWS = ("conf", "box_rel", "box", "valid")  # "box": an earlier version's absolute boxes


def _map_rows(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(state, dict):
        return {k: _map_rows(v, fn) for k, v in state.items()}
    if isinstance(state, torch.Tensor) and state.ndim >= 1:
        return fn(state)
    return state


def shard_state(state: dict[str, Any], rows: tuple[int, int], images: tuple[int, int]) -> dict[str, Any]:
    """The part of a whole :meth:`VPSCapture.state_dict` that the rank keeping ``rows`` / ``images`` holds."""
    (a, b), (p, q) = rows, images
    out = {key: _map_rows(state[key], lambda t: t[a:b]) for key in ("vps", "soft_labels") if key in state}
    if "audit" in state:
        audit = dict(state["audit"])
        for name in _AUDIT_ROWS:
            if name in audit:
                audit[name] = audit[name][:, a:b]
        image = torch.as_tensor(audit["tracks"]["image"])
        mine = (image >= p) & (image < q)
        audit["tracks"] = {k: torch.as_tensor(v)[mine] for k, v in audit["tracks"].items()}
        out["audit"] = audit
    return out


def join_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole state from the ranks' :func:`shard_state` parts (rank order); tracks in image order."""
    first = states[0]
    out: dict[str, Any] = {}
    for key in ("vps", "soft_labels"):
        if key in first:
            out[key] = _join(key, [s[key] for s in states])
    if "audit" in first:
        audit = dict(first["audit"])
        for name in _AUDIT_ROWS:
            if name in audit:
                audit[name] = torch.cat([s["audit"][name] for s in states], dim=1)
        names = first["audit"]["tracks"]
        tracks = {k: torch.cat([torch.as_tensor(s["audit"]["tracks"][k]) for s in states]) for k in names}
        order = torch.argsort(tracks["image"], stable=True)
        audit["tracks"] = {k: v[order] for k, v in tracks.items()}
        out["audit"] = audit
    return out


def _join(key: str, parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _join(k, [p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], torch.Tensor) and parts[0].ndim >= 1:
        return torch.cat(parts)
    return parts[0]  # pass counts and column counts: the same on every rank
