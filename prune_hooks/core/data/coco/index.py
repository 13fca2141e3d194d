"""The validated object table of a COCO instances file (:class:`CocoIndex`, :func:`load_coco`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from array import array
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ...errors import PruneHooksError
from ...io import read_json
from .stream import file_members

__all__ = ["CocoIndex", "EntrySpans", "check_bbox", "int_repr", "is_int", "is_number", "load_coco", "sha256_file"]


def is_int(v: Any) -> bool:
    """An integer id the index can hold: int64 (bool is not an integer here; :func:`int_repr` for messages)."""
    if type(v) is int or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)):
        return -(2**63) <= int(v) < 2**63
    return False


def int_repr(v: Any) -> str:
    """``v`` for an "must be an integer" message: an integer beyond int64 says so."""
    big = isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63
    return f"{v!r} (beyond 64 bits)" if big else repr(v)


_PLAIN = (int, float)  # exact types: bool is neither
_finite = math.isfinite


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_bbox(where: str, bbox: Any) -> tuple[float, float, float, float]:
    if type(bbox) is list and len(bbox) == 4:  # the usual case, checked fast (COCO files hold ~1M boxes)
        x, y, w, h = bbox
        if type(x) in _PLAIN and type(y) in _PLAIN and type(w) in _PLAIN and type(h) in _PLAIN:
            x, y, w, h = float(x), float(y), float(w), float(h)
            if _finite(x) and _finite(y) and _finite(w) and _finite(h):
                return x, y, w, h
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        raise PruneHooksError(f"{where}: bbox must be [x, y, width, height] numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise PruneHooksError(f"{where}: bbox values must be finite, got {list(bbox)}")
    return x, y, w, h


class _IndexBuilder:
    """Validates a COCO file's images, categories and annotations as they come, in any member order.

    Checks that need another member (an annotation's image and category exist, annotation ids are
    unique) run at the end on arrays; the first failing annotation in file order is reported."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.images: list[dict] | None = None
        self.categories: list[dict] | None = None
        self.header: dict[str, Any] = {}  # top-level members other than images and annotations
        self.image_ids: list[int] = []
        self.cat_ids: set[int] = set()
        self.n_ann: int | None = None  # None: no 'annotations' member (yet)
        self.ints = array("q")  # per annotation: file position, id, image id, category id, crowd
        self.boxes = array("d")  # per annotation: x0, y0, x1, y1
        self.spans: EntrySpans | None = None

    def add_images(self, images: Iterable[Any]) -> None:
        src, seen, ids, kept = self.src, set(), self.image_ids, []
        for k, img in enumerate(images):
            iid = img.get("id") if isinstance(img, dict) else None
            if not is_int(iid):
                raise PruneHooksError(f"{src}: images[{k}].id must be an integer, got {int_repr(iid)}")
            if iid in seen:
                raise PruneHooksError(f"{src}: images[{k}].id {iid} is a duplicate image id")
            seen.add(int(iid))
            ids.append(int(iid))
            kept.append(img)
        self.images = kept

    def add_categories(self, categories: Iterable[Any]) -> None:
        kept = []
        for k, cat in enumerate(categories):
            cid = cat.get("id") if isinstance(cat, dict) else None
            if not is_int(cid):
                raise PruneHooksError(f"{self.src}: categories[{k}].id must be an integer, got {int_repr(cid)}")
            if cid in self.cat_ids:
                raise PruneHooksError(f"{self.src}: categories[{k}].id {cid} is a duplicate category id")
            self.cat_ids.add(int(cid))
            kept.append(cat)
        self.categories = kept

    def add_annotations(self, annotations: Iterable[Any]) -> None:
        src, ints, boxes = self.src, self.ints, self.boxes
        k = -1
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise PruneHooksError(f"{src}: annotations[{k}] must be an object, got {type(ann).__name__}")
            aid = ann.get("id")
            if not is_int(aid):
                raise PruneHooksError(f"{src}: annotations[{k}].id must be an integer, got {int_repr(aid)}")
            iid, cid = ann.get("image_id"), ann.get("category_id")
            if not is_int(iid):
                raise PruneHooksError(f"{src}: annotations[{k}] (id {aid}): image_id {iid!r} is not in 'images'")
            if not is_int(cid):
                raise PruneHooksError(f"{src}: annotations[{k}] (id {aid}): category_id {cid!r} is not in 'categories'")
            bbox = ann.get("bbox")
            x, y, w, h = check_bbox(f"{src}: annotations[{k}] (id {aid})", bbox)
            crowd = ann.get("iscrowd", 0)
            if crowd not in (0, 1, False, True):
                raise PruneHooksError(f"{src}: annotations[{k}] (id {aid}): iscrowd must be 0 or 1, got {crowd!r}")
            if not crowd and (w <= 0 or h <= 0):
                raise PruneHooksError(
                    f"{src}: annotations[{k}] (id {aid}): bbox width and height must be > 0, got width {w} height {h}"
                )
            ints.extend((k, int(aid), int(iid), int(cid), 1 if crowd else 0))
            boxes.extend((x, y, x + w, y + h))
        self.n_ann = k + 1

    def finish(self, path: str | None, dataset: dict | None) -> CocoIndex:
        src = self.src
        for key, value in (("images", self.images), ("annotations", self.n_ann), ("categories", self.categories)):
            if value is None:
                raise PruneHooksError(f"{src}: not a COCO file: missing '{key}'")
        n = self.n_ann
        ints = np.frombuffer(self.ints, dtype=np.int64).reshape(n, 5)
        boxes = np.frombuffer(self.boxes, dtype=np.float64).reshape(n, 4)
        k, aid, iid, cid, crowd = ints.T
        img_arr = np.array(self.image_ids, dtype=np.int64)
        cat_arr = np.array(sorted(self.cat_ids), dtype=np.int64)

        # Cross-member checks: (first failing position, check order, message).
        failures = []
        by_id = np.argsort(aid, kind="stable")
        dup = np.flatnonzero(aid[by_id][1:] == aid[by_id][:-1]) + 1
        if dup.size:
            r = int(by_id[dup].min())
            failures.append((r, 0, "duplicate annotation id"))
        img_order = np.argsort(img_arr, kind="stable")
        img_pos = np.searchsorted(img_arr, iid, sorter=img_order)
        img_pos = img_order[np.minimum(img_pos, max(len(img_arr) - 1, 0))] if len(img_arr) else np.zeros(n, np.int64)
        bad = np.flatnonzero(img_arr[img_pos] != iid) if len(img_arr) else np.arange(n)
        if bad.size:
            r = int(bad[0])
            failures.append((r, 1, f"image_id {int(iid[r])} is not in 'images'"))
        bad = np.flatnonzero(~np.isin(cid, cat_arr))
        if bad.size:
            r = int(bad[0])
            failures.append((r, 2, f"category_id {int(cid[r])} is not in 'categories'"))
        if failures:
            r, _, what = min(failures)
            raise PruneHooksError(f"{src}: annotations[{r}] (id {int(aid[r])}): {what}")

        objects = np.flatnonzero(crowd == 0)  # crowd regions are never objects (docs/methods.md, "Words")
        objects = objects[np.lexsort((k[objects], img_pos[objects]))]  # by image in file order, then file order
        counts = np.bincount(img_pos[objects], minlength=len(img_arr))
        return CocoIndex(
            path=path,
            image_ids=img_arr,
            category_ids=cat_arr,
            ann_ids=aid[objects].copy(),
            obj_image_ids=iid[objects].copy(),
            obj_category_ids=cid[objects].copy(),
            obj_boxes=boxes[objects].copy(),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            obj_rows=k[objects].copy(),
            images=self.images,
            header=self.header,
            _dataset=dataset,
            _spans=None if self.spans is None else dataclasses.replace(self.spans, ann_image_ids=iid.copy()),
        )


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class EntrySpans:
    """Where ``load_coco`` found each image and annotation entry in its file (character positions,
    [start, end) rows), so that ``write_pruned_coco`` copies the kept entries as the file writes them
    instead of parsing the file a second time."""

    stamp: tuple[int, int]  # the file's size and mtime (ns) when it was read: a changed file is parsed again
    members: list[str]  # top-level keys in file order
    images: np.ndarray  # [I, 2] int64
    annotations: np.ndarray  # [A, 2] int64
    ann_image_ids: np.ndarray | None = None  # [A] int64, each annotation's image id, file order

    def usable(self, path: str) -> bool:
        try:
            return self.stamp == _stamp(path)
        except OSError:
            return False


