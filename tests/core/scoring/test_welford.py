import numpy as np
import pytest
import torch

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.welford import Welford


def feed(rng, n, passes, shape=(), p_missing=0.3):
    """Random passes in which each object is missing with probability p_missing."""
    seq = []
    for _ in range(passes):
        idx = np.flatnonzero(rng.random(n) >= p_missing)
        rng.shuffle(idx)
        seq.append((idx, rng.random((idx.size, *shape))))
    return seq


def reference(n, seq, shape=()):
    vals = [[] for _ in range(n)]
    for idx, v in seq:
        for i, x in zip(idx, v):
            vals[i].append(x)
    mean = np.full((n, *shape), np.nan)
    std = np.full((n, *shape), np.nan)
    count = np.array([len(v) for v in vals])
    for i, v in enumerate(vals):
        if v:
            a = np.array(v, dtype=np.float64)
            mean[i], std[i] = a.mean(0), a.std(0)
    return count, mean, std


@pytest.mark.parametrize("shape", [(), (2,)])
def test_matches_numpy_with_missing_objects(shape):
    rng = np.random.default_rng(1)
    n = 50
    seq = feed(rng, n, 12, shape)
    w = Welford(n, shape)
    for idx, v in seq:
        w.update(torch.from_numpy(idx), torch.from_numpy(v))
    count, mean, std = reference(n, seq, shape)
    assert w.count.numpy().tolist() == count.tolist()
    np.testing.assert_allclose(w.means().numpy(), mean, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(w.std().numpy(), std, atol=1e-6, equal_nan=True)


def test_float32_keeps_1e5_over_100_passes():
    rng = np.random.default_rng(2)
    n = 2000
    seq = feed(rng, n, 100, p_missing=0.0)
    w = Welford(n)
    for idx, v in seq:
        w.update(torch.from_numpy(idx), torch.from_numpy(v))
    assert w.mean.dtype == torch.float32
    _, mean, std = reference(n, seq)
    assert np.abs(w.means().numpy() - mean).max() < 1e-5
    assert np.abs(w.std().numpy() - std).max() < 1e-5


def test_split_and_merge_equals_one_pass():
    rng = np.random.default_rng(3)
    n = 40
    seq = feed(rng, n, 10, (2,))
    whole, a, b = Welford(n, (2,)), Welford(n, (2,)), Welford(n, (2,))
    for k, (idx, v) in enumerate(seq):
        whole.update(torch.from_numpy(idx), torch.from_numpy(v))
        # Shard each pass's objects between two "ranks", and give b the later passes only partly.
        half = idx.size // 2
        a.update(torch.from_numpy(idx[:half]), torch.from_numpy(v[:half]))
        b.update(torch.from_numpy(idx[half:]), torch.from_numpy(v[half:]))
    a.merge(b)
    assert a.count.tolist() == whole.count.tolist()
    _, mean, std = reference(n, seq, (2,))
    np.testing.assert_allclose(a.means().numpy(), mean, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(a.std().numpy(), std, atol=1e-6, equal_nan=True)


def test_merge_into_empty_and_of_empty():
    w = Welford(3)
    w.update(torch.tensor([0, 2]), torch.tensor([0.5, 1.0]))
    empty = Welford(3)
    empty.merge(w)
    np.testing.assert_allclose(empty.means().numpy(), [0.5, np.nan, 1.0])
    w.merge(Welford(3))
    assert w.count.tolist() == [1, 0, 1]


def test_state_dict_round_trip_and_shape_check():
    w = Welford(4, (2,))
    w.update(torch.tensor([1, 3]), torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    w.update(torch.tensor([1]), torch.tensor([[0.5, 0.9]]))
    other = Welford(4, (2,))
    other.load_state_dict(w.state_dict())
    assert torch.equal(other.std(), w.std()) or torch.allclose(other.std(), w.std(), equal_nan=True)
    assert other.count.tolist() == [0, 2, 0, 1]
    with pytest.raises(PruneHooksError, match="was the dataset changed"):
        Welford(5, (2,)).load_state_dict(w.state_dict())


def test_rejects_duplicate_and_out_of_range_indices():
    w = Welford(3)
    with pytest.raises(PruneHooksError, match="distinct"):
        w.update(torch.tensor([1, 1]), torch.tensor([0.1, 0.2]))
    with pytest.raises(PruneHooksError, match=r"\[0, 3\)"):
        w.update(torch.tensor([3]), torch.tensor([0.1]))
    with pytest.raises(PruneHooksError, match="shape"):
        w.update(torch.tensor([0, 1]), torch.tensor([0.1]))


def test_memory_does_not_grow_with_passes():
    w = Welford(100, (2,))
    before = sum(t.numel() * t.element_size() for t in w.state_dict().values())
    for _ in range(50):
        w.update(torch.arange(100), torch.rand(100, 2))
    after = sum(t.numel() * t.element_size() for t in w.state_dict().values())
    assert before == after == 100 * (4 + 2 * 2 * 4)
