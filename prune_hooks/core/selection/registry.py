"""The method registry's types: what a method is (:class:`Method`), what it is asked (:class:`Request`),
and :data:`REGISTRY` with its lookups. The methods themselves are registered in :mod:`.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import PruneHooksError

__all__ = [
    "IMAGE_SCORES",
    "MASKS",
    "NEEDS",
    "PROTOTYPES",
    "REGISTRY",
    "SOFT_LABELS",
    "Method",
    "Request",
    "get",
    "image_score_columns",
    "names",
    "needs_of",
    "register",
]

# What a method needs from a run directory (``Method.needs``).
IMAGE_SCORES = "image scores"  # images.csv from scoring passes (hooks, `score vps`)
SOFT_LABELS = "soft labels"  # the box predictor's class distributions on GT boxes (hooks)
PROTOTYPES = "prototypes"  # prototypes.npz: GT-box RoI features of the final model (hooks)
MASKS = "masks"  # instance masks in the annotation file (shape scores; no training)
NEEDS = (IMAGE_SCORES, SOFT_LABELS, PROTOTYPES, MASKS)


@dataclass(frozen=True)
class Request:
    """What a rank function is asked for (``select``'s keyword options)."""

    n_keep: int
    aggregation: str | None = None
    seed: int = 0
    lam: float = 0.05


@dataclass(frozen=True)
class Method:
    """One selection method.

    Attributes:
        name: the CLI / config name.
        summary: one line for ``--help`` and the README table.
        needs: run-directory inputs, from :data:`NEEDS` (empty: the annotation file alone).
        object_score: score methods: per-object scores ndarray[N] from the objects table (the
            columns of objects.csv as arrays), or None when the table lacks what it needs.
        aggregations: score methods: image aggregations written to images.csv (first = default).
        rank: order methods: ``rank(inputs, request) -> (image ids best first, extra record fields)``,
            ``inputs`` a :class:`~prune_hooks.core.selection.inputs.RunInputs`.
        seeded: the seed changes the result (recorded in subset.json).
    """

    name: str
    summary: str
    needs: tuple[str, ...] = ()
    object_score: Callable[[dict[str, np.ndarray]], np.ndarray | None] | None = None
    aggregations: tuple[str, ...] = ()
    rank: Callable[[Any, Request], tuple[np.ndarray, dict[str, Any]]] | None = None
    seeded: bool = False
    columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if (self.object_score is None) == (self.rank is None):
            raise PruneHooksError(f"method {self.name!r}: give exactly one of object_score and rank")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise PruneHooksError(f"method {self.name!r}: unknown needs {sorted(unknown)}; choose from {NEEDS}")
        object.__setattr__(self, "columns", tuple(f"{self.name}_{a}" for a in self.aggregations))

    @property
    def is_score(self) -> bool:
        return self.object_score is not None


REGISTRY: dict[str, Method] = {}


def register(name: str, summary: str, **kwargs: Any) -> Method:
    if name in REGISTRY or name == "all":
        raise PruneHooksError(f"method {name!r} is already registered")
    method = Method(name, summary, **kwargs)
    REGISTRY[name] = method
    return method


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise PruneHooksError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def needs_of(methods: list[str] | tuple[str, ...]) -> set[str]:
    """Everything the given methods need together (unknown names raise)."""
    return {n for m in methods for n in get(m).needs}


def image_score_columns(objects: dict[str, np.ndarray] | None = None) -> list[tuple[Method, np.ndarray | None]]:
    """Score methods in registry order with their per-object scores from ``objects`` (None: not
    computable from it). With ``objects`` None, every score method with None."""
    out = []
    for m in REGISTRY.values():
        if m.is_score:
            out.append((m, m.object_score(objects) if objects is not None else None))
    return out
