"""prune-hooks report on a run scored from generated detections."""

import json

import numpy as np
from PIL import Image

from prune_hooks.cli import main
from prune_hooks.core.outputs.report import kl_divergence


def test_report_plots_and_numbers(tmp_path):
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 31):
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64})
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, 40, 2)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [x, y, 12, 10],
                    "area": 120,
                    "iscrowd": 0,
                }
            )
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    passes = []
    for t in range(3):
        dets = [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [v + rng.normal(0, 2) for v in a["bbox"]],
                "score": float(rng.uniform(0.2, 1)),
            }
            for a in anns
        ]
        passes.append(tmp_path / f"p{t}.json")
        passes[-1].write_text(json.dumps(dets))
    run = tmp_path / "run"
    assert (
        main(
            [
                "score",
                "vps",
                "--annotations",
                str(tmp_path / "gt.json"),
                "--detections",
                *map(str, passes),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["select", str(run), "--method", "vps_iou", "--keep", "0.3"]) == 0
    assert main(["report", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "9 of 30 images (30%)" in report and "KL(kept || full)" in report
    for name in (
        "vps_scatter.png",
        "image_scores.png",
        "class_distribution.png",
        "box_sizes.png",
        "objects_per_image.png",
    ):
        png = np.asarray(Image.open(run / "report" / name).convert("L"), dtype=np.float64)
        assert png.std() > 10, name  # something drawn, not an empty canvas
        assert f"]({name})" in report


def test_kl_divergence_hand_values():
    assert kl_divergence([1, 1], [1, 1]) < 1e-9
    assert abs(kl_divergence([3, 1], [1, 1]) - (0.75 * np.log(1.5) + 0.25 * np.log(0.5))) < 1e-6


def test_class_plot_at_lvis_scale_shows_the_most_shifted_classes_and_the_rest(tmp_path):
    """1,203 categories (LVIS v1), most unused: the class plot stays readable (31 bars, not 1,203)."""
    rng = np.random.default_rng(1)
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 1204)]
    images = [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(1, 41)]
    anns = [
        {
            "id": k + 1,
            "image_id": int(rng.integers(1, 41)),
            "category_id": int(rng.integers(1, 80)),
            "bbox": [5, 5, 10, 10],
            "area": 100,
        }  # fmt: skip
        for k in range(200)
    ]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    run = tmp_path / "run"
    # a run from detections of the GT boxes themselves, then a random subset and its report
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in anns]
    (tmp_path / "d.json").write_text(json.dumps(dets))
    argv = ["score", "vps", "--annotations", str(tmp_path / "gt.json"), "--detections", str(tmp_path / "d.json")]
    assert main([*argv, "--out", str(run)]) == 0
    assert main(["select", str(run), "--method", "random", "--keep", "0.5"]) == 0
    assert main(["report", str(run)]) == 0
    width, height = Image.open(run / "report" / "class_distribution.png").size
    assert width < 2000, width  # one bar per class would be ~420 inches wide
