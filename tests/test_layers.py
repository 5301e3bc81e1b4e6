"""The package's layers import one way: each module imports only modules of its own layer or the layers below, with
no import cycle (``docs/architecture.md``). Read from the source with ``ast``, so lazy imports inside functions
count too: a lazy upward import is still an upward dependency."""

import ast
from pathlib import Path

import lowbit_flex

ROOT = Path(lowbit_flex.__file__).resolve().parent
# Bottom to top. A module belongs to the layer of the longest prefix listed. The top layer holds what uses the
# library rather than being part of it: the package's own __init__, the demo, and the test/AOT helpers.
LAYERS = (
    ("lowbit_flex._version", "lowbit_flex._checks"),
    ("lowbit_flex.quant", "lowbit_flex.score_mods"),
    ("lowbit_flex.kernels", "lowbit_flex.cuda_build"),
    ("lowbit_flex.ops",),
    ("lowbit_flex.nn", "lowbit_flex.attention", "lowbit_flex.viz", "lowbit_flex.hf"),
    ("lowbit_flex", "lowbit_flex.demo", "lowbit_flex._demos", "lowbit_flex.testing", "lowbit_flex.triton_aot"),
)
LIBRARY_LAYERS = len(LAYERS) - 1  # everything below the top layer is the library users import


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and p.count(".") > depth:
                best, depth = i, p.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel / "__init__.py").exists()


def _imports(path: Path, module: str) -> set[str]:
    """The lowbit_flex modules ``path`` imports (``from pkg import submodule`` resolves to the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:
                found.add(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base)
    return {m for m in found if m == "lowbit_flex" or m.startswith("lowbit_flex.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in ROOT.rglob("*.py")}


def test_every_module_imports_only_its_layer_and_below():
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) > _layer(m)
    ]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_library_module_imports_testing():
    offenders = [m for m, deps in _graph().items() if _layer(m) < LIBRARY_LAYERS and "lowbit_flex.testing" in deps]
    assert not offenders, f"shipped library modules import lowbit_flex.testing: {offenders}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_checker_sees_upward_imports_and_cycles(tmp_path):
    """The two checks above can fail: an upward import and a cycle planted in a synthetic graph are reported."""
    assert _layer("lowbit_flex.quant.int4") < _layer("lowbit_flex.ops.s8s4_linear") < _layer("lowbit_flex.nn.w4a8")
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from lowbit_flex.ops import s8s4_linear\n    import lowbit_flex.testing\n")
    assert _imports(src, "lowbit_flex.quant.m") == {"lowbit_flex.ops.s8s4_linear", "lowbit_flex.testing"}
