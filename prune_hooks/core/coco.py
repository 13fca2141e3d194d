"""COCO annotation and detection-result files: validation, the object table, the pruned file."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import PruneHooksError
from .io import atomic_writer, no_gc, open_text, read_json

__all__ = ["CocoIndex", "Detections", "load_coco", "load_detections", "write_pruned_coco", "sha256_file"]

logger = logging.getLogger("prune_hooks")


def _is_int(v: Any) -> bool:
    return type(v) is int or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))


_PLAIN = (int, float)  # exact types: bool is neither
_finite = math.isfinite


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_bbox(where: str, bbox: Any) -> tuple[float, float, float, float]:
    if type(bbox) is list and len(bbox) == 4:  # the usual case, checked fast (COCO files hold ~1M boxes)
        x, y, w, h = bbox
        if type(x) in _PLAIN and type(y) in _PLAIN and type(w) in _PLAIN and type(h) in _PLAIN:
            x, y, w, h = float(x), float(y), float(w), float(h)
            if _finite(x) and _finite(y) and _finite(w) and _finite(h):
                return x, y, w, h
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise PruneHooksError(f"{where}: bbox must be [x, y, width, height] numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise PruneHooksError(f"{where}: bbox values must be finite, got {list(bbox)}")
    return x, y, w, h


_BLANK = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


class _JsonObjectStream:
    """The members of a file holding one JSON object, read in windows: the members named in ``arrays``
    element by element, every other member whole. A COCO file's ``images`` and ``annotations`` are
    never held as one parsed list (a parsed annotation costs ~1 KB of Python objects: 8.6 M of them
    would not fit a 24 GB machine)."""

    WINDOW = 1 << 22  # characters read at a time
    MARGIN = 1 << 12  # an element ending closer than this to the window's end may be cut: the general path

    def __init__(self, f: Any, src: str) -> None:
        self.f, self.src = f, src
        self.buf, self.pos, self.eof = "", 0, False
        self.base = 0  # the file position (in characters) of buf[0]
        self.decode = json.JSONDecoder().raw_decode

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(max(self.WINDOW, len(self.buf) - self.pos))  # grows for one long value
        if not chunk:
            self.eof = True
            return False
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def _peek(self) -> str:
        """The next non-blank character, '' at the end of the file."""
        while True:
            self.pos = _BLANK.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def _expect(self, chars: str) -> str:
        ch = self._peek()
        if not ch or ch not in chars:
            raise json.JSONDecodeError(f"expected one of {chars!r}", self.buf, self.pos)
        self.pos += 1
        return ch

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self.decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if self._more():
                    continue  # the value runs past the window
                raise
            if end > len(self.buf) - 64 and self._more():
                continue  # a number cut by the window ("1." of "1.5") decodes: read on and decode again
            self.pos = end
            return value

    def members(self, arrays: tuple[str, ...], spans: dict[str, array] | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) in file order; for a key of ``arrays`` whose value is a list, value is an
        iterator over its elements, valid until the next member is asked for. With ``spans``, each
        element's [start, end) file position (characters) is appended to ``spans[key]``."""
        if self._peek() != "{":
            value = self._value()  # not an object: whatever it is, report its type
            raise PruneHooksError(
                f"{self.src}: not a COCO file: top level must be an object, got {type(value).__name__}"
            )
        self.pos += 1
        if self._peek() == "}":
            self.pos += 1
        else:
            while True:
                key = self._value()
                if not isinstance(key, str):
                    raise json.JSONDecodeError("expected a member name", self.buf, self.pos)
                self._expect(":")
                if key in arrays and self._peek() == "[":
                    self.pos += 1
                    elements = self._elements(None if spans is None else spans.setdefault(key, array("q")))
                    yield key, elements
                    for _ in elements:  # what the caller left unread
                        pass
                else:
                    yield key, self._value()
                if self._expect(",}") == "}":
                    break
        if self._peek():
            raise json.JSONDecodeError("extra data after the object", self.buf, self.pos)

    def _elements(self, spans: array | None) -> Iterator[Any]:
        if self._peek() == "]":
            self.pos += 1
            return
        decode, blank = self.decode, _BLANK.match
        while True:
            # Fast path: elements that end well inside the window, with no per-element method calls
            # (~1 M elements in a COCO file). Anything else — an element near or across the window's end,
            # bad JSON — goes through the general path from the element's start.
            buf, pos, done = self.buf, self.pos, False
            limit = len(buf) - self.MARGIN
            window_spans: list[int] = []  # in this window; ~3x faster than appending file positions to spans
            record = window_spans.append
            while pos < limit:
                start = blank(buf, pos).end()
                try:
                    value, stop = decode(buf, start)
                except json.JSONDecodeError:
                    break
                end = blank(buf, stop).end()
                if end >= limit:
                    break
                sep = buf[end]
                if sep != "," and sep != "]":
                    break
                record(start)
                record(stop)
                self.pos = pos = end + 1
                yield value
                if sep == "]":
                    done = True
                    break
            if spans is not None and window_spans:
                spans.frombytes((np.array(window_spans, np.int64) + self.base).tobytes())
            if done:
                return
            self._peek()
            start = self.base + self.pos
            value = self._value()
            if spans is not None:
                spans.extend((start, self.base + self.pos))
            yield value
            if self._expect(",]") == "]":
                return


