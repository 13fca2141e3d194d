"""Selection methods through ``prune-hooks select`` on generated run directories."""

import json

import numpy as np

from prune_hooks.cli import main
from prune_hooks.core.selection.algorithms import herding, kcenter_greedy, random_per_class


def make_coco(path, n_images=40, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64})
        if i % 9 == 0:
            continue  # objectless
        for _ in range(int(rng.integers(1, 4))):
            c = int(min(rng.geometric(0.5), n_classes))  # long tail: class 1 most frequent
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c,
                    "bbox": [1, 1, 10, 10],
                    "area": 100,
                    "iscrowd": 0,
                }
            )
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_classes + 1)],
    }
    path.write_text(json.dumps(coco))
    return coco


def write_prototypes(path, coco, dim=6, seed=0, **override):
    rng = np.random.default_rng(seed)
    pairs = sorted({(a["image_id"], a["category_id"]) for a in coco["annotations"]})
    arrays = {
        "image_id": np.array([p[0] for p in pairs]),
        "category_id": np.array([p[1] for p in pairs]),
        "feature": np.maximum(rng.normal(size=(len(pairs), dim)), 0).astype(np.float32) + 0.01,
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return arrays


def err(capsys, argv):
    assert main(argv) == 1
    e = capsys.readouterr().err.strip()
    assert e.count("\n") == 0, e
    return e


def test_prototypes_only_directory_with_annotations_all_methods_and_ratios(tmp_path, caplog):
    coco = make_coco(tmp_path / "gt.json")
    run = tmp_path / "protos"
    run.mkdir()
    write_prototypes(run / "prototypes.npz", coco)
    argv = ["select", str(run), "--annotations", str(tmp_path / "gt.json"), "--method", "all", "--keep", "0.3", "0.5"]
    assert main(argv) == 0
    written = sorted(p.parent.name for p in (run / "subsets").glob("*/subset.json"))
    # no images.csv here: the score methods are skipped, the others run at both ratios
    assert written == sorted(
        f"{m}_keep{k}"
        for m in ("csod", "kcenter", "herding", "random", "random_uniform", "random_ratio")
        for k in (0.3, 0.5)
    )
    for name in written:
        s = json.loads((run / "subsets" / name / "subset.json").read_text())
        assert s["n_images"] == (12 if "0.3" in name else 20) and len(set(s["image_ids"])) == s["n_images"]
        pruned = json.loads((run / "subsets" / name / "gt_pruned.json").read_text())
        assert sorted(i["id"] for i in pruned["images"]) == sorted(s["image_ids"])
    csod = json.loads((run / "subsets" / "csod_keep0.3" / "subset.json").read_text())
    assert csod["lambda"] == 0.05 and csod["csod_greedy_images"] == 12
    assert "skipping vps_iou: method vps_iou needs images.csv" in caplog.text


def test_csod_prefix_property_and_seeded_random_variants(tmp_path):
    coco = make_coco(tmp_path / "gt.json", n_images=60)
    run = tmp_path / "r"
    run.mkdir()
    write_prototypes(run / "prototypes.npz", coco)
    picks = {}
    for keep in ("0.2", "0.6"):
        assert (
            main(
                [
                    "select",
                    str(run),
                    "--annotations",
                    str(tmp_path / "gt.json"),
                    "--method",
                    "csod",
                    "--keep",
                    keep,
                    "--out",
                    str(tmp_path / keep),
                ]
            )
            == 0
        )
        picks[keep] = json.loads((tmp_path / keep / "subset.json").read_text())["image_ids"]
    assert picks["0.6"][: len(picks["0.2"])] == picks["0.2"]  # greedy: a smaller budget is a prefix
    # two budgets in one call: the same picks as one call each
    assert main(["select", str(run), "--annotations", str(tmp_path / "gt.json"), "--method", "csod", "--keep",
                 "0.2", "0.6", "--out", str(tmp_path / "both")]) == 0  # fmt: skip
    for keep in ("0.2", "0.6"):
        assert (
            json.loads((tmp_path / "both" / "subsets" / f"csod_keep{keep}" / "subset.json").read_text())["image_ids"]
            == picks[keep]
        )


def test_random_per_class_variants():
    image_ids = np.arange(1, 31)
    obj_img = np.array([i for i in range(1, 31) for _ in range(2)])
    obj_cat = np.array([1 if i <= 25 else 2 for i in range(1, 31) for _ in range(2)])
    uni = random_per_class(image_ids, obj_img, obj_cat, 10, seed=3, proportional=False)
    assert len(set(uni.tolist())) == 10
    assert sum(i > 25 for i in uni) == 5  # classes alternate: 5 of the 5 class-2 images
    again = random_per_class(image_ids, obj_img, obj_cat, 10, seed=3, proportional=False)
    assert uni.tolist() == again.tolist()
    counts = [
        sum(i > 25 for i in random_per_class(image_ids, obj_img, obj_cat, 12, seed=s, proportional=True))
        for s in range(200)
    ]
    assert 1.0 < np.mean(counts) < 3.0  # ~ 12 * 5/30 = 2 expected under proportional draws
    full = random_per_class(image_ids, obj_img, obj_cat, 30, seed=0, proportional=True)
    assert sorted(full.tolist()) == image_ids.tolist()


def test_kcenter_and_herding_match_naive_loops():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    k = kcenter_greedy(x, 10, seed=4, device="cpu").tolist()
    first = int(np.random.default_rng(4).integers(50))
    naive = [first]
    for _ in range(9):
        d = np.min(((x[:, None, :] - x[naive][None]) ** 2).sum(-1), axis=1)
        d[naive] = -1
        naive.append(int(np.argmax(d)))
    assert k == naive
    h = herding(x, 10, device="cpu").tolist()
    chosen = []
    for _ in range(10):
        best = min(
            (i for i in range(50) if i not in chosen), key=lambda i: np.sum((x.mean(0) - x[chosen + [i]].mean(0)) ** 2)
        )
        chosen.append(best)
    assert h == chosen


def test_bad_inputs_each_one_clear_error(tmp_path, capsys):
    coco = make_coco(tmp_path / "gt.json")
    run = tmp_path / "r"
    run.mkdir()
    sel = ["select", str(run), "--annotations", str(tmp_path / "gt.json"), "--keep", "0.5", "--method"]
    assert "csod needs prototypes.npz" in err(capsys, sel + ["csod"])
    assert "vps_iou needs images.csv" in err(capsys, sel + ["vps_iou"])
    good = write_prototypes(run / "prototypes.npz", coco)
    assert "lambda must be a finite number > 0, got 0.0" in err(capsys, sel + ["csod", "--lambda", "0"])
    assert "lambda must be a finite number > 0, got -1.0" in err(capsys, sel + ["csod", "--lambda", "-1"])
    cases = {
        "image ids not in": dict(image_id=good["image_id"] + 1000),
        "category ids not in": dict(category_id=good["category_id"] + 100),
        "has NaN or inf": dict(
            feature=np.where(np.arange(len(good["image_id"]))[:, None] == 2, np.nan, good["feature"])
        ),
        "is a zero vector": dict(
            feature=np.where(np.arange(len(good["image_id"]))[:, None] == 0, 0.0, good["feature"])
        ),
        "mismatched array lengths": dict(category_id=good["category_id"][:-1]),
    }
    for message, override in cases.items():
        write_prototypes(run / "prototypes.npz", coco, **override)
        assert message in err(capsys, sel + ["csod"])
    (run / "prototypes.npz").write_bytes(b"not a zip")
    assert "not a readable npz file" in err(capsys, sel + ["kcenter"])
    assert "--drop-mislabeled needs label_issues.csv" in err(capsys, sel + ["random", "--drop-mislabeled"])


def test_entropy_needs_soft_labels(tmp_path, capsys, coco_file):
    det = tmp_path / "d.json"
    det.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8}]))
    # image 3's object is learned too, so forgetting (inf for image 1, 0 for image 3) can rank
    dets = json.loads(det.read_text()) + [{"image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9}]
    det.write_text(json.dumps(dets))
    assert (
        main(
            ["score", "vps", "--annotations", str(coco_file), "--detections", str(det), "--out", str(tmp_path / "run")]
        )
        == 0
    )
    assert "method entropy needs soft labels" in err(
        capsys, ["select", str(tmp_path / "run"), "--method", "entropy", "--keep", "0.5"]
    )
    assert main(["select", str(tmp_path / "run"), "--method", "forgetting", "--keep", "0.5"]) == 0


def test_a_constant_score_is_refused(tmp_path, capsys, coco_file):
    """No object ever matched: every VPS is 0, and a subset picked by it would only sort image ids."""
    det = tmp_path / "d.json"
    det.write_text("[]")
    argv = ["score", "vps", "--annotations", str(coco_file), "--detections", str(det), str(det), "--out"]
    assert main(argv + [str(tmp_path / "run")]) == 0
    msg = err(capsys, ["select", str(tmp_path / "run"), "--method", "vps_iou", "--keep", "0.5"])
    assert "vps_iou_max is 0 for all 2 scored images, so it cannot rank them" in msg
    assert (
        main(["select", str(tmp_path / "run"), "--method", "all", "--keep", "0.5", "--out", str(tmp_path / "a")]) == 0
    )
    made = sorted(p.name for p in (tmp_path / "a" / "subsets").iterdir())
    assert made == ["random_keep0.5", "random_ratio_keep0.5", "random_uniform_keep0.5"]
