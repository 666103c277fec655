"""The package as a whole: imports run one way (no cycle), and every module says what it owns."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_imports() -> dict[str, set[str]]:
    """Each srtrain module and the srtrain modules it imports, at its top or inside a function."""
    files = {
        ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
        for f in (ROOT / "srtrain").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("srtrain"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                targets |= subs or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in files}
        graph[name] = targets - {name}
    return graph


def test_the_import_graph_has_no_cycle():
    graph, done, cycles = module_imports(), set(), []

    def visit(name: str, path: list[str]) -> None:
        for target in sorted(graph.get(name, ())):
            if target in path:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_opens_with_what_it_owns():
    missing = [
        str(f.relative_to(ROOT))
        for f in (ROOT / "srtrain").rglob("*.py")
        if f.read_text().strip() and ast.get_docstring(ast.parse(f.read_text())) is None
    ]
    assert not missing
