"""The package reads as the pipeline: each stage imports only stages below it, and no
module imports itself back through others (read with ``ast``, nothing is executed).

The order, bottom first, is the data flow of the README's "How it works": the shared
helpers, the rules, the toolchains, the plan, reading binaries, predicting from
configure (which reads no binary but makes the same inventory), building, judging,
reporting, running a matrix, and the command line on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator

PACKAGE = Path(orchestrator.__file__).resolve().parent

# Stage of each top-level name of the package; a lower stage never imports a higher one.
STAGES = [
    ("common",),
    ("archs", "symbols"),  # the rules: orchestrator/archs.py and orchestrator/symbols.py
    ("toolchains",),
    ("planning",),
    ("read", "probe"),  # orchestrator/probe.py is the face of the read stage
    ("predict",),
    ("building",),
    ("judge",),
    ("reporting",),
    ("run",),
    ("cli", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """What ``path`` imports from this package, as dotted names (``from a import b`` gives
    ``a.b``: a module or a name in ``a``), at any depth of its code: imports inside
    functions run too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "orchestrator" or node.module.startswith("orchestrator."):
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("orchestrator."))
    return found


def stage_of(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            # `from orchestrator.read import fatbin` names a module, `... import Blob` a name.
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and target != "orchestrator":
                targets.add(target)
        edges[name] = targets
    return edges


def test_every_top_level_name_has_a_stage() -> None:
    tops = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert tops - {"__init__"} == set(RANK), "a new top-level module or package needs a stage"


def test_no_stage_imports_a_higher_one() -> None:
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source != "orchestrator"
        for target in targets
        if RANK[stage_of(target)] > RANK[stage_of(source)]
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The reader of imports finds both spellings, so a violation cannot hide."""
    source = tmp_path / "m.py"
    source.write_text(
        "from orchestrator.cli import main\n"
        "def f():\n    from orchestrator import run\n"
        "import orchestrator.judge.expect\n"
    )
    assert imports_of(source) == {
        "orchestrator.cli.main",
        "orchestrator.run",
        "orchestrator.judge.expect",
    }
    assert RANK[stage_of("orchestrator.cli.main")] > RANK[stage_of("orchestrator.judge.expect")]