@contextlib.contextmanager
def _file_members(path: str, spans: dict[str, array] | None = None) -> Iterator[Iterator[tuple[str, Any]]]:
    """The top-level members of the annotation file ``path``, ``images`` and ``annotations`` element by
    element (``_JsonObjectStream.members``); bad JSON is one PruneHooksError naming the file."""
    with open_text(path, "annotation file") as f, no_gc():
        try:
            yield _JsonObjectStream(f, path).members(("images", "annotations"), spans)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PruneHooksError(f"annotation file {path} is not valid JSON: {e}") from None


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
        self.spans: _EntrySpans | None = None

    def add_images(self, images: Iterable[Any]) -> None:
        src, seen, ids, kept = self.src, set(), self.image_ids, []
        for k, img in enumerate(images):
            iid = img.get("id") if isinstance(img, dict) else None
            if not _is_int(iid):
                raise PruneHooksError(f"{src}: images[{k}].id must be an integer, got {iid!r}")
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
            if not _is_int(cid):
                raise PruneHooksError(f"{self.src}: categories[{k}].id must be an integer, got {cid!r}")
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
            if not _is_int(aid):
                raise PruneHooksError(f"{src}: annotations[{k}].id must be an integer, got {aid!r}")
            iid, cid = ann.get("image_id"), ann.get("category_id")
            if not _is_int(iid):
                raise PruneHooksError(f"{src}: annotations[{k}] (id {aid}): image_id {iid!r} is not in 'images'")
            if not _is_int(cid):
                raise PruneHooksError(f"{src}: annotations[{k}] (id {aid}): category_id {cid!r} is not in 'categories'")
            bbox = ann.get("bbox")
            x, y, w, h = _check_bbox(f"{src}: annotations[{k}] (id {aid})", bbox)
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
class _EntrySpans:
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
    _spans: _EntrySpans | None = None

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
        with _file_members(self.path) as members:
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
    with _file_members(path, spans) as members:
        for key, value in members:
            keys.append(key)
            if key not in ("images", "annotations"):
                build.header[key] = value
            if key in ("images", "annotations", "categories"):
                if not isinstance(value, (list, Iterator)):
                    raise PruneHooksError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
                getattr(build, f"add_{key}")(value)
    if set(spans) == {"images", "annotations"} and len(keys) == len(set(keys)):
        build.spans = _EntrySpans(
            stamp, keys, *(np.frombuffer(spans[k], np.int64).reshape(-1, 2) for k in ("images", "annotations"))
        )
    return build.finish(path, None)


