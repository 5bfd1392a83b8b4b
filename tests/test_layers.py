"""The package's layering, drawn from its own imports (docs/architecture.md, "The Python layers").

Every module under lorafusion_ext/ is parsed with `ast`; every import in it counts, at module
level or inside a function (a lazy import is still an arrow), relative imports resolved.
The graph must have no import circle except the one documented door
(`HardwareConfig.from_aihwkit` / `to_aihwkit` -> `interop.aihwkit_config`), no arrow that
runs up the layer table below, only `ops/` may reach `torch.ops.lorafusion`, and the package
root holds at most six modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lorafusion_ext"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: The layer table, lowest first (mirrored in docs/architecture.md). A module belongs to the
#: entry with the longest prefix that names it or one of its packages; a module may import its
#: own layer and any layer below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("config", ("lorafusion_ext.hardware", "lorafusion_ext.devices")),
    ("ops", ("lorafusion_ext.ops",)),
    ("nn", ("lorafusion_ext.nn",)),
    ("interop", ("lorafusion_ext.interop", "lorafusion_ext.assets")),
    ("data", ("lorafusion_ext.data", "lorafusion_ext.models")),
    ("evaluation", ("lorafusion_ext.evaluation",)),
    ("training", ("lorafusion_ext.training",)),
    ("tasks", ("lorafusion_ext.tasks",)),
    ("public", ("lorafusion_ext",)),
    ("apps", ("lorafusion_ext.apps",)),
)

#: The one arrow allowed to run up: the config's public door to AIHWKIT, a documented lazy
#: import inside HardwareConfig.from_aihwkit / to_aihwkit. It closes the package's one import
#: circle (hardware -> interop.aihwkit_config -> ... -> hardware); every other arrow is acyclic.
ALLOWED_UPWARD = {("lorafusion_ext.hardware", "lorafusion_ext.interop.aihwkit_config")}

MAX_ROOT_MODULES = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """`name` or the nearest enclosing module of the package that exists; None outside it."""
    while name:
        if name in known:
            return name
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best < 0 or (best_len == len(PACKAGE) and name != PACKAGE):
        raise KeyError(f"{name} is in no layer of tests/test_layers.py LAYERS (a module at the root "
                       "must be named there)")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Arrows from a module to one in a higher layer (or to a module in no layer)."""
    bad = []
    for name, targets in graph.items():
        for target in targets:
            try:
                if layer_of(target) > layer_of(name) and (name, target) not in ALLOWED_UPWARD:
                    bad.append((name, target))
            except KeyError:
                bad.append((name, target))
    return sorted(bad)


def _is_torch_ops(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "ops" and isinstance(node.value, ast.Name)
            and node.value.id == "torch")


def _calls_compiled_ops(tree: ast.AST) -> bool:
    """Whether `tree` reaches the compiled ops: ``torch.ops.lorafusion`` (the attribute chain) or
    ``getattr(torch.ops, "lorafusion")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "lorafusion" and _is_torch_ops(node.value):
            return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and _is_torch_ops(node.args[0])
                and isinstance(node.args[1], ast.Constant) and node.args[1].value == "lorafusion"):
            return True
    return False


def test_compiled_ops_check_catches_a_call() -> None:
    assert _calls_compiled_ops(ast.parse("y = torch.ops.lorafusion.crossbar_mvm(x)"))
    assert _calls_compiled_ops(ast.parse("op = getattr(torch.ops, 'lorafusion').pool_fusion"))
    assert not _calls_compiled_ops(ast.parse("name = 'lorafusion'; f(name, 'lorafusion')"))


def test_graph_sees_the_package() -> None:
    # Guards the rest against an empty or broken walk: the package's own known arrows are drawn.
    graph = import_graph()
    assert len(graph) > 50
    assert "lorafusion_ext.ops.crossbar" in graph["lorafusion_ext.nn.analog_linear"]
    assert "lorafusion_ext.hardware" in graph["lorafusion_ext.ops.crossbar"]
    assert "lorafusion_ext.interop.aihwkit_config" in graph["lorafusion_ext.hardware"]  # the lazy door


def test_circles_catch_a_planted_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_but_the_documented_one() -> None:
    graph = import_graph()
    found = circles(graph)
    # At most one circle (strongly connected component), and it holds the door...
    assert len(found) <= 1, f"import circles: {[sorted(c) for c in found]}"
    door = {m for edge in ALLOWED_UPWARD for m in edge}
    assert all(door <= c for c in found), f"import circle without the documented door: {[sorted(c) for c in found]}"
    # ...which is what closes it: without the door's arrow, nothing is circular.
    opened = {m: {t for t in targets if (m, t) not in ALLOWED_UPWARD} for m, targets in graph.items()}
    rest = circles(opened)
    assert not rest, f"import circles besides the documented door: {[sorted(c) for c in rest]}"


def test_upward_check_catches_a_planted_one() -> None:
    planted = {"lorafusion_ext.ops.crossbar": {"lorafusion_ext.nn.analog_linear", "lorafusion_ext.hardware"},
               "lorafusion_ext.apps.cli": {"lorafusion_ext.tasks"}}
    assert upward_imports(planted) == [("lorafusion_ext.ops.crossbar", "lorafusion_ext.nn.analog_linear")]


def test_no_upward_import() -> None:
    bad = upward_imports(import_graph())
    assert not bad, "imports that run up a layer (tests/test_layers.py LAYERS): " + ", ".join(
        f"{a} -> {b}" for a, b in bad)


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_only_ops_calls_the_compiled_ops() -> None:
    offenders = []
    for name, path in modules().items():
        if name == f"{PACKAGE}.ops" or name.startswith(f"{PACKAGE}.ops."):
            continue
        if _calls_compiled_ops(ast.parse(path.read_text())):
            offenders.append(name)
    assert not offenders, f"torch.ops.lorafusion used outside lorafusion_ext/ops/: {offenders}"


def test_root_holds_few_modules() -> None:
    root = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the package root: {root}"


def test_config_does_not_reach_the_ops() -> None:
    # HardwareConfig is plain data: nothing it imports, directly or through others, is an op
    # wrapper or the compiled library (its AIHWKIT door aside, which is only opened on call).
    graph = import_graph()
    reach: set[str] = set()
    todo = ["lorafusion_ext.hardware"]
    while todo:
        node = todo.pop()
        for target in graph[node]:
            if target not in reach and (node, target) not in ALLOWED_UPWARD:
                reach.add(target)
                todo.append(target)
    assert not [m for m in reach if m.startswith(f"{PACKAGE}.ops")], sorted(reach)
