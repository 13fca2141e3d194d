import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from prune_hooks.core.data.coco import CocoIndex, Detections, load_coco, write_pruned_coco
from prune_hooks.core.data.coco.stream import JsonObjectStream
from prune_hooks.core.errors import PruneHooksError
from tests.conftest import tiny_coco


def test_object_table_groups_by_image_file_order_and_skips_crowd(coco_file):
    idx = load_coco(coco_file)
    assert idx.image_ids.tolist() == [3, 1, 2]
    assert idx.ann_ids.tolist() == [13, 10, 11]
    assert idx.obj_image_ids.tolist() == [3, 1, 1]
    assert idx.offsets.tolist() == [0, 1, 3, 3]
    np.testing.assert_allclose(idx.obj_boxes[0], [5, 5, 25, 15])
    assert idx.category_ids.tolist() == [1, 2]


def test_pruned_file_round_trips_through_pycocotools(coco_file, tmp_path):
    idx = load_coco(coco_file)
    out = write_pruned_coco(idx.dataset, [1, 2], tmp_path / "pruned.json")
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert sorted(coco.getAnnIds()) == [10, 11, 12]  # the crowd region stays with its image
    assert sorted(coco.getCatIds()) == [1, 2]
    raw = json.loads(out.read_text())
    assert raw["info"] == {"description": "tiny"} and raw["licenses"] == [{"id": 1, "name": "CC0"}]
    assert list(raw) == list(tiny_coco())
    assert not list(tmp_path.glob(".*.tmp")), "atomic writer left a temp file"


def mutate(fn):
    d = tiny_coco()
    fn(d)
    return d


@pytest.mark.parametrize(
    "data,msg",
    [
        ([], "top level must be an object"),
        (mutate(lambda d: d.pop("categories")), "missing 'categories'"),
        (mutate(lambda d: d.__setitem__("images", {})), "'images' must be a list"),
        (mutate(lambda d: d["images"].append({"id": 1})), r"images\[3\].id 1 is a duplicate image id"),
        (mutate(lambda d: d["images"][0].__setitem__("id", "x")), r"images\[0\].id must be an integer, got 'x'"),
        (
            mutate(lambda d: d["annotations"][0].__setitem__("image_id", 99)),
            r"annotations\[0\] \(id 10\): image_id 99 is not in 'images'",
        ),
        (mutate(lambda d: d["annotations"][0].__setitem__("category_id", 5)), "category_id 5 is not in 'categories'"),
        (
            mutate(lambda d: d["annotations"][1].__setitem__("bbox", [0, 0, 0, 4])),
            r"annotations\[1\] \(id 11\): bbox width and height must be > 0, got width 0.0",
        ),
        (
            mutate(lambda d: d["annotations"][1].__setitem__("bbox", [0, 0, float("inf"), 4])),
            "bbox values must be finite",
        ),
        (mutate(lambda d: d["annotations"][1].__setitem__("bbox", [0, 0, 4])), r"bbox must be \[x, y, width, height\]"),
        (mutate(lambda d: d["annotations"][1].__setitem__("id", 10)), "duplicate annotation id"),
    ],
)
def test_malformed_coco_errors_name_the_field(data, msg, tmp_path, monkeypatch):
    with pytest.raises(PruneHooksError, match=msg):
        CocoIndex.from_dataset(data, "gt.json")
    # The same message when the file is read member by member, through windows of a few characters.
    monkeypatch.setattr(JsonObjectStream, "WINDOW", 5)
    monkeypatch.setattr(JsonObjectStream, "MARGIN", 1)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PruneHooksError, match=msg):
        load_coco(path)


