"""The README and docs/ name only paths and modules that exist, link only to pages and anchors that exist,
and the README stays the front door (size, the quick starts first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("prune_hooks/", "tools/", "docs/", "dev/", "tests/", ".ci/")
# a path-looking token in a code span: repository paths only (run directories, user files are not checked)
PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP) + r")[\w./-]*)`")
MODULE = re.compile(r"python -m ([\w.]+)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
NOT_OURS = {"tools/train.py"}  # MMDetection's own train script, named as such


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_modules_and_links_exist(page):
    text = page.read_text()
    missing = [p for p in PATH.findall(text) if p not in NOT_OURS and not (ROOT / p.rstrip(".")).exists()]
    for mod in MODULE.findall(text):
        base = ROOT / Path(*mod.split("."))
        if mod.split(".")[0] == "prune_hooks" and not (base.with_suffix(".py").exists() or base.is_dir()):
            missing.append(f"python -m {mod}")
    for link in LINK.findall(text):
        if "://" in link:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            missing.append(link)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            missing.append(link)
    assert not missing, missing


def test_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 15_000, len(text)
    lines = text.splitlines()
    for start in ("## Quick start: Detectron2", "## Quick start: MMDetection"):
        assert lines.index(start) < 150, start
    # the retraining command of each framework is in its quick start
    assert "--config-file OUTPUT_DIR/prune/retrain.yaml" in text and "tools/train.py WORK_DIR/prune/retrain.py" in text
