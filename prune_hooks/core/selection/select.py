"""Selection from a run directory: one entry point for the CLI and the hooks.

The methods themselves are registered in :mod:`prune_hooks.core.selection.methods`; this module loads what
they need from a run directory (each file once, so ``--method all`` reuses it), ranks, completes the
order with the images a method cannot rank (ascending id), and builds the subset.json record.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import PruneHooksError
from ..scoring.prototypes import image_features
from ..scoring.scores import rank_images
from . import coverage
from . import methods as registry
from .algorithms import subset_record
from .coverage import DEFAULT_STRATA, default_beta
from .estimate import check_cost, selection_cost
from .inputs import RunInputs

__all__ = ["DEFAULT_LAMBDA", "select"]

logger = logging.getLogger("prune_hooks")

# The CSOD paper tunes lambda per budget (VOC: 0.0125 to 0.0625); this is the middle of that range.
DEFAULT_LAMBDA = 0.05


def _complete(ranked: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    rest = np.setdiff1d(np.asarray(image_ids, dtype=np.int64), ranked)
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rest])


def select(
    method: str,
    inputs: RunInputs,
    *,
    n_keep: int,
    keep_ratio: float,
    aggregation: str | None = None,
    seed: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    drop_mislabeled: bool = False,
    stratify: bool = False,
    beta: float | None = None,
    strata: int = DEFAULT_STRATA,
    group_by: str | None = None,
    per_group_max: int | None = None,
    dedup_threshold: float | None = None,
) -> dict[str, Any]:
    """The subset.json record of ``method`` keeping ``n_keep`` images (best first).

    Args:
        aggregation: score methods: which image aggregation to rank by (default: the method's first).
        seed: seeded methods (default 0); recorded in the subset for those only.
        lam: CSOD's lambda.
        drop_mislabeled: rank images that hold a wrong_class object (label_issues.csv) last.
        stratify, beta, strata: score methods: coverage-centric selection (core.selection.coverage.stratify); beta
            None = ``default_beta(keep_ratio)``.
        group_by, per_group_max: spread the kept images over groups (core.selection.coverage.spread_groups).
        dedup_threshold: skip images whose feature is this close (cosine) to a kept one (core.selection.coverage.dedup).
    """
    m = registry.get(method)
    why = inputs.missing(m)
    if why:
        raise PruneHooksError(why)
    index = inputs.index
    extra: dict[str, Any] = {}
    if m.is_score:
        aggregation = aggregation or m.aggregations[0]
        if aggregation not in m.aggregations:
            raise PruneHooksError(f"method {method} aggregates by {', '.join(m.aggregations)}, got {aggregation!r}")
        table = inputs.image_scores()
        column = table.get(f"{method}_{aggregation}")
        if column is None:
            raise PruneHooksError(f"{inputs.run}/images.csv has no column {method}_{aggregation}")
        why = inputs.uninformative(method, aggregation)
        if why:
            raise PruneHooksError(why)
        ranked = rank_images(table["image_id"], column)
        seed = None
    else:
        aggregation = None
        _check_cost(method, m, inputs, n_keep, dedup_threshold is not None)
        seed = (0 if seed is None else seed) if m.seeded else None
        req = registry.Request(n_keep=n_keep, seed=seed or 0, lam=lam)
        ranked, extra = m.rank(inputs, req)
        extra = dict(extra)
        ranked = _complete(ranked, index.image_ids)
    if stratify:
        if not m.is_score:
            raise PruneHooksError(f"--stratify needs a score method, {method} ranks without scores")
        beta = default_beta(keep_ratio) if beta is None else beta
        score_of = {int(i): float(v) for i, v in zip(table["image_id"], column) if np.isfinite(v)}
        ranked = coverage.stratify(ranked, score_of, n_keep, beta, strata, 0 if seed is None else seed)
        extra.update(stratify={"beta": beta, "strata": strata})
    if group_by is not None:
        labels = coverage.group_labels(index, group_by)
        ranked = coverage.spread_groups(ranked, dict(zip(index.image_ids.tolist(), labels)), per_group_max)
        extra.update(group_by=group_by, per_group_max=per_group_max, groups=len(set(labels.tolist())))
    elif per_group_max is not None:
        raise PruneHooksError("--per-group-max needs --group-by")
    if dedup_threshold is not None:
        if m.is_score:
            _check_cost(method, m, inputs, n_keep, True)
        ids, feats = image_features(inputs.prototypes("--dedup"))
        ranked = coverage.dedup(ranked, dict(zip(ids.tolist(), feats)), dedup_threshold, n_keep)
        extra["dedup"] = dedup_threshold
    if drop_mislabeled:
        bad = inputs.suspect_images()
        ranked = np.concatenate([ranked[~np.isin(ranked, bad)], ranked[np.isin(ranked, bad)]])
        extra["dropped_suspect_images"] = int(len(bad))
        if len(ranked) - len(bad) < n_keep:
            logger.warning(
                "--drop-mislabeled: only %d images without suspects for %d kept", len(ranked) - len(bad), n_keep
            )
    record = subset_record(method, aggregation, keep_ratio, index.num_images, seed, ranked[:n_keep])
    record.update(extra)
    return record


def _check_cost(method: str, m: registry.Method, inputs: RunInputs, n_keep: int, dedup: bool) -> None:
    """Say what a feature method (and --dedup) will cost before it starts; refuse what does not fit in memory."""
    uses = registry.PROTOTYPES in m.needs
    if not (uses or dedup):
        return
    feature = inputs.prototypes(method if uses else "--dedup")["feature"]
    index = inputs.index
    check_cost(
        selection_cost(
            method if uses else "",
            images=index.num_images,
            rows=int(feature.shape[0]),
            dim=int(feature.shape[1]) if feature.ndim == 2 else 0,
            classes=len(index.category_ids),
            n_keep=n_keep,
            dedup=dedup,
        )
    )