def big_coco(n_images=60, seed=0):
    """Images with 0-4 boxes (long floats, crowd regions, non-ASCII names), members in an unusual order."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": int(i), "file_name": f"bild_{i}_ü.png", "width": 640, "height": 480}
        for i in rng.permutation(1000)[:n_images]
    ]
    anns, aid = [], 7
    for im in images:
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 300, 2)
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [float(x), float(y), float(rng.uniform(1, 99)), 12],
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
            aid += int(rng.integers(1, 5))
    rng.shuffle(anns)  # annotations of one image are not together
    categories = [{"id": c, "name": f"c{c}"} for c in (3, 1, 2)]
    return {"annotations": anns, "info": {"version": 1.25}, "categories": categories, "images": images}


@pytest.mark.parametrize("window", [3, 17, 300, 1 << 22])
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("margin", [1, 4096])  # 1: the fast path meets elements cut by the window's end
def test_file_read_member_by_member_equals_parsed_dataset(tmp_path, monkeypatch, window, indent, margin):
    data = big_coco()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(JsonObjectStream, "WINDOW", window)
    monkeypatch.setattr(JsonObjectStream, "MARGIN", margin)
    streamed, parsed = load_coco(path), CocoIndex.from_dataset(json.loads(path.read_text()), str(path))
    for field in ("image_ids", "category_ids", "ann_ids", "obj_image_ids", "obj_category_ids", "obj_boxes", "offsets",
                  "obj_rows"):  # fmt: skip
        np.testing.assert_array_equal(getattr(streamed, field), getattr(parsed, field), err_msg=field)
    assert streamed.images == data["images"] and streamed.categories == parsed.categories
    assert streamed.header == {"info": {"version": 1.25}, "categories": data["categories"]}
    assert streamed.object_values("bbox") == parsed.object_values("bbox")  # streamed: the dataset is not held
    assert streamed.object_values("area") == [None] * streamed.num_objects
    assert streamed._dataset is None and streamed.dataset == data  # parsed when first asked for
    # Every non-crowd box is an object of its own image, in file order within the image.
    objects = [a for a in data["annotations"] if not a["iscrowd"]]
    assert sorted(streamed.ann_ids.tolist()) == sorted(a["id"] for a in objects)
    assert all(np.all(np.diff(streamed.obj_rows[a:b]) > 0) for a, b in zip(streamed.offsets[:-1], streamed.offsets[1:]))


def test_pruned_file_streamed_from_the_source_file_has_the_same_bytes(tmp_path, monkeypatch):
    data = big_coco()
    src = tmp_path / "gt.json"
    src.write_text(json.dumps(data))
    monkeypatch.setattr(JsonObjectStream, "WINDOW", 11)
    keep = [im["id"] for im in data["images"][::3]]
    from_file = write_pruned_coco(load_coco(src), keep, tmp_path / "a.json", replace={"info": {"x": 1}})
    from_dict = write_pruned_coco(data, keep, tmp_path / "b.json", replace={"info": {"x": 1}})
    assert from_file.read_bytes() == from_dict.read_bytes()
    out = json.loads(from_file.read_text())
    assert list(out) == list(data) and out["info"] == {"x": 1}
    assert [im["id"] for im in out["images"]] == keep
    assert out["annotations"] == [a for a in data["annotations"] if a["image_id"] in set(keep)]
    added = json.loads(write_pruned_coco(src, keep, tmp_path / "c.json", replace={"fold": 2}).read_text())
    assert list(added) == [*data, "fold"] and added["fold"] == 2


@pytest.mark.parametrize("window", [7, 1 << 22])
def test_pruned_file_from_an_index_copies_the_kept_entries_as_the_file_writes_them(tmp_path, monkeypatch, window):
    data = big_coco()
    data["images"][0]["file_name"] = "café.jpg"
    src = tmp_path / "gt.json"
    src.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(JsonObjectStream, "WINDOW", window)
    keep = [im["id"] for im in data["images"][::3]]
    copied = write_pruned_coco(load_coco(src), keep, tmp_path / "a.json").read_text(encoding="utf-8")
    encoded = write_pruned_coco(data, keep, tmp_path / "b.json").read_text()
    assert json.loads(copied) == json.loads(encoded)
    assert list(json.loads(copied)) == ["annotations", "info", "categories", "images"]
    # copied as written: the file's line breaks and its unescaped name, which json.dumps writes otherwise
    assert '"file_name": "café.jpg"' in copied and "caf\\u00e9" in encoded
    assert copied.count("\n") > len(keep) and encoded.count("\n") == 1


def test_pruned_file_from_an_index_whose_file_changed_reads_the_file_again(tmp_path):
    data = big_coco()
    src = tmp_path / "gt.json"
    src.write_text(json.dumps(data))
    index = load_coco(src)
    for ann in data["annotations"]:
        ann["area"] = 1.5
    src.write_text(json.dumps(data))
    keep = {im["id"] for im in data["images"][1::2]}
    out = json.loads(write_pruned_coco(index, keep, tmp_path / "a.json").read_text())
    assert out["annotations"] == [a for a in data["annotations"] if a["image_id"] in keep]


@pytest.mark.parametrize("text", ['{"images": [], "annotations": [', '{"images": [] "x": 1}', '{"images": []} []', ""])
def test_broken_json_file_is_one_error_naming_the_file(tmp_path, text):
    path = tmp_path / "gt.json"
    path.write_text(text)
    with pytest.raises(PruneHooksError, match=f"annotation file {path} is not valid JSON"):
        load_coco(path)


def test_detections_grouped_and_validated(coco_file, caplog):
    idx = load_coco(coco_file)
    dets = Detections.from_results(
        [
            {"image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2], "score": 0.5},
            {"image_id": 3, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 2], "score": 0.5},  # zero width: skipped
        ],
        idx,
    )
    assert dets.offsets.tolist() == [0, 1, 2, 2]
    assert dets.scores.tolist() == [0.9, 0.5]
    assert "skipped 1 zero-area" in caplog.text
    with pytest.raises(PruneHooksError, match=r"\[0\].image_id 7 is not an image"):
        Detections.from_results([{"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], idx)
    with pytest.raises(PruneHooksError, match="must be >= 0, got width -1.0"):
        Detections.from_results([{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}], idx)