@dataclass
class CocoIndex:
    """A validated COCO instances file as arrays.

    Objects are the non-crowd boxes, grouped by image in the file's image order and, within an
    image, in annotation file order; ``offsets`` delimits them: objects of ``image_ids[i]`` are rows
    ``offsets[i]:offsets[i + 1]``.

    Attributes:
        images: the file's image entries (parsed).
        header: its top-level members other than images and annotations (info, licenses, categories).
        image_ids: ndarray[I] int64, file order.
        category_ids: ndarray[C] int64, ascending.
        ann_ids, obj_image_ids, obj_category_ids: ndarray[N] int64.
        obj_boxes: ndarray[N, 4] float64, xyxy.
        obj_rows: ndarray[N] int64, each object's position in the file's ``annotations``.
        offsets: ndarray[I + 1] int64.
        dataset: the whole parsed JSON, read from ``path`` when first asked for (a file's annotation
            entries are not kept by ``load_coco``: only the few readers that need them pay for them).
    """

    path: str | None
    image_ids: np.ndarray
    category_ids: np.ndarray
    ann_ids: np.ndarray
    obj_image_ids: np.ndarray
    obj_category_ids: np.ndarray
    obj_boxes: np.ndarray
    offsets: np.ndarray
    obj_rows: np.ndarray
    images: list[dict]
    header: dict[str, Any]
    _dataset: dict | None = None
    _spans: EntrySpans | None = None

    @property
    def dataset(self) -> dict:
        if self._dataset is None:
            self._dataset = read_json(self.path, "annotation file")
        return self._dataset

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.ann_ids.shape[0])

    @property
    def categories(self) -> list[dict]:
        return [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in self.header["categories"]]

    def object_values(self, key: str) -> list[Any]:
        """``key`` of each object's annotation entry (None where absent), in object order; read from
        the file, one entry at a time, when the parsed dataset is not held."""
        if self._dataset is not None or self.path is None:
            anns = self.dataset["annotations"]
            return [anns[k].get(key) for k in self.obj_rows.tolist()]
        order = np.argsort(self.obj_rows, kind="stable")
        rows, values, j = self.obj_rows[order].tolist(), [None] * self.num_objects, 0
        with file_members(self.path) as members:
            for name, value in members:
                if name != "annotations":
                    continue
                for k, ann in enumerate(value):
                    if j < len(rows) and rows[j] == k:
                        values[order[j]] = ann.get(key)
                        j += 1
        return values

    def image_position(self) -> dict[int, int]:
        return {int(i): p for p, i in enumerate(self.image_ids)}

    def objects_per_image(self) -> np.ndarray:
        """ndarray[I] int64, non-crowd objects of each image."""
        return np.diff(self.offsets)

    @classmethod
    def from_dataset(cls, dataset: Any, path: str | None = None) -> CocoIndex:
        src = path or "annotations"
        if not isinstance(dataset, dict):
            raise PruneHooksError(f"{src}: not a COCO file: top level must be an object, got {type(dataset).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise PruneHooksError(f"{src}: not a COCO file: missing '{key}'")
        build = _IndexBuilder(src)
        build.header = {k: v for k, v in dataset.items() if k not in ("images", "annotations")}
        for key in ("images", "categories", "annotations"):
            if not isinstance(dataset[key], list):
                raise PruneHooksError(f"{src}: '{key}' must be a list, got {type(dataset[key]).__name__}")
            getattr(build, f"add_{key}")(dataset[key])
        return build.finish(path, dataset)


def load_coco(path: str | os.PathLike) -> CocoIndex:
    """Read and validate a COCO instances file; every problem is a PruneHooksError naming the field.

    The file is read member by member: its annotation entries are validated into the index's arrays
    and not kept (``index.dataset`` parses the file again when a reader needs them)."""
    path = str(path)
    build, spans, keys = _IndexBuilder(path), {}, []
    stamp = _stamp(path) if os.path.isfile(path) else None
    with file_members(path, spans) as members:
        for key, value in members:
            keys.append(key)
            if key not in ("images", "annotations"):
                build.header[key] = value
            if key in ("images", "annotations", "categories"):
                if not isinstance(value, (list, Iterator)):
                    raise PruneHooksError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
                getattr(build, f"add_{key}")(value)
    if set(spans) == {"images", "annotations"} and len(keys) == len(set(keys)):
        build.spans = EntrySpans(
            stamp, keys, *(np.frombuffer(spans[k], np.int64).reshape(-1, 2) for k in ("images", "annotations"))
        )
    return build.finish(path, None)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
