"""What the methods read from a run directory (:class:`RunInputs`), each file loaded once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.coco import CocoIndex
from ..data.rundir import read_images_csv, read_label_issues
from ..errors import PruneHooksError
from ..io import read_json
from ..scoring.prototypes import load_prototypes
from . import registry

__all__ = ["RunInputs"]

_FILES = {
    registry.IMAGE_SCORES: "images.csv",
    registry.SOFT_LABELS: "soft_labels.npz",
    registry.PROTOTYPES: "prototypes.npz",
}


def _merged(run: Path) -> bool:
    """``run`` merges the runs of several models (UNSEEN)."""
    meta = run / "meta.json"
    return meta.is_file() and "unseen" in read_json(meta, "run metadata")


class RunInputs:
    """What the methods read from a run directory, each file loaded once (``--method all`` reuses it)."""

    def __init__(self, run: str | os.PathLike | None, index: CocoIndex) -> None:
        self.run = Path(run) if run is not None else None
        self.index = index
        self._cache: dict[str, Any] = {}

    def missing(self, method: registry.Method) -> str | None:
        """Why ``method`` cannot select from this run directory, or None when it can."""
        for need in method.needs:
            if need == registry.MASKS:
                continue  # columns checked below
            name = _FILES[need]
            if need == registry.PROTOTYPES and self.run is not None and _merged(self.run):
                return (
                    f"method {method.name} needs prototypes of one model: {self.run} merges runs of several "
                    "models (UNSEEN), whose features are not comparable"
                )
            if self.run is None or not (self.run / name).is_file():
                if need == registry.SOFT_LABELS:
                    return (
                        f"method {method.name} needs soft labels: {self.run} has none "
                        "(the hooks record them; detections alone do not)"
                    )
                return f"method {method.name} needs {name} ({need}), not found in {self.run}"
        if method.is_score:
            table = self._images_or_none()
            if table is None or not any(c in table for c in method.columns):
                how = (
                    "shape scores from instance masks (prune-hooks score shape)"
                    if registry.MASKS in method.needs
                    else "image scores from scoring passes (a hook's run or prune-hooks score vps)"
                )
                return f"method {method.name} needs {how}: {self.run}/images.csv has no {method.name}_* columns"
        return None

    def uninformative(self, method: str, aggregation: str | None = None) -> str | None:
        """Why a score method's image column cannot rank images (the same value for every scored image,
        e.g. when no object was ever matched), or None. Picking by it would only sort by image id."""
        m = registry.get(method)
        if not m.is_score:
            return None
        table = self._images_or_none()
        col = None if table is None else table.get(f"{method}_{aggregation or m.aggregations[0]}")
        if col is None:
            return None
        values = col[~np.isnan(col)]
        if len(values) >= 2 and np.all(values == values[0]):
            return (
                f"method {method}: {self.run}/images.csv column {method}_{aggregation or m.aggregations[0]} is "
                f"{values[0]:g} for all {len(values)} scored images, so it cannot rank them (were the objects "
                "ever matched? see the run's meta.json 'never_matched')"
            )
        return None

    def _images_or_none(self) -> dict[str, np.ndarray] | None:
        if self.run is None or not (self.run / "images.csv").is_file():
            return None
        return self.image_scores()

    def image_scores(self) -> dict[str, np.ndarray]:
        if "images" not in self._cache:
            table = read_images_csv(self.run)
            if not np.array_equal(np.sort(table["image_id"]), np.sort(self.index.image_ids)):
                raise PruneHooksError(
                    f"image ids of {self.run}/images.csv do not match the images of {self.index.path}"
                )
            self._cache["images"] = table
        return self._cache["images"]

    def prototypes(self, method: str) -> dict[str, np.ndarray]:
        if "prototypes" not in self._cache:
            self._require(registry.PROTOTYPES, method)
            self._cache["prototypes"] = load_prototypes(self.run / _FILES[registry.PROTOTYPES], self.index)
        return self._cache["prototypes"]

    def _require(self, need: str, method: str) -> None:
        why = self.missing(registry.Method(method, "", needs=(need,), rank=_no_rank))
        if why:
            raise PruneHooksError(why)

    def suspect_images(self) -> np.ndarray:
        """Images holding an object flagged wrong_class in RUN/label_issues.csv."""
        path = self.run / "label_issues.csv" if self.run is not None else None
        if path is None or not path.is_file():
            raise PruneHooksError(f"--drop-mislabeled needs label_issues.csv, not found in {self.run}")
        ids = {int(r["image_id"]) for r in read_label_issues(self.run) if r["kind"] == "wrong_class"}
        return np.array(sorted(ids), dtype=np.int64)


def _no_rank(inputs: RunInputs, req: registry.Request) -> tuple[np.ndarray, dict[str, Any]]:
    raise AssertionError("not a method")
