import numpy as np
import pytest

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.selection.algorithms import keep_count, random_order


@pytest.mark.parametrize(
    "n,kw,want",
    [
        (10, dict(keep=0.25), 3),  # 2.5 rounds half up
        (10, dict(keep=0.24), 2),
        (10, dict(keep=0.01), 1),  # at least one image
        (10, dict(keep=1.0), 10),
        (10, dict(prune=0.3), 7),
        (7, dict(count=7), 7),
        (118287, dict(keep=0.5), 59144),
    ],
)
def test_keep_count(n, kw, want):
    assert keep_count(n, **kw)[0] == want


def test_keep_count_stores_keep_ratio():
    assert keep_count(10, prune=0.3)[1] == pytest.approx(0.7)
    assert keep_count(8, count=2)[1] == 0.25


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(keep=0.0), r"keep ratio must be in \(0, 1\], got 0.0"),
        (dict(keep=1.5), r"keep ratio must be in \(0, 1\], got 1.5"),
        (dict(keep=float("nan")), "keep ratio"),
        (dict(prune=1.0), r"prune ratio must be in \[0, 1\), got 1.0"),
        (dict(count=0), r"count must be an integer in \[1, 10\], got 0"),
        (dict(count=11), r"count must be an integer in \[1, 10\], got 11"),
        (dict(keep=0.5, count=3), "exactly one"),
        (dict(), "exactly one"),
    ],
)
def test_keep_count_errors(kw, msg):
    with pytest.raises(PruneHooksError, match=msg):
        keep_count(10, **kw)


def test_random_order_is_seeded_and_independent_of_file_order():
    ids = np.array([5, 3, 9, 1, 7])
    a = random_order(ids, 0)
    assert sorted(a.tolist()) == [1, 3, 5, 7, 9]
    assert a.tolist() == random_order(ids[::-1], 0).tolist()
    orders = {tuple(random_order(ids, s).tolist()) for s in range(10)}
    assert len(orders) > 1
