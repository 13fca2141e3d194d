import math

import numpy as np
import pytest
import torch

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.softlabels import SoftLabels, entropy, outliers, suspects


def test_running_mean_merge_and_state_round_trip():
    a = SoftLabels(3, 2)
    a.update(torch.tensor([0, 2]), torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    a.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    means = a.means()
    np.testing.assert_allclose(means[0], [0.5, 0.5])
    np.testing.assert_allclose(means[2], [0.5, 0.5])
    assert np.isnan(means[1]).all()  # never recorded
    b = SoftLabels(3, 2)
    b.update(torch.tensor([1]), torch.tensor([[0.2, 0.8]]))
    a.merge(b)
    np.testing.assert_allclose(a.means()[1], [0.2, 0.8])
    c = SoftLabels(3, 2)
    c.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(c.means(), a.means())
    with pytest.raises(PruneHooksError, match="shape"):
        SoftLabels(4, 2).load_state_dict(a.state_dict())
    with pytest.raises(PruneHooksError, match="probs must have shape"):
        a.update(torch.tensor([0]), torch.ones(1, 3))


def test_entropy_by_hand():
    h = entropy(np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [np.nan] * 4]))
    assert h[0] == 0.0
    assert h[1] == pytest.approx(math.log(2))
    assert h[2] == pytest.approx(math.log(4))
    assert np.isnan(h[3])


def test_suspects_are_other_foreground_classes_above_tau():
    soft = np.array(
        [
            [0.1, 0.8, 0.1],  # annotated 1, model says 2 with 0.8 -> suspect
            [0.6, 0.3, 0.1],  # agrees
            [0.1, 0.1, 0.8],  # background wins: not a class suspicion
            [0.2, 0.45, 0.35],  # another class, but below tau
        ]
    )
    rows, cats, probs = suspects(soft, np.array([1, 1, 1, 1]), np.array([1, 2]))
    assert rows.tolist() == [0] and cats.tolist() == [2] and probs.tolist() == [0.8]
    rows, _, _ = suspects(soft, np.array([1, 1, 1, 1]), np.array([1, 2]), tau=0.4)
    assert rows.tolist() == [0, 3]
    with pytest.raises(PruneHooksError, match="tau"):
        suspects(soft, np.array([1, 1, 1, 1]), np.array([1, 2]), tau=0)


def test_outliers_are_never_learned_objects_with_near_uniform_soft_labels():
    soft = np.array(
        [[0.25, 0.25, 0.25, 0.25], [0.3, 0.25, 0.25, 0.2], [0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]]
    )
    assert outliers(soft, np.array([0, 0, 0, 3])).tolist() == [0, 1]  # 2: confident; 3: learned


