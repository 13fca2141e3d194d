import json

import numpy as np
import pytest

from prune_hooks.cli import main as cli
from prune_hooks.core.data.coco import CocoIndex
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.io import write_csv, write_json
from prune_hooks.core.selection.coverage import allocate, dedup, default_beta, group_labels, spread_groups, stratify


def test_stratify_drops_the_hardest_then_fills_strata_evenly():
    ranked = np.arange(10, 0, -1)  # image i has score i; best (hardest) first
    score_of = {i: float(i) for i in range(1, 11)}
    out = stratify(ranked, score_of, n_keep=4, beta=0.2, strata=2, seed=0)
    chosen = out[:4].tolist()
    assert 10 not in chosen and 9 not in chosen  # the hardest 20 % dropped
    # pool 8..1 in two equal-width strata: {1..4} and {5..8}, two from each, in ranking order
    assert sum(i <= 4 for i in chosen) == 2 and sum(5 <= i <= 8 for i in chosen) == 2
    assert chosen == sorted(chosen, reverse=True) and sorted(out.tolist()) == list(range(1, 11))
    assert out.tolist() == stratify(ranked, score_of, 4, 0.2, 2, seed=0).tolist()  # seeded
    # a stratum smaller than its share gives all it has; the others share the rest
    score_of = {i: v for i, v in zip(range(1, 11), [0, 0, 0, 0, 0, 0, 0, 0, 0, 10.0])}
    ranked = np.array([10] + list(range(1, 10)))
    out = stratify(ranked, score_of, n_keep=5, beta=0.0, strata=2)
    assert out[0] == 10 and len(set(out[:5].tolist())) == 5
    # the budget wins over beta: keep 9 of 10 drops only one
    assert 10 not in stratify(np.arange(10, 0, -1), {i: float(i) for i in range(1, 11)}, 9, 0.5, 3)[:9]
    # images without a score are never chosen before scored ones
    out = stratify(np.array([3, 2, 1, 99]), {3: 3.0, 2: 2.0, 1: 1.0}, 2, 0.0, 2)
    assert 99 not in out[:2] and out[-1] == 99
    assert allocate([9, 1], 5) == [4, 1] and allocate([3, 3, 3], 7) == [2, 2, 3] and allocate([2, 5], 9) == [2, 5]
    assert (
        default_beta(0.1) == pytest.approx(0.3) and default_beta(0.5) == pytest.approx(0.1) and default_beta(0.9) == 0
    )
    with pytest.raises(PruneHooksError, match=r"--beta must be in \[0, 1\), got 1"):
        stratify(ranked, score_of, 2, 1, 2)
    with pytest.raises(PruneHooksError, match="--strata must be an integer >= 1, got 0"):
        stratify(ranked, score_of, 2, 0.1, 0)


def index_of(images):
    return CocoIndex.from_dataset({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}, "test")


def test_group_labels_and_spread():
    idx = index_of(
        [
            {"id": 1, "file_name": "cam1_0001.jpg", "width": 9, "height": 9, "video_id": 7},
            {"id": 2, "file_name": "cam1_0002.jpg", "width": 9, "height": 9, "video_id": 7},
            {"id": 3, "file_name": "cam2_0001.jpg", "width": 9, "height": 9, "video_id": 8},
            {"id": 4, "file_name": "other.jpg", "width": 9, "height": 9},
        ]
    )
    assert group_labels(idx, r"file_name:^(cam\d+)_\d+\.jpg$").tolist()[:3] == ["cam1", "cam1", "cam2"]
    by_video = group_labels(idx, "video_id").tolist()
    assert by_video[:3] == ["7", "7", "8"] and by_video[3] not in by_video[:3]  # no field: a group of its own
    for spec, msg in (
        ("file_name:(", "bad regular expression"),
        ("file_name:cam", "needs exactly one capture group, got 0"),
        ("nope", "no image has a matching 'nope' field"),
    ):
        with pytest.raises(PruneHooksError, match=msg):
            group_labels(idx, spec)
    groups = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "c"}
    ranked = np.array([1, 2, 4, 3, 5, 6])
    assert spread_groups(ranked, groups).tolist() == [1, 4, 6, 2, 5, 3]  # round robin, groups by best image
    assert spread_groups(ranked, groups, per_group_max=1).tolist() == [1, 4, 6, 2, 3, 5]
    with pytest.raises(PruneHooksError, match="--per-group-max must be an integer >= 1, got 0"):
        spread_groups(ranked, groups, 0)


def brute_dedup(ranked, feature_of, t, n_keep):
    kept = []
    for i in ranked.tolist():
        if len(kept) == n_keep:
            break
        f = feature_of.get(i)
        if f is not None:
            f = f / np.linalg.norm(f)
            if any(np.dot(f, feature_of[k] / np.linalg.norm(feature_of[k])) >= t for k in kept if k in feature_of):
                continue
        kept.append(i)
    return kept


def test_dedup_is_the_exact_greedy_in_any_block_size():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    feats = np.concatenate([base, base[:40] + 0.05 * rng.normal(size=(40, 16)).astype(np.float32)])  # 40 copies
    ids = np.arange(100)
    feature_of = {int(i): f for i, f in zip(ids, feats) if i % 17 != 5}  # some images without a feature
    ranked = rng.permutation(ids)
    for n_keep in (10, 55, 100):
        want = brute_dedup(ranked, feature_of, 0.95, n_keep)
        for block in (1, 7, 1024):
            out = dedup(ranked, feature_of, 0.95, n_keep, block=block)
            assert out[: len(want)].tolist() == want, (n_keep, block)
            assert sorted(out.tolist()) == ids.tolist()
    assert len(brute_dedup(ranked, feature_of, 0.95, 100)) < 70  # the copies went
    with pytest.raises(PruneHooksError, match=r"--dedup threshold must be a cosine in \[-1, 1\], got 2"):
        dedup(ranked, feature_of, 2, 5)


def test_select_cli_with_coverage_options(tmp_path, capsys):
    images = [{"id": i, "file_name": f"seq{i % 3}_{i}.jpg", "width": 9, "height": 9} for i in range(1, 13)]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0} for i in range(1, 13)
    ]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    run = tmp_path / "run"
    write_json(run / "meta.json", {"framework": "test", "annotations": str(gt)})
    write_csv(run / "images.csv", ("image_id", "n_objects", "vps_iou_max"), [(i, 1, i / 10) for i in range(1, 13)])
    sel = ["select", str(run), "--method", "vps_iou", "--keep", "0.25"]
    assert cli([*sel, "--group-by", r"file_name:^(seq\d)_", "--out", str(tmp_path / "g")]) == 0
    sub = json.loads((tmp_path / "g" / "subset.json").read_text())
    assert sub["image_ids"] == [12, 11, 10] and sub["groups"] == 3  # one per sequence
    assert cli([*sel, "--stratify", "--out", str(tmp_path / "s")]) == 0
    sub = json.loads((tmp_path / "s" / "subset.json").read_text())
    assert sub["stratify"] == {"beta": pytest.approx(0.225), "strata": 50} and 12 not in sub["image_ids"]

    def err(argv):
        assert cli(argv) == 1
        return capsys.readouterr().err

    assert "--stratify needs a score method, random ranks without scores" in err(
        ["select", str(run), "--method", "random", "--keep", "0.5", "--stratify"]
    )
    assert "--per-group-max needs --group-by" in err([*sel, "--per-group-max", "1"])
    assert "prototypes" in err([*sel, "--dedup", "0.9"])
