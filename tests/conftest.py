import json

import pytest


def tiny_coco():
    """Three images: two objects + a crowd region, one object, none."""
    return {
        "info": {"description": "tiny"},
        "licenses": [{"id": 1, "name": "CC0"}],
        "images": [
            {"id": 3, "file_name": "c.png", "width": 40, "height": 40},
            {"id": 1, "file_name": "a.png", "width": 40, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 40},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 20, 5, 5], "area": 25, "iscrowd": 1},
            {"id": 13, "image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
        ],
    }


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(tiny_coco()))
    return path
