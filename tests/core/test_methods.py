"""The method registry: one place for every method, and everything derived from it."""

import re
from pathlib import Path

import pytest

from prune_hooks.cli import build_parser
from prune_hooks.core import methods as registry
from prune_hooks.core.errors import PruneHooksError

ROOT = Path(__file__).resolve().parents[2]


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
