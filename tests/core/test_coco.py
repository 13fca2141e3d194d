import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from prune_hooks.core import CocoIndex, Detections, PruneHooksError, load_coco, write_pruned_coco
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
def test_malformed_coco_errors_name_the_field(data, msg):
    with pytest.raises(PruneHooksError, match=msg):
        CocoIndex.from_dataset(data, "gt.json")


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
