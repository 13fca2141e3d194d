import numpy as np
import pytest
import torch

from prune_hooks.core.data.coco import load_coco
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.prototypes import PrototypeCollector, load_prototypes, row_chunks, save_prototypes
from prune_hooks.core.scoring.shards import Comm


def test_collector_means_per_image_and_class_in_file_order(coco_file):
    index = load_coco(coco_file)  # image 1: objects 10 (cat 1), 11 (cat 2); image 3: object 13 (cat 1)
    col = PrototypeCollector(index)
    col.add(1, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    col.add(3, torch.tensor([[5.0, 6.0]]))
    col.add(2, torch.zeros(0, 2))  # no objects: nothing
    col.add(1, torch.tensor([[9.0, 9.0], [9.0, 9.0]]))  # a padded repeat is ignored
    arrays = col.arrays()
    # file order of images is 3, 1, 2
    assert arrays["image_id"].tolist() == [3, 1, 1]
    assert arrays["category_id"].tolist() == [1, 1, 2]
    np.testing.assert_array_equal(arrays["feature"], [[5, 6], [1, 2], [3, 4]])
    with pytest.raises(PruneHooksError, match="feature rows for 1 objects"):
        col.add(3, torch.zeros(2, 2))


def test_collector_gathers_other_ranks(coco_file):
    index = load_coco(coco_file)
    a, b = PrototypeCollector(index), PrototypeCollector(index)
    a.add(1, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    b.add(3, torch.tensor([[5.0, 6.0]]))
    both = a.arrays(Comm(0, 2, lambda rows, dst: [rows, b._rows]))  # rank 0 of 2: receives both
    assert a.arrays(Comm(1, 2, lambda rows, dst: None)) is None  # other ranks: nothing
    assert both["image_id"].tolist() == [3, 1, 1]


def test_save_load_round_trip_and_validation(coco_file, tmp_path):
    index = load_coco(coco_file)
    arrays = {
        "image_id": np.array([1, 3]),
        "category_id": np.array([1, 1]),
        "feature": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
    }
    path = save_prototypes(tmp_path / "p.npz", arrays)
    got = load_prototypes(path, index)
    np.testing.assert_array_equal(got["feature"], arrays["feature"])
    assert got["image_id"].dtype == np.int64
    bad = dict(arrays, image_id=np.array([1, 99]))
    with pytest.raises(PruneHooksError, match="image ids not in"):
        load_prototypes(save_prototypes(tmp_path / "b.npz", bad), index)
    zero = dict(arrays, feature=np.zeros((2, 2), np.float32))
    with pytest.raises(PruneHooksError, match="zero vector"):
        load_prototypes(save_prototypes(tmp_path / "z.npz", zero))
    with pytest.raises(PruneHooksError, match="prototypes not found"):
        load_prototypes(tmp_path / "missing.npz")


def test_stored_as_float16_unit_rows_and_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    feat = (rng.random((70_000, 8)) * 50).astype(np.float32)  # more rows than one validation chunk
    feat[5] = [3e4, 4e4, 0, 0, 0, 0, 0, 0]  # a norm beyond float16's range: stored as its unit vector
    arrays = {"image_id": np.arange(len(feat)), "category_id": np.ones(len(feat), np.int64), "feature": feat}
    path = save_prototypes(tmp_path / "p.npz", arrays)
    assert path.stat().st_size < feat.nbytes / 2 + 2 * 8 * len(feat) + 4096  # float16 features + int64 ids
    got = load_prototypes(path)
    assert isinstance(got["feature"], np.memmap) and got["feature"].dtype == np.float16
    unit = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    np.testing.assert_allclose(got["feature"], unit, atol=1e-3)
    np.testing.assert_allclose(got["feature"][5, :2], [0.6, 0.8], atol=1e-3)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_float32_files_of_earlier_versions_and_compressed_files_load(tmp_path, writer):
    feat = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    writer(tmp_path / "p.npz", image_id=np.array([1, 2]), category_id=np.array([1, 1]), feature=feat)
    got = load_prototypes(tmp_path / "p.npz")
    np.testing.assert_array_equal(got["feature"], feat)
    assert isinstance(got["feature"], np.memmap) == (writer is np.savez)


def test_nan_row_named_after_the_first_chunk(tmp_path):
    feat = np.ones((70_000, 4), np.float32)
    feat[66_000, 2] = np.nan
    ids = np.arange(len(feat))
    path = save_prototypes(tmp_path / "p.npz", {"image_id": ids, "category_id": ids * 0 + 7, "feature": feat})
    with pytest.raises(PruneHooksError, match="feature row 66000 \\(image 66000, category 7\\) has NaN or inf"):
        load_prototypes(path)


@pytest.mark.parametrize(
    "row, message",
    [([np.inf, 1], "has NaN or inf"), ([1, -np.inf], "has NaN or inf"), ([-0.0, 0.0], "zero vector")],
)
def test_float16_rows_checked_on_their_bits(tmp_path, row, message):
    feat = np.array([[1, 6e-8], [0, 1], [0.5, 0.5]], np.float16)  # a subnormal half is not zero
    np.savez(tmp_path / "ok.npz", image_id=np.arange(3), category_id=np.ones(3, np.int64), feature=feat)
    assert load_prototypes(tmp_path / "ok.npz")["feature"].dtype == np.float16
    feat[1] = row
    np.savez(tmp_path / "p.npz", image_id=np.arange(3), category_id=np.ones(3, np.int64), feature=feat)
    with pytest.raises(PruneHooksError, match=f"feature row 1 .*{message}"):
        load_prototypes(tmp_path / "p.npz")


def test_save_creates_the_run_directory(tmp_path):
    arrays = {"image_id": np.array([1]), "category_id": np.array([1]), "feature": np.ones((1, 3), np.float32)}
    path = save_prototypes(tmp_path / "out" / "prune" / "prototypes.npz", arrays)
    assert load_prototypes(path)["feature"].shape == (1, 3)


def _rss_file_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise")
def test_row_chunks_copy_every_row_and_leave_a_mapped_file_unresident(tmp_path):
    rng = np.random.default_rng(0)
    feature = rng.random((40_000, 400)).astype(np.float16)  # 32 MB
    ids = np.arange(len(feature))
    save_prototypes(tmp_path / "p.npz", {"image_id": ids, "category_id": ids % 3, "feature": feature})
    loaded = load_prototypes(tmp_path / "p.npz")
    mapped = loaded["feature"]
    assert isinstance(mapped, np.memmap)
    unit = feature[loaded["image_id"]].astype(np.float64)  # the file's row order
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    before = _rss_file_kb()
    got = [(a, rows) for a, rows in row_chunks(mapped, np.float32, chunk=3_000)]
    grown_mb = (_rss_file_kb() - before) / 1024
    assert [a for a, _ in got] == list(range(0, 40_000, 3_000))
    assert all(r.dtype == np.float32 for _, r in got)
    np.testing.assert_allclose(np.concatenate([r for _, r in got]), unit, atol=1e-3)
    assert grown_mb < 8, f"the mapped file stayed resident: +{grown_mb:.0f} MB of 32"
    # Arrays in memory go through unchanged.
    plain = [(a, r) for a, r in row_chunks(unit, chunk=7_000)]
    np.testing.assert_array_equal(np.concatenate([r for _, r in plain]), unit)


def test_rows_stored_by_category_then_image(tmp_path):
    # what CSOD scans as one contiguous block per class; rows keep their own image, category and feature
    arrays = {
        "image_id": np.array([3, 1, 1, 2]),
        "category_id": np.array([1, 2, 1, 1]),
        "feature": np.array([[1, 0], [0, 1], [1, 1], [2, 1]], np.float32),
    }
    got = load_prototypes(save_prototypes(tmp_path / "p.npz", arrays))
    assert got["category_id"].tolist() == [1, 1, 1, 2] and got["image_id"].tolist() == [1, 2, 3, 1]
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(got["feature"], [[s, s], [2 / np.sqrt(5), 1 / np.sqrt(5)], [1, 0], [0, 1]], atol=1e-3)


def test_image_features_are_each_images_mean_unit_prototype_in_any_row_order(monkeypatch):
    import prune_hooks.core.scoring.prototypes as prototypes

    monkeypatch.setattr(prototypes, "CHUNK", 7)  # chunks of whole images, several of them
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(40, 0, -1), rng.integers(1, 5, 40))  # images 40..1, 1-4 classes each
    feat = rng.random((len(ids), 6)).astype(np.float32)
    for order in (np.arange(len(ids)), rng.permutation(len(ids))):
        got_ids, got = prototypes.image_features({"image_id": ids[order], "feature": feat[order]})
        assert got_ids.tolist() == list(range(1, 41))
        for k, i in enumerate(got_ids):
            rows = feat[ids == i].astype(np.float64)
            np.testing.assert_allclose(got[k], (rows / np.linalg.norm(rows, axis=1, keepdims=True)).mean(0), rtol=1e-6)
