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
