"""The package's layout: layers that never import upwards, and no import cycles.

docs/design.md draws the map these tests enforce. Imports inside functions count
too: deferring an import is for start-up speed, never a way to hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import proctor

PACKAGE_DIR = Path(proctor.__file__).resolve().parent

# Layer of each private package (or top-level private module); a module may import
# its own package and anything in a lower layer, nothing else.
LAYERS = {
    "_core": 0,
    "_reaper": 1,
    "_logging": 1,
    "_connections": 1,
    "_sync": 2,
    "_start": 2,
    "_queues": 3,
    "_sharedmem": 3,
    "_pool": 4,
    "_managers": 5,
    "_dummy": 5,
    "_context": 6,
    "_integrations": 7,
}
# The front door and the stdlib-named public modules sit above every private layer;
# the command line above them.
PUBLIC_LAYER = 8
CLI_LAYER = 9


def _module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _module_names()


def _imports(name: str) -> set[str]:
    """The proctor modules ``name`` imports anywhere in its body, functions included."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "proctor":
                continue
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                targets.add(submodule if submodule in MODULES else module)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.split(".")[0] == "proctor")
    targets.discard(name)
    return targets


def _layer(name: str) -> tuple[int, str]:
    """(layer, group) of a module: its private package, or the public/CLI level."""
    parts = name.split(".")
    if len(parts) == 1:
        return PUBLIC_LAYER, "proctor"
    top = parts[1]
    if top in LAYERS:
        return LAYERS[top], top
    if top in ("_cli", "__main__"):
        return CLI_LAYER, "cli"
    if top.startswith("_"):
        raise AssertionError(f"{name}: private module outside the layer map in test_layout.py")
    return PUBLIC_LAYER, "public"


def test_every_private_module_belongs_to_a_layer():
    for name in MODULES:
        _layer(name)  # raises for a module the map does not place


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    wrong = []
    for name in sorted(MODULES):
        layer, group = _layer(name)
        for target in sorted(_imports(name)):
            target_layer, target_group = _layer(target)
            if target_group == group:
                continue
            if target_layer >= layer and not (layer == target_layer == PUBLIC_LAYER):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: _imports(name) for name in MODULES}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_layout_test_sees_function_level_imports():
    # The check above is only worth something if it reads imports inside functions.
    # (_context imports the queue module only inside the Queue factory.)
    assert "proctor._queues._queue" in _imports("proctor._context")