@dataclass
class Detections:
    """Detections of one scoring pass, grouped like the ``CocoIndex`` they were checked against.

    Detections of ``index.image_ids[i]`` are rows ``offsets[i]:offsets[i + 1]`` of
    ``boxes`` ndarray[M, 4] (xyxy float64), ``scores`` ndarray[M], ``category_ids`` ndarray[M] int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_results(cls, results: Any, index: CocoIndex, src: str = "detections") -> Detections:
        """Validate COCO results (``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``).

        Zero-width or zero-height boxes are skipped with a warning (some detectors emit them for
        degenerate proposals); everything else that is malformed raises.
        """
        if not isinstance(results, list):
            raise PruneHooksError(f"{src}: COCO results must be a list of detections, got {type(results).__name__}")
        pos = index.image_position()
        cats = set(index.category_ids.tolist())
        rows: list[tuple[int, int, float, float, float, float, float, int]] = []
        skipped = 0
        for k, det in enumerate(results):
            if not isinstance(det, dict):
                raise PruneHooksError(f"{src}: [{k}] must be an object, got {type(det).__name__}")
            iid, cid, score = det.get("image_id"), det.get("category_id"), det.get("score")
            if not _is_int(iid) or int(iid) not in pos:
                raise PruneHooksError(f"{src}: [{k}].image_id {iid!r} is not an image of the annotation file")
            if not _is_int(cid) or int(cid) not in cats:
                raise PruneHooksError(f"{src}: [{k}].category_id {cid!r} is not a category of the annotation file")
            if not _is_number(score) or not math.isfinite(float(score)):
                raise PruneHooksError(f"{src}: [{k}].score must be a finite number, got {score!r}")
            x, y, w, h = _check_bbox(f"{src}: [{k}]", det.get("bbox"))
            if w < 0 or h < 0:
                raise PruneHooksError(f"{src}: [{k}]: bbox width and height must be >= 0, got width {w} height {h}")
            if w == 0 or h == 0:
                skipped += 1
                continue
            rows.append((pos[int(iid)], k, x, y, x + w, y + h, float(score), int(cid)))
        if skipped:
            logger.warning("%s: skipped %d zero-area detection box(es)", src, skipped)
        rows.sort(key=lambda r: (r[0], r[1]))
        m = len(rows)
        data = np.array([r[2:7] for r in rows], dtype=np.float64).reshape(m, 5)
        where = np.array([r[0] for r in rows], dtype=np.int64)
        counts = np.bincount(where, minlength=index.num_images) if m else np.zeros(index.num_images, np.int64)
        return cls(
            boxes=data[:, :4].copy(),
            scores=data[:, 4].copy(),
            category_ids=np.array([r[7] for r in rows], dtype=np.int64),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )


def load_detections(path: str | os.PathLike, index: CocoIndex) -> Detections:
    return Detections.from_results(read_json(path, "detections file"), index, src=str(path))


def write_pruned_coco(
    source: CocoIndex | dict | str | os.PathLike,
    keep_image_ids: Iterable[int],
    path: str | os.PathLike,
    replace: dict | None = None,
) -> Path:
    """Write the COCO file ``source`` restricted to ``keep_image_ids``. ``source``: a ``CocoIndex``, a
    parsed dataset, or a file (read member by member: never held whole).

    Kept: those images (file order), all their annotations (crowd regions included), every category,
    and every other top-level member (``info``, ``licenses``, ...) unchanged in the source's order;
    ``replace`` gives new values for top-level members other than images and annotations (a member
    the source lacks comes last). Entries are written by ``json.dumps``, except from the index of an
    unchanged file read by ``load_coco``: its kept entries are copied as the file writes them (no
    second parse; the same bytes for a file that ``json.dump`` wrote).
    """
    keep = {int(i) for i in keep_image_ids}
    replace = dict(replace or {})
    if {"images", "annotations"} & set(replace):
        raise ValueError("write_pruned_coco: images and annotations are not replaceable")
    if isinstance(source, CocoIndex):
        if source._dataset is None and source._spans is not None and source._spans.usable(source.path):
            return _copy_kept_entries(source, keep, path, replace)
        source = source.dataset if source._dataset is not None or source.path is None else source.path
    opened = contextlib.nullcontext(source.items()) if isinstance(source, dict) else _file_members(str(source))
    with opened as members, atomic_writer(path) as out:
        dumps, sep = json.dumps, "{"
        for key, value in members:
            out.write(f"{sep}{dumps(key)}: ".encode())
            sep = ", "
            if key in ("images", "annotations"):
                field = "id" if key == "images" else "image_id"
                first = True
                out.write(b"[")
                for item in value:
                    if int(item[field]) in keep:
                        out.write((dumps(item) if first else ", " + dumps(item)).encode())
                        first = False
                out.write(b"]")
            else:
                out.write(dumps(replace.pop(key, value)).encode())
        _write_rest(out, replace, sep)
    return Path(path)


def _write_rest(out: Any, replace: dict, sep: str) -> None:
    for key, value in replace.items():
        out.write(f"{sep}{json.dumps(key)}: {json.dumps(value)}".encode())
        sep = ", "
    out.write(b"}\n")


def _copy_kept_entries(index: CocoIndex, keep: set[int], path: str | os.PathLike, replace: dict) -> Path:
    """``write_pruned_coco`` from the entry positions ``load_coco`` recorded: one sequential read."""
    spans, wanted = index._spans, np.fromiter(keep, np.int64, len(keep))
    kept = {
        "images": spans.images[np.isin(index.image_ids, wanted)],
        "annotations": spans.annotations[np.isin(spans.ann_image_ids, wanted)],
    }
    with open_text(index.path, "annotation file") as f, atomic_writer(path) as out:
        in_file_order = [kept[key] for key in spans.members if key in kept]
        text = _file_slices(f, index.path, np.concatenate(in_file_order).tolist())
        sep = "{"
        for key in spans.members:
            out.write(f"{sep}{json.dumps(key)}: ".encode())
            sep = ", "
            if key in kept:
                n = len(kept[key])
                out.write(b"[")
                for a in range(0, n, 4096):
                    part = ", ".join(next(text) for _ in range(min(4096, n - a)))
                    out.write((", " + part if a else part).encode())
                out.write(b"]")
            else:
                out.write(json.dumps(replace.pop(key, index.header[key])).encode())
        _write_rest(out, replace, sep)
    return Path(path)


def _file_slices(f: Any, src: str, spans: list[list[int]]) -> Iterator[str]:
    """The text of each [start, end) of the open text file ``f``; ``spans`` ascending, not overlapping."""
    buf, base, window = "", 0, _JsonObjectStream.WINDOW
    for start, end in spans:
        while end > base + len(buf):
            chunk = f.read(max(window, len(buf)))
            if not chunk:
                raise PruneHooksError(f"annotation file {src} ended early: it changed while it was read")
            cut = min(start - base, len(buf))
            buf, base = buf[cut:] + chunk, base + cut
        yield buf[start - base : end - base]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
