"""The package's import graph: no cycles, and no layer importing a higher one."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "hrnet_flax"

# Lowest first. A module may import its own subpackage and any strictly lower layer.
LAYERS = {
    "runtime": 0,
    "data": 1,
    "models": 1,
    "weights": 2,
    "parallel": 3,
    "tasks": 3,
    "export": 3,
    "nnx": 3,
    "evaluate": 4,
    "predict": 4,
    "train": 5,
    "cli": 6,
    "__main__": 7,
    "__init__": 7,
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported anywhere) of `hrnet_flax`."""
    tree = ast.parse(path.read_text())
    top, every = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrnet_flax"):
            submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            # `from hrnet_flax.models import conv` imports a module; `from hrnet_flax import x`, a name of the root
            names = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("hrnet_flax")]
        every.update(names)
        if node in tree.body:
            top.update(names)
    return top, every


def layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return key, LAYERS[key]




def test_every_module_has_a_layer():
    assert {layer(m)[0] for m in MODULES if m != "hrnet_flax"} <= set(LAYERS)


def test_no_layer_imports_a_higher_one():
    wrong = []
    for module, path in MODULES.items():
        if module == "hrnet_flax" or module.endswith("__main__"):
            continue
        own, rank = layer(module)
        for target in imports(path)[1]:
            if target == "hrnet_flax":
                wrong.append(f"{module} imports the package root")
                continue
            other, other_rank = layer(target)
            if other != own and other_rank >= rank:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {m: {t for t in imports(p)[0] if t in MODULES} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_every_folder_is_a_regular_package():
    """A folder without `__init__.py` is a namespace package, which setuptools leaves out of a wheel."""
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not [str(f) for f in folders if not (f / "__init__.py").exists()]
