"""Every reader of a user file either returns what the core accepts or raises PruneHooksError with one line that
names the file; never another exception. Valid files are generated, then damaged (dropped, retyped, negated,
truncated, duplicated, out of range, NaN/inf, huge, unicode, empty values).

A bounded number of examples runs in `make test`; `HYPOTHESIS_PROFILE=long pytest tests/core/data` runs more.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prune_hooks.core.data.coco import Detections, load_coco, write_pruned_coco  # noqa: E402
from prune_hooks.core.data.rundir import read_images_csv, read_label_issues, read_meta, read_objects_csv  # noqa: E402
from prune_hooks.core.errors import PruneHooksError  # noqa: E402
from prune_hooks.core.scoring.prototypes import load_prototypes  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
FIXTURE = [HealthCheck.function_scoped_fixture]

WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=5),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@st.composite
def coco(draw):
    """A valid COCO instances dict: images, categories, annotations with boxes (some crowd, some polygons)."""
    n_img = draw(st.integers(0, 5))
    cats = [{"id": c, "name": f"c{c}"} for c in draw(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True))]
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 50, "height": 40} for i in range(n_img)]
    anns = []
    for k in range(draw(st.integers(0, 8)) if n_img else 0):
        x, y = draw(st.floats(0, 30)), draw(st.floats(0, 20))
        w, h = draw(st.floats(0.5, 20)), draw(st.floats(0.5, 20))
        ann = {
            "id": 100 + k,
            "image_id": draw(st.sampled_from(images))["id"],
            "category_id": draw(st.sampled_from(cats))["id"],
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": draw(st.sampled_from([0, 0, 0, 1])),
        }
        if draw(st.booleans()):
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h]]
        anns.append(ann)
    return {"info": {"description": "generated"}, "images": images, "annotations": anns, "categories": cats}


def _paths(d, prefix=()):
    """Every (path of keys/indices) inside a JSON-like value."""
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, (*prefix, i))


@st.composite
def damaged(draw, base):
    """``base`` with one place dropped, replaced by a weird value, or duplicated."""
    d = copy.deepcopy(draw(base))
    places = [p for p in _paths(d) if p]
    if not places:
        return d
    path = draw(st.sampled_from(places))
    parent = d
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = draw(st.sampled_from(["drop", "replace", "duplicate", "negate"]))
    if action == "drop":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(WEIRD)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    elif action == "negate" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = -parent[key]
    return d


def _one_line(err: PruneHooksError, path) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    assert str(path) in msg or os.path.basename(str(path)) in msg, msg


def _write(path, text: str | bytes) -> None:
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)


@settings(suppress_health_check=FIXTURE)
@given(data=st.one_of(coco(), damaged(coco())), cut=st.one_of(st.none(), st.integers(0, 400)))
def test_coco_loader_accepts_or_refuses_in_one_line(tmp_path, data, cut):
    path = tmp_path / "gt.json"
    text = json.dumps(data)
    _write(path, text[:cut] if cut is not None else text)
    try:
        index = load_coco(path)
    except PruneHooksError as e:
        _one_line(e, path)
        return
    # what the loader accepts, the core takes: consistent arrays, finite boxes, a pruned file that loads again
    assert index.offsets[-1] == index.num_objects == len(index.ann_ids) == len(index.obj_boxes)
    assert np.isfinite(index.obj_boxes).all() and (index.obj_boxes[:, 2:] > index.obj_boxes[:, :2]).all()
    assert len(set(index.ann_ids.tolist())) == index.num_objects
    keep = index.image_ids[: max(1, index.num_images // 2)]
    again = load_coco(write_pruned_coco(index, keep, tmp_path / "pruned.json"))
    assert set(again.image_ids.tolist()) == set(keep.tolist())


@st.composite
def results(draw, index_ids, cat_ids):
    dets = []
    for _ in range(draw(st.integers(0, 6))):
        dets.append(
            {
                "image_id": draw(st.sampled_from(index_ids)),
                "category_id": draw(st.sampled_from(cat_ids)),
                "bbox": [
                    draw(st.floats(0, 30)),
                    draw(st.floats(0, 30)),
                    draw(st.floats(0, 10)),
                    draw(st.floats(0, 10)),
                ],
                "score": draw(st.floats(0, 1)),
            }
        )
    return dets


GT = {
    "images": [{"id": 1, "width": 40, "height": 40}, {"id": 2, "width": 40, "height": 40}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}],
    "categories": [{"id": 3, "name": "x"}],
}


@settings(suppress_health_check=FIXTURE)
@given(dets=st.one_of(results([1, 2], [3]), damaged(results([1, 2], [3]))))
def test_detections_accept_or_refuse_in_one_line(tmp_path, dets):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(GT))
    index = load_coco(gt)
    try:
        d = Detections.from_results(dets, index, src=str(tmp_path / "dets.json"))
    except PruneHooksError as e:
        _one_line(e, tmp_path / "dets.json")
        return
    assert np.isfinite(d.boxes).all() and np.isfinite(d.scores).all()
    assert ((d.scores >= 0) & (d.scores <= 1)).all(), "a confidence outside [0, 1] is not a probability"
    assert d.offsets[-1] == len(d.scores) == len(d.category_ids)


CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "abc", "1e999", "ü", '"', "1,2"]),
)


@settings(suppress_health_check=FIXTURE)
@given(
    which=st.sampled_from(["images", "objects"]),
    header=st.one_of(
        st.just(None), st.lists(st.sampled_from(["image_id", "n_objects", "ann_id", "x", ""]), max_size=4)
    ),
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=5), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 60)),
)
def test_run_tables_accept_or_refuse_in_one_line(tmp_path, which, header, rows, cut):
    first = ["image_id", "n_objects"] if which == "images" else ["ann_id", "image_id", "category_id"]
    columns = first + ["vps_iou_max"] if header is None else header
    text = "\n".join([",".join(columns), *(",".join(r) for r in rows)]) + "\n"
    path = tmp_path / f"{which}.csv"
    _write(path, text[:cut] if cut is not None else text)
    reader = read_images_csv if which == "images" else read_objects_csv
    try:
        table = reader(tmp_path)
    except PruneHooksError as e:
        _one_line(e, path)
        return
    lengths = {len(v) for v in table.values()}
    assert len(lengths) <= 1  # every column as long as the others
    for name in first[:2]:
        assert table[name].dtype == np.int64


@settings(suppress_health_check=FIXTURE)
@given(text=st.one_of(st.text(max_size=30), st.binary(max_size=30).map(lambda b: b.decode("latin-1"))))
def test_meta_and_label_issues_accept_or_refuse_in_one_line(tmp_path, text):
    (tmp_path / "meta.json").write_text(text, encoding="utf-8")
    try:
        meta = read_meta(tmp_path)
        assert isinstance(meta, dict)
    except PruneHooksError as e:
        _one_line(e, tmp_path / "meta.json")
    (tmp_path / "label_issues.csv").write_text(text, encoding="utf-8")
    try:
        rows = read_label_issues(tmp_path)
        assert isinstance(rows, list)
    except PruneHooksError as e:
        _one_line(e, tmp_path / "label_issues.csv")


@settings(suppress_health_check=FIXTURE)
@given(
    n=st.integers(0, 4),
    dim=st.integers(0, 3),
    dtype=st.sampled_from(["float16", "float32", "int32", "float64"]),
    drop=st.sampled_from([None, "image_id", "category_id", "feature"]),
    bad=st.sampled_from([None, "nan", "zero", "short", "object"]),
    cut=st.one_of(st.none(), st.integers(0, 300)),
)
def test_prototypes_accept_or_refuse_in_one_line(tmp_path, n, dim, dtype, drop, bad, cut):
    arrays = {
        "image_id": np.arange(1, n + 1),
        "category_id": np.ones(n, np.int64),
        "feature": np.ones((n, dim), dtype=dtype),
    }
    if bad == "nan" and n and dim:
        arrays["feature"][0, 0] = math.nan if "float" in dtype else 0
    elif bad == "zero" and n:
        arrays["feature"][0] = 0
    elif bad == "short":
        arrays["image_id"] = arrays["image_id"][:-1]
    elif bad == "object":
        arrays["category_id"] = np.array(["a"] * n)
    if drop:
        del arrays[drop]
    path = tmp_path / "prototypes.npz"
    np.savez(path, **arrays)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    try:
        protos = load_prototypes(path)
    except PruneHooksError as e:
        _one_line(e, path)
        return
    feat = np.asarray(protos["feature"], dtype=np.float64)
    assert feat.ndim == 2 and feat.shape[0] == len(protos["image_id"]) and np.isfinite(feat).all()
