import numpy as np
import pytest
import torch

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.scoring.scores import VPSAccumulator, aggregate, forgetting_scores, rank_images


def test_aggregations_hand_computed():
    # image 0: objects 0.1, 0.4; image 1: none; image 2: 0.2, NaN (never scored), 0.6
    values = np.array([0.1, 0.4, 0.2, np.nan, 0.6])
    offsets = np.array([0, 2, 2, 5])
    np.testing.assert_allclose(aggregate(values, offsets, "max"), [0.4, np.nan, 0.6])
    np.testing.assert_allclose(aggregate(values, offsets, "sum"), [0.5, np.nan, 0.8])
    np.testing.assert_allclose(aggregate(values, offsets, "mean"), [0.25, np.nan, 0.4])
    with pytest.raises(PruneHooksError, match="aggregation must be one of max, mean, sum, got 'median'"):
        aggregate(values, offsets, "median")


def test_rank_highest_first_ties_by_id_objectless_last():
    ids = np.array([30, 10, 20, 40, 5, 7])
    scores = np.array([0.5, 0.9, 0.5, np.nan, 0.1, np.nan])
    assert rank_images(ids, scores).tolist() == [10, 20, 30, 5, 7, 40]


def test_accumulator_vps_equals_population_std():
    acc = VPSAccumulator(2)
    ious = [[0.2, 0.9], [0.4, 0.9], [0.9, 0.9]]
    confs = [[0.5, 0.1], [0.7, 0.1], [0.6, 0.4]]
    for iou, conf in zip(ious, confs):
        acc.update(torch.arange(2), torch.tensor(iou), torch.tensor(conf), torch.tensor(iou) >= 0.5)
        acc.end_pass()
    vps = acc.vps()
    assert acc.passes == 3 and vps["passes"].tolist() == [3, 3]
    np.testing.assert_allclose(vps["iou_std"], np.std(ious, axis=0), atol=1e-6)
    np.testing.assert_allclose(vps["conf_std"], np.std(confs, axis=0), atol=1e-6)
    np.testing.assert_allclose(vps["iou_mean"], np.mean(ious, axis=0), atol=1e-6)
    assert vps["iou_std"][1] == 0.0


def test_accumulator_merge_requires_same_passes():
    a, b = VPSAccumulator(3), VPSAccumulator(3)
    a.end_pass()
    with pytest.raises(PruneHooksError, match="cannot merge 0 passes into 1"):
        a.merge(b)


def test_forgetting_events_counted_per_transition_and_never_learned_rank_first():
    # object 0: learned, lost, learned, lost -> 2 events; 1: never learned; 2: always learned;
    # 3: missing from pass 2 (learned, -, not, not) -> 1 event; 4: never seen. Rows are passes.
    learned = [[1, 0, 1, 1, 0], [0, 0, 1, None, 0], [1, 0, 1, 0, 0], [0, 0, 1, 0, 0]]
    acc = VPSAccumulator(5)
    for row in learned:
        idx = torch.tensor([i for i, v in enumerate(row) if v is not None and i != 4])
        flags = torch.tensor([bool(row[i]) for i in idx.tolist()])
        acc.update(idx, torch.zeros(len(idx)), torch.zeros(len(idx)), flags)
        acc.end_pass()
    vps = acc.vps()
    assert vps["forget_events"].tolist() == [2, 0, 0, 1, 0]
    assert vps["learned_passes"].tolist() == [2, 0, 4, 1, 0]
    assert vps["learned_last"].tolist() == [0, 0, 1, 0, 0]
    score = forgetting_scores(vps)
    assert score[:4].tolist() == [2.0, np.inf, 0.0, 1.0] and np.isnan(score[4])
    # state round trip keeps the counters
    other = VPSAccumulator(5)
    other.load_state_dict(acc.state_dict())
    assert other.vps()["forget_events"].tolist() == [2, 0, 0, 1, 0]
