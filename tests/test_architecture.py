"""The shape of the package (docs/ARCHITECTURE.md): imports go one way, no circles, no module
reaches into another's private names, no module grows past ~600 lines.

Read from the source with ``ast``: every ``import`` of a dfsync module counts, at module level
or inside a function (a function-local import dodging a circle is still a circle), except those
under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "dfsync"
MAX_LINES = 600

# Low to high: a module imports only from its own layer and the layers before it. A module in no
# layer fails the test: place it where it belongs (a new destination goes with "parts").
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("dfsync.errors", "dfsync.states", "dfsync._arrow", "dfsync._regex", "dfsync._paths",
              "dfsync._kinds", "dfsync._pandas", "dfsync._adbc", "dfsync._cursor", "dfsync._registry",
              "dfsync._settings", "dfsync._ident", "dfsync._secrets", "dfsync._callbacks", "dfsync._sensitive",
              "dfsync._checks_sql", "dfsync._gx_context", "dfsync._pgtypes", "dfsync._keyhash",
              "dfsync._interrupt", "dfsync._words", "dfsync._args", "dfsync._exprcode")),
    ("store", ("dfsync.store", "dfsync._dryrun")),
    ("parts", ("dfsync.mapping", "dfsync.sources", "dfsync.staging", "dfsync._stage_input", "dfsync._stage_retry", "dfsync._dense_diff", "dfsync._schema", "dfsync._schema_values", "dfsync._window",
               "dfsync._check", "dfsync._checks_eval", "dfsync.checks", "dfsync.gx", "dfsync._gx_actions",
               "dfsync.destinations", "dfsync.definition", "dfsync.schedule")),
    ("engine", ("dfsync.runner", "dfsync._fused", "dfsync._fused_delta", "dfsync._shared", "dfsync._writer", "dfsync._settle", "dfsync._retry", "dfsync._bucket", "dfsync.engines", "dfsync._reads",
                "dfsync._keyfail",
                "dfsync._partition")),
    ("handles", ("dfsync.workspace", "dfsync.sync", "dfsync.run", "dfsync._validate", "dfsync._changes",
                 "dfsync._retention",
                 "dfsync._progress", "dfsync._html", "dfsync._html_run", "dfsync._html_history",
                 "dfsync._html_preview")),
    ("top", ("dfsync", "dfsync.__main__", "dfsync.cli", "dfsync.demo", "dfsync.widgets")),
]
# imports against the layers, each with its reason
ALLOWED_UPWARD = {
    # in a notebook a background run shows a live widget; ipywidgets is imported only then
    ("dfsync._progress", "dfsync.widgets"),
}
# private names of other libraries that dfsync also uses for its own attributes
OTHER_LIBRARIES_PRIVATE = {
    "_result",  # PyMySQL's Cursor._result: the field types of an unbuffered result (sources/_mysql.py)
}
# modules still over MAX_LINES while their owners split them (this list only shrinks)
TOO_LONG_FOR_NOW: set[str] = set()


def _name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for each dfsync import that can run."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, None, child.lineno) for a in child.names if a.name.split(".")[0] == "dfsync")
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(package[:len(package) - child.level + 1] + [child.module or ""]).strip(".") \
                    if child.level else (child.module or "")
                if base.split(".")[0] != "dfsync":
                    continue
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub, None, child.lineno) if sub in MODULES else (base, a.name, child.lineno))
            else:
                visit(child)

    visit(ast.parse(path.read_text()))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py: place it"
    return best[0]


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_imports_go_down_the_layers():
    wrong = []
    for m, imports in GRAPH.items():
        for target, _, line in imports:
            if target in MODULES and _layer(target) > _layer(m) and (m, target) not in ALLOWED_UPWARD:
                wrong.append(f"{MODULES[m].relative_to(ROOT)}:{line} ({LAYERS[_layer(m)][0]}) imports {target} "
                             f"({LAYERS[_layer(target)][0]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_engine_never_imports_the_handles():
    """The runner gets plain data (a definition, the store, ids) and reports through the store:
    it never imports the user-facing handles, the scheduler, the widgets or the CLI, nor does
    anything it imports."""
    banned = ("dfsync.workspace", "dfsync.sync", "dfsync.run", "dfsync.widgets", "dfsync.cli")
    below = {m for m in MODULES if _layer(m) <= _layer("dfsync.runner")}
    for m in below:
        assert not [t for t, _, _ in GRAPH[m] if t in banned or t.startswith("dfsync.widgets.")], m
    assert "dfsync.schedule" not in {t for t, _, _ in GRAPH["dfsync.runner"]}


def test_no_import_circles():
    edges = {m: {t for t, _, _ in GRAPH[m] if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(MODULES):
        if m not in state:
            circle = visit(m)
            assert circle is None, "import circle: " + " -> ".join(circle)


def _private_names_defined() -> dict[str, set[str]]:
    """Per module: the private names it defines (functions, classes, attributes set on self)."""
    out: dict[str, set[str]] = defaultdict(set)
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            if name and name.startswith("_") and not name.startswith("__"):
                out[m].add(name)
    return out


def test_no_private_name_is_used_across_modules():
    """``from dfsync.x import _y``, ``x._y`` on an imported module, or ``obj._y`` where ``_y`` is
    defined only in another dfsync module: make it public where it belongs, or pass the data."""
    defined = _private_names_defined()
    wrong = []
    for m, imports in GRAPH.items():
        wrong += [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}.{n}" for t, n, line in imports
                  if n and n.startswith("_") and not n.startswith("__") and t != m]
        for node in ast.walk(ast.parse(MODULES[m].read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            v = node.value
            if (isinstance(v, ast.Name) and v.id in ("self", "cls")) or (
                    isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"):
                continue
            if node.attr in OTHER_LIBRARIES_PRIVATE:
                continue
            owners = {o for o, names in defined.items() if node.attr in names}
            if owners and m not in owners:
                wrong.append(f"{MODULES[m].relative_to(ROOT)}:{node.lineno} reads {ast.unparse(node)} "
                             f"(defined in {', '.join(sorted(owners))})")
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def _lines(path: pathlib.Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): _lines(p) for p in MODULES.values() if _lines(p) > MAX_LINES}
    assert set(long) <= TOO_LONG_FOR_NOW, f"split these modules (over {MAX_LINES} lines): " + ", ".join(
        f"{k} ({v})" for k, v in sorted(long.items()) if k not in TOO_LONG_FOR_NOW)


def test_the_list_of_long_modules_only_shrinks():
    for name in sorted(TOO_LONG_FOR_NOW):
        assert name.replace("/", ".").removesuffix(".py") in MODULES and _lines(ROOT / name) > MAX_LINES, \
            f"{name} is no longer over {MAX_LINES} lines (or is gone): take it off TOO_LONG_FOR_NOW"
