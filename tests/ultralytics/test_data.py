"""YOLO label files as the COCO file the core reads: hand-made cases, and generated damaged lines (property)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("ultralytics")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prune_hooks.core.data.coco import load_coco  # noqa: E402
from prune_hooks.core.errors import PruneHooksError  # noqa: E402
from prune_hooks.ultralytics.data import label_path, yolo_to_coco  # noqa: E402

NAMES = {0: "a", 1: "b"}


def _dataset(root, labels: dict[str, str | None]):
    images = []
    for name, text in labels.items():
        image = root / "images" / "train" / f"{name}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"")
        if text is not None:
            label = root / "labels" / "train" / f"{name}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
        images.append(str(image))
    return images


def test_boxes_polygons_backgrounds_and_stable_ids(tmp_path):
    images = _dataset(
        tmp_path,
        {"z": "1 0.5 0.5 0.2 0.4\n", "a": "0 0.1 0.1 0.3 0.1 0.3 0.3\n\n1 0.5 0.5 1 1\n", "m": None},
    )
    coco, rows = yolo_to_coco(images, [(100, 200)] * 3, NAMES)
    assert [im["file_name"] for im in coco["images"]] == sorted(images)  # ids in sorted path order
    a = coco["annotations"][0]
    assert a["image_id"] == 1 and a["category_id"] == 0
    assert a["bbox"] == pytest.approx([20, 10, 40, 20]) and a["segmentation"] == [
        pytest.approx([20, 10, 60, 10, 60, 30])
    ]
    assert coco["annotations"][1]["bbox"] == pytest.approx([0, 0, 200, 100])
    assert coco["annotations"][2]["bbox"] == pytest.approx([80, 30, 40, 40]) and coco["annotations"][2]["image_id"] == 3
    # (ann id, image id, label file, line): line 3 of a.txt, the blank line 2 skipped
    assert [(r[0], r[1], os.path.basename(r[2]), r[3]) for r in rows] == [
        (1, 1, "a.txt", 1),
        (2, 1, "a.txt", 3),
        (3, 3, "z.txt", 1),
    ]
    again, _ = yolo_to_coco(list(reversed(images)), [(100, 200)] * 3, NAMES)
    assert again == coco  # the same data, the same ids, whatever order Ultralytics lists it in
    assert label_path(f"{os.sep}d{os.sep}images{os.sep}x{os.sep}images{os.sep}p.png") == (
        f"{os.sep}d{os.sep}images{os.sep}x{os.sep}labels{os.sep}p.txt"
    )


LINE = st.one_of(
    st.builds(
        lambda c, v: " ".join([str(c), *map(repr, v)]),
        st.integers(-1, 3),
        st.lists(st.one_of(st.floats(-0.5, 1.5), st.sampled_from([float("nan"), float("inf"), 0.0])), max_size=9),
    ),
    st.text(max_size=12),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=4))
def test_label_lines_load_or_are_refused_in_one_line(tmp_path, lines):
    images = _dataset(tmp_path / "d", {"x": "\n".join(lines) + "\n"})
    try:
        coco, _ = yolo_to_coco(images, [(64, 64)], NAMES)
    except PruneHooksError as e:
        msg = str(e)
        assert "\n" not in msg and label_path(images[0]) in msg, msg
        return
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    index = load_coco(path)  # what the adapter writes, the core reads
    assert index.num_objects == len(coco["annotations"])