def _stream(n_obj, k_cols, passes, seed=0):
    """Per pass: a random half of the objects with a softmax distribution each."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(passes):
        idx = torch.randperm(n_obj, generator=g)[: n_obj // 2]
        logits = torch.randn(len(idx), k_cols, generator=g) * 3
        yield idx, torch.softmax(logits, dim=1)


def _dense_reference(n_obj, k_cols, stream):
    """The dense running mean as the state was kept before top-k: float32 sums by index_add_, float64 division."""
    total = torch.zeros(n_obj, k_cols)
    count = torch.zeros(n_obj, dtype=torch.int32)
    for idx, probs in stream:
        total.index_add_(0, idx, probs)
        count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
    c = count.numpy()[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, total.double().numpy() / np.maximum(c, 1), np.nan)


@pytest.mark.parametrize("top_k", [7, 12])
def test_top_k_at_least_the_columns_is_the_dense_mean_exactly(top_k):
    ref = _dense_reference(40, 7, _stream(40, 7, 6))
    soft = SoftLabels(40, 7, top_k=top_k)
    for idx, probs in _stream(40, 7, 6):
        soft.update(idx, probs)
    np.testing.assert_array_equal(soft.means(), ref)
    top = soft.top()
    assert top.exact
    np.testing.assert_allclose(entropy(top), entropy(ref), rtol=0, atol=1e-12, equal_nan=True)
    cats = np.array([1, 2, 3, 4, 5, 6])
    labels = np.arange(40) % 6 + 1
    for a, b in zip(suspects(top, labels, cats, 0.2), suspects(ref, labels, cats, 0.2)):
        np.testing.assert_array_equal(a, b)
    learned = np.zeros(40, dtype=np.int64)
    np.testing.assert_array_equal(outliers(top, learned, 0.5), outliers(ref, learned, 0.5))


def test_top_k_keeps_the_dominant_columns_and_every_bit_of_mass():
    soft = SoftLabels(2, 100, top_k=3)
    g = torch.Generator().manual_seed(1)
    on_42 = []
    for _ in range(10):
        noise = torch.rand(2, 100, generator=g) * 0.2
        noise[0, 42] += 20.0  # object 0: class 42 dominates every pass
        probs = noise / noise.sum(1, keepdim=True)
        on_42.append(float(probs[0, 42]))
        soft.update(torch.tensor([0, 1]), probs)
    top = soft.top()
    assert 42 in top.cols[0]  # kept from the first pass on: its mean is exact
    assert top.probs[0, list(top.cols[0]).index(42)] == pytest.approx(np.mean(on_42), rel=1e-6)
    np.testing.assert_allclose(top.probs.sum(1) + top.rest, 1.0, atol=1e-5)  # mass conserved
    dense = top.dense()
    assert dense.shape == (2, 100)
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-5)
    # the state is 6·k + 14 bytes an object whatever the number of columns
    tensors = (soft.cols, soft.mass, soft.rest, soft.rest_r, soft.rest_rh, soft.count)
    assert sum(t.element_size() * t[0].numel() for t in tensors) == 6 * 3 + 14


def test_a_column_that_takes_over_late_evicts_the_smallest():
    soft = SoftLabels(1, 5, top_k=2)
    soft.update(torch.tensor([0]), torch.tensor([[0.5, 0.3, 0.2, 0.0, 0.0]]))
    for _ in range(3):
        soft.update(torch.tensor([0]), torch.tensor([[0.1, 0.0, 0.0, 0.9, 0.0]]))
    top = soft.top()
    assert top.cols[0].tolist() == [0, 3]
    # class 3 enters at pass 2 with its even share of the rest so far (0.2 over 3 columns not kept), class 1's
    # 0.3 moves to the rest; mass is conserved: 4 distributions of total 1
    share = 0.2 / 3
    np.testing.assert_allclose(top.probs[0], [0.8 / 4, (2.7 + share) / 4], rtol=1e-6)
    np.testing.assert_allclose(top.rest[0], (0.5 - share) / 4, rtol=1e-5)


def test_merge_of_two_ranks_equals_one_state_and_old_dense_states_load():
    stream = list(_stream(30, 9, 4, seed=3))
    one, a, b = SoftLabels(30, 9, top_k=9), SoftLabels(30, 9, top_k=9), SoftLabels(30, 9, top_k=9)
    for i, (idx, probs) in enumerate(stream):
        one.update(idx, probs)
        (a if i % 2 else b).update(idx, probs)
    a.merge(b)
    np.testing.assert_allclose(a.means(), one.means(), rtol=1e-6, equal_nan=True)
    total = torch.zeros(30, 9)
    count = torch.zeros(30, dtype=torch.int32)
    for idx, probs in stream:
        total.index_add_(0, idx, probs)
        count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
    old = SoftLabels(30, 9, top_k=4)
    old.load_state_dict({"sum": total, "count": count})
    ref = _dense_reference(30, 9, stream)
    top = old.top()
    seen = ~np.isnan(ref).any(axis=1)
    best = np.nanargmax(np.where(seen[:, None], ref, -1), axis=1)
    assert all(best[r] in top.cols[r] for r in np.flatnonzero(seen))
    assert SoftLabels.columns_of(old.state_dict()) == 9


def test_soft_labels_file_round_trip_in_both_forms(tmp_path):
    from prune_hooks.core.scoring.softlabels import load_soft_labels, save_soft_labels

    for k_cols, top_k in ((5, 8), (50, 4)):
        soft = SoftLabels(6, k_cols, top_k=top_k)
        for idx, probs in _stream(6, k_cols, 3, seed=k_cols):
            soft.update(idx, probs)
        top = soft.top()
        save_soft_labels(tmp_path / "s.npz", np.arange(6), np.arange(k_cols), top)
        assert ("probs" in np.load(tmp_path / "s.npz").files) == (k_cols <= top_k)
        ann, cols, back = load_soft_labels(tmp_path / "s.npz")
        assert ann.tolist() == list(range(6)) and back.num_columns == k_cols
        np.testing.assert_allclose(back.dense(), top.dense(), rtol=1e-6, equal_nan=True)


def test_entropy_of_a_rest_whose_shape_holds_is_exact():
    """The rest's normalized entropy as the passes saw it: exact when every pass gives the same distribution
    (an even spread of the rest would overstate the entropy of an uneven one)."""
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(3, 50, generator=g) * 2.0, dim=1)
    soft = SoftLabels(3, 50, top_k=4)
    for _ in range(5):
        soft.update(torch.arange(3), probs)
    exact = entropy(probs.double().numpy())
    np.testing.assert_allclose(entropy(soft.top()), exact, rtol=1e-5)
    even = soft.top()
    even.rest_entropy = None
    assert (entropy(even) > exact + 1e-3).all()
