import numpy as np
import pytest

from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.selection.csod import csod_select


def direct_eq4(image_id, category_id, feature, n, lam, bias=None):
    """docs/methods.md's CSOD transcribed literally: cosines summed one by one, float64 (+ a row's bias)."""
    f = np.asarray(feature, dtype=np.float64)
    bias = np.zeros(len(image_id)) if bias is None else bias
    chosen: list[int] = []
    classes = sorted(set(category_id.tolist()))

    def cos(a, b):
        return float(f[a] @ f[b] / (np.linalg.norm(f[a]) * np.linalg.norm(f[b])))

    while len(chosen) < n:
        progressed = False
        for c in classes:
            if len(chosen) >= n:
                break
            rows_c = [r for r in range(len(image_id)) if category_id[r] == c]
            best = None
            for r in rows_c:
                if image_id[r] in chosen:
                    continue
                s = (
                    lam * sum(cos(r, q) for q in rows_c if image_id[q] not in chosen)
                    - sum(cos(r, q) for q in rows_c if image_id[q] in chosen)
                    + bias[r]
                )
                scale = (
                    lam * sum(1 for q in rows_c if image_id[q] not in chosen)
                    + sum(1 for q in rows_c if image_id[q] in chosen)
                    + np.abs(bias).max(initial=0)
                )
                # equal up to float noise (1e-12 of the score scale) = tied: the lower image id wins
                if (
                    best is None
                    or s > best[0] + 1e-12 * scale
                    or (abs(s - best[0]) <= 1e-12 * scale and image_id[r] < best[1])
                ):
                    best = (s, int(image_id[r]))
            if best is not None:
                chosen.append(best[1])
                progressed = True
        if not progressed:
            break
    return chosen


def random_instance(rng, n_images, n_classes, dim, nonneg=True):
    ids, cats = [], []
    image_ids = rng.choice(np.arange(1, 10 * n_images), size=n_images, replace=False)
    for i in image_ids:
        k = rng.integers(1, min(4, n_classes) + 1)
        for c in rng.choice(n_classes, size=k, replace=False):
            ids.append(i)
            cats.append(c * 3 + 1)
    feat = rng.normal(size=(len(ids), dim))
    if nonneg:
        feat = np.maximum(feat, 0) + 1e-3 * rng.random((len(ids), dim))  # post-ReLU like, no zero rows
    return np.array(ids), np.array(cats), feat


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lam", [1e-10, 0.0125, 1.0, 1e10])
def test_fast_equals_direct_eq4(seed, lam):
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(5, 30))
    ids, cats, feat = random_instance(
        rng, n_images, int(rng.integers(1, 5)), int(rng.integers(2, 9)), nonneg=seed % 3 != 2
    )
    n = int(rng.integers(1, n_images + 1))
    want = direct_eq4(ids, cats, feat, n, lam)
    assert csod_select(ids, cats, feat, n, lam, device="cpu").image_ids.tolist() == want
    if (feat >= 0).all():
        assert csod_select(ids, cats, feat, n, lam, device="cpu", lazy=True).image_ids.tolist() == want
    else:
        with pytest.raises(PruneHooksError, match="non-negative"):
            csod_select(ids, cats, feat, n, lam, device="cpu", lazy=True)


@pytest.mark.parametrize("seed", range(4))
def test_bias_equals_direct_eq4_plus_bias(seed):
    rng = np.random.default_rng(10 + seed)
    ids, cats, feat = random_instance(rng, 25, 3, 6)
    # the vps_csod bias: one value per image, shared by its rows, some images tied
    per_image = {i: float(rng.choice([0.0, 0.3, 1.0, 2.5])) for i in np.unique(ids).tolist()}
    bias = np.array([per_image[i] for i in ids.tolist()])
    for n in (5, 15, 25):
        want = direct_eq4(ids, cats, feat, n, 0.05, bias)
        for lazy in (True, False):
            got = csod_select(ids, cats, feat, n, 0.05, device="cpu", lazy=lazy, bias=bias).image_ids.tolist()
            assert got == want, (n, lazy)
    assert want != direct_eq4(ids, cats, feat, 25, 0.05)  # the bias changed the order
    with pytest.raises(PruneHooksError, match="bias must be"):
        csod_select(ids, cats, feat, 5, 0.05, bias=bias[:-1])


