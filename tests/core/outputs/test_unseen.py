"""UNSEEN building blocks: folds, the merge of fold runs, the comparison of two runs."""

import json

import numpy as np
import pytest

from prune_hooks.cli import main as cli
from prune_hooks.core.data.coco import CocoIndex, load_coco, sha256_file
from prune_hooks.core.data.rundir import read_images_csv, read_label_issues
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.io import write_csv, write_json
from prune_hooks.core.outputs.rundir import write_label_issues
from prune_hooks.core.outputs.unseen import check_score_set, compare_runs, fold_split, write_folds


def coco(n_images=11, seed=0):
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "file_name": f"{i}.png", "width": 50, "height": 50} for i in range(n_images)]
    anns, aid = [], 1
    for im in images:
        for _ in range(int(rng.integers(0, 3))):
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [1, 1, 5, 5],
                    "area": 25,
                    "iscrowd": 0,
                }
            )
            aid += 1
    anns.append({"id": aid, "image_id": 100, "category_id": 1, "bbox": [0, 0, 9, 9], "area": 81, "iscrowd": 1})
    return {
        "info": {"year": 2026},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


@pytest.fixture
def gt(tmp_path):
    path = tmp_path / "instances_train.json"
    path.write_text(json.dumps(coco()))
    return path


@pytest.mark.parametrize("k", [2, 3, 11])
def test_folds_partition_the_images_exactly(gt, tmp_path, k):
    full = load_coco(gt)
    pairs = write_folds(gt, k, seed=5, out=tmp_path / "f")
    trains = [json.loads(t.read_text()) for t, _ in pairs]
    ids = [sorted(i["id"] for i in d["images"]) for d in trains]
    assert sorted(sum(ids, [])) == sorted(full.image_ids.tolist())  # every image in exactly one fold
    assert max(map(len, ids)) - min(map(len, ids)) <= 1
    all_anns = {a["id"]: a for a in full.dataset["annotations"]}
    for (train, score), d, fold_ids in zip(pairs, trains, ids):
        s = json.loads(score.read_text())
        assert sorted(i["id"] for i in s["images"]) == sorted(set(full.image_ids.tolist()) - set(fold_ids))
        for part in (d, s):  # each image's annotations (crowd too) go with it; every category kept
            held = {i["id"] for i in part["images"]}
            assert sorted(a["id"] for a in part["annotations"]) == sorted(
                a for a, ann in all_anns.items() if ann["image_id"] in held
            )
            assert part["categories"] == full.dataset["categories"]
        assert d["info"]["prune_hooks_fold"]["source_sha256"] == sha256_file(gt) and d["info"]["year"] == 2026
    again = [
        sorted(i["id"] for i in json.loads(t.read_text())["images"]) for t, _ in write_folds(gt, k, 5, tmp_path / "g")
    ]
    assert again == ids  # seeded


def test_fold_split_bad_k(gt, capsys):
    with pytest.raises(PruneHooksError, match=r"--k must be an integer in \[2, 11\]"):
        fold_split(np.arange(11), 1, 0)
    for k in ("1", "12"):
        assert cli(["unseen", "folds", "--annotations", str(gt), "--k", k, "--out", "x"]) == 1
        err = capsys.readouterr().err
        assert f"--k must be an integer in [2, 11] (the number of images), got {k}" in err and err.count("\n") == 1


def fake_run(path, annotations, scores, methods=("vps_iou",)):
    """A run directory over the images of ``annotations`` with the given image scores (objects: score/2)."""
    index = load_coco(annotations)
    write_json(
        path / "meta.json",
        {"framework": "test", "annotations": str(annotations), "methods": list(methods), "passes": 3},
    )
    ids = index.image_ids.tolist()
    write_csv(
        path / "images.csv",
        ("image_id", "n_objects", "vps_iou_max"),
        [(i, int(n), scores[i]) for i, n in zip(ids, index.objects_per_image())],
    )
    write_csv(
        path / "objects.csv",
        ("ann_id", "image_id", "category_id", "iou_std"),
        [
            (a, i, c, scores[i] / 2)
            for a, i, c in zip(index.ann_ids.tolist(), index.obj_image_ids.tolist(), index.obj_category_ids.tolist())
        ],
    )
    return path


def test_merge_is_the_mean_over_the_runs_that_scored_each_image(gt, tmp_path):
    pairs = write_folds(gt, 3, seed=1, out=tmp_path / "f")
    rng = np.random.default_rng(0)
    truth: dict[int, list[float]] = {}
    runs = []
    for k, (_, score) in enumerate(pairs):
        ids = [i["id"] for i in json.loads(score.read_text())["images"]]
        scores = {i: float(rng.uniform()) for i in ids}
        for i, v in scores.items():
            truth.setdefault(i, []).append(v)
        runs.append(str(fake_run(tmp_path / f"r{k}", score, scores)))
    out = tmp_path / "merged"
    assert cli(["unseen", "merge", *runs, "--annotations", str(gt), "--out", str(out)]) == 0
    table = read_images_csv(out)
    for i, v, n in zip(table["image_id"], table["vps_iou_max"], table["unseen_runs"]):
        assert n == 2 and v == pytest.approx(sum(truth[int(i)]) / 2)  # K=3: each image scored by 2 models
    objects = {int(r.split(",")[0]): r for r in (out / "objects.csv").read_text().splitlines()[1:]}
    index = load_coco(gt)
    for a, i in zip(index.ann_ids.tolist(), index.obj_image_ids.tolist()):
        assert float(objects[a].split(",")[3]) == pytest.approx(sum(truth[i]) / 4)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_images"] == 11 and meta["unseen"]["runs"] and meta["annotations_sha256"] == sha256_file(gt)
    assert cli(["select", str(out), "--method", "vps_iou", "--keep", "0.5", "--out", str(tmp_path / "s")]) == 0
    best = max(truth, key=lambda i: (sum(truth[i]), -i))
    assert json.loads((tmp_path / "s" / "subset.json").read_text())["image_ids"][0] == best


def test_merge_keeps_every_runs_label_issues_once_per_object(gt, tmp_path):
    pairs = write_folds(gt, 2, seed=1, out=tmp_path / "f")
    index = load_coco(gt)
    a1, a2 = index.ann_ids[:2].tolist()
    flags = [
        [("wrong_class", a1, 0, 1, "[0, 0, 1, 1]", 2, "", 0.6), ("missing_box", "", 5, "", "", 1, "[1, 1, 2, 2]", 0.7)],
        [("wrong_class", a1, 0, 1, "[0, 0, 1, 1]", 2, "", 0.8), ("bad_location", a2, 0, 1, "[0, 0, 1, 1]", 1, "", 0.5)],
    ]
    runs = []
    for k, (_, score) in enumerate(pairs):
        ids = [i["id"] for i in json.loads(score.read_text())["images"]]
        run = fake_run(tmp_path / f"r{k}", score, {i: 0.5 for i in ids})
        write_label_issues(run, flags[k])
        runs.append(str(run))
    out = tmp_path / "merged"
    assert cli(["unseen", "merge", *runs, "--annotations", str(gt), "--out", str(out)]) == 0
    rows = [(r["kind"], r["ann_id"], r["score"]) for r in read_label_issues(out)]
    assert rows == [("wrong_class", str(a1), "0.8"), ("bad_location", str(a2), "0.5"), ("missing_box", "", "0.7")]


def test_merge_refusals(gt, tmp_path, capsys):
    pairs = write_folds(gt, 2, seed=1, out=tmp_path / "f")
    ids = [[i["id"] for i in json.loads(s.read_text())["images"]] for _, s in pairs]
    a = fake_run(tmp_path / "a", pairs[0][1], {i: 0.5 for i in ids[0]})
    b = fake_run(tmp_path / "b", pairs[1][1], {i: 0.5 for i in ids[1]}, methods=("vps_conf",))

    def err(*argv):
        assert cli(["unseen", "merge", *map(str, argv)]) == 1
        return capsys.readouterr().err

    assert "runs of different methods" in err(a, b, "--annotations", gt, "--out", tmp_path / "o")
    assert "were scored by no run" in err(a, "--annotations", gt, "--out", tmp_path / "o")
    other = tmp_path / "other.json"
    data = coco()
    data["images"] = data["images"][:5]
    data["annotations"] = [x for x in data["annotations"] if x["image_id"] < 105]
    other.write_text(json.dumps(data))
    whole = fake_run(tmp_path / "whole", gt, {i: 0.5 for i in ids[0] + ids[1]})  # not from folds: no sha check
    assert "scored 6 images not in" in err(whole, "--annotations", other, "--out", tmp_path / "o")
    changed = tmp_path / "changed.json"
    data = coco()
    data["info"]["year"] = 1999  # same images, another file
    changed.write_text(json.dumps(data))
    b2 = fake_run(tmp_path / "b2", pairs[1][1], {i: 0.5 for i in ids[1]})
    assert "folds of another annotation file" in err(a, b2, "--annotations", changed, "--out", tmp_path / "o")
    # prototypes of several models are not comparable: csod and friends refuse merged runs
    assert cli(["unseen", "merge", str(a), str(b2), "--annotations", str(gt), "--out", str(tmp_path / "m")]) == 0
    assert cli(["select", str(tmp_path / "m"), "--method", "csod", "--keep", "0.5"]) == 1
    assert "features are not comparable" in capsys.readouterr().err


def test_compare_runs(gt, tmp_path, capsys):
    ids = load_coco(gt).image_ids.tolist()
    up = fake_run(tmp_path / "up", gt, {i: float(k) for k, i in enumerate(ids)})
    same = fake_run(tmp_path / "same", gt, {i: 2.0 * k + 1 for k, i in enumerate(ids)})
    down = fake_run(tmp_path / "down", gt, {i: -float(k) for k, i in enumerate(ids)})
    (row,) = compare_runs(up, same)
    assert row["spearman"] == pytest.approx(1) and row["kendall"] == pytest.approx(1) and row["overlap@0.3"] == 1.0
    (row,) = compare_runs(up, down)
    assert row["spearman"] == pytest.approx(-1) and row["kendall"] == pytest.approx(-1)
    assert row["overlap@0.1"] == 0.0  # top 1 of 11 each: opposite ends
    assert cli(["compare", str(up), str(down), "--out", str(tmp_path / "c.json")]) == 0
    assert "vps_iou_max | 11 | -1.000 | -1.000" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["columns"][0]["images"] == 11


def test_score_set_must_be_unseen(gt):
    full = load_coco(gt)
    images = full.dataset["images"][:4]
    kept = {i["id"] for i in images}
    anns = [a for a in full.dataset["annotations"] if a["image_id"] in kept]
    half = CocoIndex.from_dataset({**full.dataset, "images": images, "annotations": anns}, "half.json")
    with pytest.raises(PruneHooksError, match="shares 4 of its 4 images with the training set"):
        check_score_set(full, half, False, "PRUNE.SCORE_DATASET")
    said = []
    assert check_score_set(full, half, True, "PRUNE.SCORE_DATASET", warn=said.append) == 4
    assert "4 of 4 scored images are also training images" in said[0]


@pytest.mark.parametrize("n_columns", [3, 40])
def test_merged_soft_labels_are_the_mean_over_the_runs(gt, tmp_path, n_columns):
    """Dense (every column kept) and top-k soft label files: the merge averages each object's distributions."""
    from prune_hooks.core.scoring.softlabels import SoftLabels, load_soft_labels, save_soft_labels

    index = load_coco(gt)
    columns = np.arange(n_columns)
    rng = np.random.default_rng(2)
    dists, runs = [], []
    for k in range(2):
        probs = rng.dirichlet(np.full(n_columns, 0.3), size=index.num_objects)
        probs[:, 5 % n_columns] += 3.0  # one column every run agrees on: kept in both top-k states
        probs /= probs.sum(1, keepdims=True)
        state = SoftLabels(index.num_objects, n_columns, top_k=8)
        state.update(np.arange(index.num_objects), probs)
        path = fake_run(tmp_path / f"r{k}", gt, {i: 0.5 for i in index.image_ids.tolist()})
        save_soft_labels(path / "soft_labels.npz", index.ann_ids, columns, state.top())
        dists.append(probs)
        runs.append(str(path))
    out = tmp_path / "merged"
    assert cli(["unseen", "merge", *runs, "--annotations", str(gt), "--out", str(out)]) == 0
    _, cols, merged = load_soft_labels(out / "soft_labels.npz")
    assert cols.tolist() == columns.tolist() and merged.exact == (n_columns <= 8)
    mean = (dists[0] + dists[1]) / 2
    if merged.exact:
        np.testing.assert_allclose(merged.dense(), mean, atol=1e-6)
    else:  # the agreed column is kept and exact; every row's mass stays whole
        c = 5 % n_columns
        rows = np.arange(index.num_objects)
        where = np.argmax(merged.cols == c, axis=1)
        assert (merged.cols[rows, where] == c).all()
        np.testing.assert_allclose(merged.probs[rows, where], mean[:, c], atol=1e-6)
        np.testing.assert_allclose(merged.probs.sum(1) + merged.rest, 1.0, atol=1e-5)
