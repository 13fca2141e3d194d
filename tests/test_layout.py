"""The package's shape: no import cycle, the core's stages import only the stages before them, the core
imports nothing above it, and the framework adapters do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import prune_hooks

PACKAGE = Path(prune_hooks.__file__).parent
# the core's stages in the order a run goes through them; a module may import its own stage and those before
STAGES = ("errors", "io", "data", "scoring", "selection", "outputs", "lifecycle")
ADAPTERS = ("detectron2", "mmdet", "ultralytics")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["prune_hooks", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], unresolved: list[str] | None = None) -> set[str]:
    """The package's modules ``name`` imports anywhere in its file (function-level imports included); an
    import of the package that names no module of it is added to ``unresolved``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            src = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import submodule` imports the submodule; `from mod import name` the module
            targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
        if unresolved is not None:
            unresolved += [f"{name}: {t}" for t in targets if t.startswith("prune_hooks") and t not in modules]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_import_of_the_package_names_a_module_of_it():
    """Function-level imports run late: one that names a moved module fails only when its branch runs."""
    modules, unresolved = _modules(), []
    for name, path in modules.items():
        _imports(name, path, modules, unresolved)
    assert not unresolved, unresolved


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles[:3]


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["prune_hooks", "core"] or len(parts) < 3:
        return None
    return STAGES.index(parts[2])


def test_core_stages_import_only_what_comes_before_them():
    wrong = []
    for module, targets in _graph().items():
        stage = _stage(module)
        if stage is None:
            continue
        for t in targets:
            if t.startswith("prune_hooks.core."):
                if _stage(t) > stage:
                    wrong.append(f"{module} -> {t}")
            elif t not in ("prune_hooks._version", "prune_hooks.compat"):
                wrong.append(f"{module} -> {t} (above the core)")
    assert not wrong, wrong


def test_every_core_module_is_in_a_stage():
    for module in _graph():
        if module.startswith("prune_hooks.core."):
            assert module.split(".")[2] in STAGES, module


def test_adapters_do_not_import_each_other():
    for module, targets in _graph().items():
        parts = module.split(".")
        if len(parts) > 1 and parts[1] in ADAPTERS:
            others = [t for t in targets if t.split(".")[1] in ADAPTERS and t.split(".")[1] != parts[1]]
            assert not others, (module, others)


def test_the_package_top_lists_the_api():
    """``import prune_hooks`` stays light (the API loads on first use), so it lists the API's names itself."""
    from prune_hooks import _API, api

    assert sorted(_API) == sorted(api.__all__)