def test_lazy_and_exact_paths_agree_and_lazy_scores_fewer_rows():
    rng = np.random.default_rng(7)
    ids, cats, feat = random_instance(rng, 3000, 4, 16)  # classes of ~2,000 rows: buffers of 256
    lazy = csod_select(ids, cats, feat, 1500, 0.05, device="cpu", lazy=True)
    exact = csod_select(ids, cats, feat, 1500, 0.05, device="cpu", lazy=False)
    assert lazy.image_ids.tolist() == exact.image_ids.tolist()
    assert lazy.rows_scored < exact.rows_scored


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.05, 1.0])
@pytest.mark.parametrize("rescan", ["often", "never"])
def test_lazy_settling_and_rescans_equal_direct_eq4(monkeypatch, seed, lam, rescan):
    """Picks settled on bounds alone (a class rescanned once, then never) or rescanned as soon as two
    rows could win; identical prototypes make ties that only the image id breaks."""
    import prune_hooks.core.selection.csod.greedy as csod

    monkeypatch.setattr(csod, "PREFIX", 1 if rescan == "often" else 10**9)
    monkeypatch.setattr(csod, "RESCAN_DIV", 10**9 if rescan == "often" else 1)
    rng = np.random.default_rng(100 + seed)
    ids, cats, feat = random_instance(rng, 60, 3, 5)
    copies = rng.choice(len(ids), size=len(ids) // 4, replace=False)
    feat[copies] = feat[copies[0]]
    for n in (10, 35, 60):
        want = direct_eq4(ids, cats, feat, n, lam)
        res = csod_select(ids, cats, feat, n, lam, device="cpu", lazy=True)
        assert res.image_ids.tolist() == want, n
    n_classes = len(np.unique(cats))
    if rescan == "never":
        assert res.stats["refreshes"] == n_classes  # one rescan per class, every later pick on bounds
    else:
        assert n_classes < res.stats["refreshes"] < len(want)  # some picks on bounds, some rescanned


@pytest.mark.parametrize("seed", range(3))
def test_float16_features_as_stored_equal_direct_eq4(monkeypatch, seed):
    """prototypes.npz holds float16 rows: the compiled greedy reads them as their bits and decodes them."""
    import prune_hooks.core.selection.csod.greedy as csod

    monkeypatch.setattr(csod, "PREFIX", 2)
    rng = np.random.default_rng(200 + seed)
    ids, cats, feat = random_instance(rng, 80, 3, 6)
    half = (feat / np.linalg.norm(feat, axis=1, keepdims=True)).astype(np.float16)
    half[::7, 0] = np.float16(6e-8)  # subnormal halves decode too
    half[1::5, 1] = np.float16(-0.0)  # non-negative: the lazy greedy reads -0 as +0
    # the order the hooks write (by class, then image) and the generated one (by image)
    by_class = np.lexsort((ids, cats))
    for n in (20, 80):
        want = direct_eq4(ids, cats, half.astype(np.float64), n, 0.05)
        for o in (np.arange(len(ids)), by_class):
            got = csod_select(ids[o], cats[o], half[o], n, 0.05, device="cpu")
            assert got.stats["lazy"] and got.image_ids.tolist() == want, n


def test_fill_beyond_images_with_prototypes_is_ascending_ids():
    ids = np.array([5, 5, 9])
    cats = np.array([1, 2, 1])
    feat = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    res = csod_select(ids, cats, feat, 4, 1.0, all_image_ids=np.array([9, 3, 5, 1]), device="cpu")
    assert res.n_greedy == 2
    assert sorted(res.image_ids[:2].tolist()) == [5, 9]
    assert res.image_ids[2:].tolist() == [1, 3]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("value", [np.inf, np.nan, 0.0])
def test_non_finite_or_zero_row_named(dtype, value):
    ids, cats = np.array([1, 2, 3]), np.array([1, 1, 2])
    feat = np.ones((3, 4), dtype)
    feat[1] = value if value == 0 else [1, value, 1, 1]
    with pytest.raises(
        PruneHooksError, match=r"feature row 1 \(image 2, category 1\) is not finite or is a zero vector"
    ):
        csod_select(ids, cats, feat, 2, 1.0, device="cpu")


@pytest.mark.parametrize("lam", [0, -1.0, float("nan"), float("inf")])
def test_bad_lambda(lam):
    with pytest.raises(PruneHooksError, match="lambda"):
        csod_select(np.array([1]), np.array([1]), np.ones((1, 2)), 1, lam, device="cpu")
