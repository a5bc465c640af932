"""The package's layout at a glance: lines per module and layer, the longest functions, imports.

Run from the repository root: ``python tools/layout_report.py [--top N]``. It reads the source
with ``ast`` (nothing is imported) and prints

1. lines per module, grouped by layer (``stem/``, ``model/``, ``viz/`` and the top level);
2. the ``N`` longest functions and methods (lines from ``def`` to the last line of the body);
3. the import graph between layers (module-level and deferred imports counted apart), and any
   import that runs against the data flow ``stem -> model -> viz`` (the top level may import
   every layer; ``_version`` may be imported from anywhere).

``tests/test_layout.py`` runs :func:`upward_imports` and :func:`cycles` and fails on any import
against the flow or any import cycle.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rrvae_nb"
LAYERS = ("stem", "model", "viz")  # data flows left to right: a layer imports only those before it
ANYWHERE = {f"{PACKAGE}._version"}  # a leaf every layer may import


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: path}`` for every ``.py`` file of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer(name: str) -> str:
    """``stem``, ``model`` or ``viz`` for a module in a layer, ``top`` otherwise."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "top"


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """Package modules imported by ``name``: ``(target, deferred)``, deferred = inside a def."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in child.names]
            for target in targets:
                while target and target not in known:  # `import a.b.c` of a package: a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append((target, inner))
            visit(child, inner)

    visit(tree, False)
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """Imports against the data flow (a layer importing a later layer or the top level)."""
    mods = modules(root)
    bad = []
    for name, path in mods.items():
        here = layer(name)
        if here == "top":
            continue
        for target, deferred in imports(name, path, set(mods)):
            there = layer(target)
            if target in ANYWHERE:
                continue
            if there == "top" or LAYERS.index(there) > LAYERS.index(here):
                kind = "deferred" if deferred else "module-level"
                bad.append(f"{name} imports {target} ({kind}): {here} may not import {there}")
    return bad


def cycles(root: Path = ROOT) -> list[list[str]]:
    """Import cycles among the package's modules (module-level imports; Tarjan's algorithm)."""
    mods = modules(root)
    graph = {name: sorted({t for t, deferred in imports(name, path, set(mods)) if not deferred})
             for name, path in mods.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def functions(path: Path):
    """``(code lines, lines, qualified name)`` of every function and method in ``path``: code
    lines count the body without its docstring, lines run from ``def`` to the end."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    body = child.body
                    if (len(body) > 1 and isinstance(body[0], ast.Expr)
                            and isinstance(body[0].value, ast.Constant)
                            and isinstance(body[0].value.value, str)):
                        body = body[1:]  # the docstring
                    code = child.end_lineno - body[0].lineno + 1
                    out.append((code, child.end_lineno - child.lineno + 1, qual))
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many long functions to list")
    args = parser.parse_args(argv)
    mods = modules()

    print("## Lines per module\n")
    per_layer = Counter()
    for name, path in mods.items():
        n = len(path.read_text().splitlines())
        per_layer[layer(name)] += n
        print(f"{n:6d}  {name}")
    print()
    for name in ("top", *LAYERS):
        if per_layer[name]:
            print(f"{per_layer[name]:6d}  {name} (all modules)")
    print(f"{sum(per_layer.values()):6d}  total, {len(mods)} modules\n")

    print(f"## The {args.top} longest functions (code lines without the docstring / def to end)\n")
    rows = [(code, n, f"{name}.{qual}") for name, path in mods.items()
            for code, n, qual in functions(path)]
    for code, n, qual in sorted(rows, reverse=True)[: args.top]:
        print(f"{code:6d} / {n:3d}  {qual}")
    counts = [code for code, _, _ in rows]
    print(f"\n{len(rows)} functions; {sum(c > 50 for c in counts)} with over 50 lines of code\n")

    print("## Imports between layers (module-level / deferred)\n")
    edges = Counter()
    for name, path in mods.items():
        for target, deferred in imports(name, path, set(mods)):
            there = "_version" if target in ANYWHERE else layer(target)
            edges[(layer(name), there, deferred)] += 1
    for a, b in sorted({(a, b) for a, b, _ in edges}):
        print(f"  {a:>5} -> {b:<8} {edges[(a, b, False)]:3d} / {edges[(a, b, True)]:3d}")
    bad = upward_imports()
    print("\nAgainst the flow stem -> model -> viz: " + ("none" if not bad else ""))
    for line in bad:
        print("  " + line)
    loops = cycles()
    print("Import cycles (module level): " + ("none" if not loops else ""))
    for loop in loops:
        print("  " + " <-> ".join(loop))
    return 1 if bad or loops else 0


if __name__ == "__main__":
    raise SystemExit(main())
