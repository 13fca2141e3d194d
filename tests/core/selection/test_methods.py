"""The method registry: one place for every method, and everything derived from it."""

import re
from pathlib import Path

import pytest

from prune_hooks.cli import build_parser
from prune_hooks.core.errors import PruneHooksError
from prune_hooks.core.selection import methods as registry

ROOT = Path(__file__).resolve().parents[3]


def test_every_method_is_well_formed():
    for m in registry.REGISTRY.values():
        assert set(m.needs) <= set(registry.NEEDS)
        assert m.summary
        if m.is_score:
            assert m.aggregations and m.rank is None
            assert m.columns == tuple(f"{m.name}_{a}" for a in m.aggregations)
        else:
            assert m.rank is not None and not m.aggregations


def test_register_refuses_duplicates_and_malformed_methods():
    with pytest.raises(PruneHooksError, match="already registered"):
        registry.register("csod", "again", rank=lambda i, r: None)
    with pytest.raises(PruneHooksError, match="exactly one of"):
        registry.Method("x", "neither")
    with pytest.raises(PruneHooksError, match="unknown needs"):
        registry.Method("x", "bad", needs=("gpu",), rank=lambda i, r: None)
    with pytest.raises(PruneHooksError, match="unknown method 'nope'"):
        registry.get("nope")


def test_needs_decide_what_the_hooks_collect():
    assert registry.PROTOTYPES in registry.needs_of(["vps_iou", "csod"])
    assert registry.PROTOTYPES not in registry.needs_of(["vps_iou", "entropy", "random"])
    assert registry.needs_of(["kcenter"]) == registry.needs_of(["herding"]) == {registry.PROTOTYPES}


def test_cli_choices_are_the_registry():
    sel = next(a for a in build_parser()._subparsers._group_actions[0].choices["select"]._actions if a.dest == "method")
    assert list(sel.choices) == [*registry.names(), "all"]


def test_readme_method_table_lists_every_registered_method():
    """README's table of methods (between its markers) names each registered method once, with its needs."""
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- methods -->")[1].split("<!-- /methods -->")[0]
    rows = [r for r in table.strip().splitlines()[2:] if r.startswith("|")]
    listed = {re.findall(r"`([a-z_]+)`", r.split("|")[1])[0]: r for r in rows}
    assert list(listed) == list(registry.names())
    for name, row in listed.items():
        needs = row.split("|")[2]
        for need in registry.get(name).needs:
            assert need in needs, (name, need)


def test_vps_csod_is_csod_plus_the_vps_percentile_term(tmp_path):
    import json

    import numpy as np

    from prune_hooks.cli import main as cli
    from prune_hooks.core.io import write_csv, write_json
    from prune_hooks.core.scoring.prototypes import save_prototypes
    from tests.core.selection.test_csod import direct_eq4

    rng = np.random.default_rng(3)
    ids = np.array([1, 2, 3, 4, 5, 6, 1, 3])
    cats = np.array([1, 1, 1, 1, 1, 1, 2, 2])
    feat = np.abs(rng.normal(size=(8, 5))) + 0.01
    vps = {1: 0.1, 2: 0.4, 3: 0.2, 4: 0.3, 5: float("nan"), 6: 0.05}
    gt = tmp_path / "gt.json"
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 9, "height": 9} for i in range(1, 7)]
    anns = [
        {"id": k, "image_id": int(i), "category_id": int(c), "bbox": [0, 0, 3, 3], "area": 9, "iscrowd": 0}
        for k, (i, c) in enumerate(zip(ids, cats), 1)
    ]
    cat_list = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": cat_list}))
    run = tmp_path / "run"
    write_json(run / "meta.json", {"framework": "test", "annotations": str(gt)})
    write_csv(run / "images.csv", ("image_id", "n_objects", "vps_iou_max"), [(i, 1, v) for i, v in vps.items()])
    save_prototypes(run / "prototypes.npz", {"image_id": ids, "category_id": cats, "feature": feat.astype(np.float32)})
    # percentiles among the 5 images with a VPS: 6 -> 0, 1 -> 1/4, 3 -> 2/4, 4 -> 3/4, 2 -> 1; none (5) -> 0
    pct = {6: 0, 1: 0.25, 3: 0.5, 4: 0.75, 2: 1.0, 5: 0}
    size = {1: 6, 2: 2}
    bias = np.array([0.05 * size[c] * pct[i] for i, c in zip(ids.tolist(), cats.tolist())])
    want = direct_eq4(ids, cats, feat.astype(np.float32), 4, 0.05, bias)
    assert cli(["select", str(run), "--method", "vps_csod", "--count", "4", "--out", str(tmp_path / "s")]) == 0
    got = json.loads((tmp_path / "s" / "subset.json").read_text())
    assert got["image_ids"] == want and got["vps_column"] == "vps_iou_max"
    assert cli(["select", str(run), "--method", "csod", "--count", "4", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "subset.json").read_text())["image_ids"] != want  # the VPS term mattered
