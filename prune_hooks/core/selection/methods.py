"""Every selection method, registered once: what it needs from a run directory and how it ranks.

This is the one place a method is added. Everything else derives from :data:`REGISTRY`: the CLI's
``--method`` choices and ``--method all`` skipping, the hooks' decision to collect prototypes, the
run directory's image-score columns (``images.csv``), and the README's method table (a test keeps
it in sync). Definitions: ``docs/methods.md``.

Two kinds of method:

- **score methods** (``object_score`` set): a per-object score, aggregated per image into the
  columns ``<name>_<aggregation>`` of ``images.csv``; images ranked by that column, highest first,
  images without a score last (:func:`~prune_hooks.core.scoring.scores.rank_images`).
- **order methods** (``rank`` set): compute an image order from the run's inputs (prototypes, the
  annotation file, a seed).

A new method: one ``register(...)`` call below with its function, and its tests.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import PruneHooksError
from ..scoring.prototypes import image_features
from ..scoring.scores import AGGREGATIONS, forgetting_scores
from .algorithms import herding, kcenter_greedy, random_order, random_per_class
from .csod import csod_select
from .inputs import RunInputs
from .registry import (
    IMAGE_SCORES,
    MASKS,
    NEEDS,
    PROTOTYPES,
    REGISTRY,
    SOFT_LABELS,
    Method,
    Request,
    get,
    image_score_columns,
    names,
    needs_of,
    register,
)

__all__ = [
    "IMAGE_SCORES",
    "MASKS",
    "PROTOTYPES",
    "SOFT_LABELS",
    "NEEDS",
    "Method",
    "REGISTRY",
    "Request",
    "get",
    "image_score_columns",
    "names",
    "needs_of",
    "register",
]

# -- score methods ---------------------------------------------------------------------------------


def _column(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray | None]:
    return lambda objects: objects.get(name)


def _forgetting(objects: dict[str, np.ndarray]) -> np.ndarray | None:
    if "forget_events" not in objects:
        return None
    return forgetting_scores(objects)


register(
    "vps_iou",
    "std of the CIPA-matched IoU over scoring passes (VPS), highest first",
    needs=(IMAGE_SCORES,),
    object_score=_column("iou_std"),
    aggregations=AGGREGATIONS,
)
register(
    "vps_conf",
    "std of the CIPA-matched confidence over scoring passes (VPS), highest first",
    needs=(IMAGE_SCORES,),
    object_score=_column("conf_std"),
    aggregations=AGGREGATIONS,
)
register(
    "forgetting",
    "never-learned objects first, then most forgetting events",
    needs=(IMAGE_SCORES,),
    object_score=_forgetting,
    aggregations=AGGREGATIONS,
)
register(
    "entropy",
    "entropy of the soft label (mean class distribution on the GT box), highest first",
    needs=(IMAGE_SCORES, SOFT_LABELS),
    object_score=_column("entropy"),
    aggregations=AGGREGATIONS,
)
# TFDP shape complexity: from instance masks, no training; the paper sums over an image's instances
register(
    "scs",
    "TFDP shape complexity perimeter / area of the mask's contour, image sum, highest first",
    needs=(MASKS,),
    object_score=_column("scs"),
    aggregations=("sum",),
)
register(
    "si_scs",
    "TFDP scale-invariant shape complexity perimeter / (2 sqrt(pi area)), image sum",
    needs=(MASKS,),
    object_score=_column("si_scs"),
    aggregations=("sum",),
)
register(
    "cb_scs",
    "TFDP class-balanced SI-SCS (divided by its class's total), image sum: the paper's default",
    needs=(MASKS,),
    object_score=_column("cb_scs"),
    aggregations=("sum",),
)


# -- order methods ---------------------------------------------------------------------------------


def _csod(inputs: RunInputs, req: Request, protos: dict | None = None, bias: np.ndarray | None = None):
    protos = protos if protos is not None else inputs.prototypes("csod")
    ids, cats, feats = protos["image_id"], protos["category_id"], protos["feature"]
    res = csod_select(ids, cats, feats, req.n_keep, req.lam, all_image_ids=inputs.index.image_ids, bias=bias)
    return res.image_ids, {"lambda": req.lam, "csod_greedy_images": res.n_greedy}


HYBRID_WEIGHT = 1.0  # vps_csod: the VPS term spans this fraction of what the lambda term can span


def _vps_csod(inputs: RunInputs, req: Request) -> tuple[np.ndarray, dict[str, Any]]:
    protos = inputs.prototypes("vps_csod")
    column = f"vps_iou_{req.aggregation or 'max'}"
    table = inputs.image_scores()
    if column not in table:
        raise PruneHooksError(f"method vps_csod needs the image column {column} in {inputs.run}/images.csv")
    vals = table[column]
    finite = np.isfinite(vals)
    pct = np.zeros(len(vals))  # an image without a VPS counts as the lowest
    if finite.sum() > 1:
        order = np.argsort(vals[finite], kind="stable")  # ties: file order
        ranks = np.empty(len(order))
        ranks[order] = np.arange(len(order))
        pct[finite] = ranks / (len(order) - 1)
    pct_of = dict(zip(table["image_id"].tolist(), pct.tolist()))
    classes, class_size = np.unique(protos["category_id"], return_counts=True)
    size_of = dict(zip(classes.tolist(), class_size.tolist()))
    bias = np.array(
        [
            HYBRID_WEIGHT * req.lam * size_of[c] * pct_of.get(i, 0.0)
            for i, c in zip(protos["image_id"].tolist(), protos["category_id"].tolist())
        ]
    )
    ranked, extra = _csod(inputs, req, protos, bias)
    return ranked, {**extra, "vps_column": column}


def _kcenter(inputs: RunInputs, req: Request) -> tuple[np.ndarray, dict[str, Any]]:
    ids, feats = image_features(inputs.prototypes("kcenter"))
    return ids[kcenter_greedy(feats, min(req.n_keep, len(ids)), req.seed)], {}


def _herding(inputs: RunInputs, req: Request) -> tuple[np.ndarray, dict[str, Any]]:
    ids, feats = image_features(inputs.prototypes("herding"))
    return ids[herding(feats, min(req.n_keep, len(ids)))], {}


def _random(inputs: RunInputs, req: Request) -> tuple[np.ndarray, dict[str, Any]]:
    return random_order(inputs.index.image_ids, req.seed), {}


def _per_class(proportional: bool) -> Callable[[RunInputs, Request], tuple[np.ndarray, dict[str, Any]]]:
    def rank(inputs: RunInputs, req: Request) -> tuple[np.ndarray, dict[str, Any]]:
        ix = inputs.index
        return random_per_class(
            ix.image_ids, ix.obj_image_ids, ix.obj_category_ids, req.n_keep, req.seed, proportional=proportional
        ), {}

    return rank


register(
    "csod",
    "CSOD class-rotating greedy on per-image per-class prototypes (diversity vs redundancy)",
    needs=(PROTOTYPES,),
    rank=_csod,
)
register(
    "vps_csod",
    "hybrid: CSOD's greedy plus each image's VPS percentile (informative and diverse; docs/methods.md)",
    needs=(PROTOTYPES, IMAGE_SCORES),
    rank=_vps_csod,
)
register(
    "kcenter",
    "k-center greedy on image features (mean unit prototype)",
    needs=(PROTOTYPES,),
    rank=_kcenter,
    seeded=True,
)
register("herding", "herding on image features (mean unit prototype)", needs=(PROTOTYPES,), rank=_herding)
register("random", "uniform random order of images", rank=_random, seeded=True)
register("random_uniform", "class-rotating random draws, the same count per class", rank=_per_class(False), seeded=True)
register(
    "random_ratio",
    "class-rotating random draws, counts proportional to class frequency",
    rank=_per_class(True),
    seeded=True,
)
