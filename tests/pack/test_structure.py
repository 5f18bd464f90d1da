"""The structure stays readable: no file over 400 lines, no function over 60, no folder of the pack or the
engine with more than 16 modules, no import circle, and an engine that imports no ComfyUI and holds no demo
(pure: reads the sources, imports none of them)."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("nodes", "otcache_engine", "scripts", "benchmarks")
PREFIXES = ("otcache_pack.", "otcache_pure.")
MAX_LINES, MAX_FUNCTION, MAX_MODULES = 400, 60, 16


@lru_cache(maxsize=None)
def sources() -> dict[Path, ast.Module]:
    files = [ROOT / "__init__.py"] + [f for top in CODE for f in sorted((ROOT / top).rglob("*.py"))]
    return {f: ast.parse(f.read_text(encoding="utf-8")) for f in files}


def module_name(f: Path) -> str:
    parts = list(f.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_file_over_400_lines():
    long = {str(f.relative_to(ROOT)): n for f in sources()
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_function_over_60_lines():
    long = [f"{f.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1})"
            for f, tree in sources().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    assert long == []


def test_no_folder_of_the_pack_or_engine_holds_more_than_16_modules():
    folders = [d for top in ("nodes", "otcache_engine") for d in [ROOT / top, *(ROOT / top).rglob("*")]
               if d.is_dir() and d.name != "__pycache__"]
    crowded = {str(d.relative_to(ROOT)): n for d in folders if (n := len(list(d.glob("*.py")))) > MAX_MODULES}
    assert crowded == {}


def imports_of(f: Path, tree: ast.Module, known: set[str]) -> set[str]:
    """Our modules ``f`` imports, at any depth of the file (a lazy import inside a function closes a circle
    as well)."""
    pkg = module_name(f) if f.name == "__init__.py" else module_name(f).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
                for p in PREFIXES:
                    target = target[len(p):] if target.startswith(p) else target
            for a in node.names:
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]; counter[0] += 1; stack.append(start); on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circle():
    known = {module_name(f) for f in sources()}
    graph = {module_name(f): imports_of(f, tree, known) - {module_name(f)} for f, tree in sources().items()}
    assert circles(graph) == []


def test_the_engine_imports_no_comfy_nor_the_benchmarks_and_holds_no_toy():
    engine = {f: t for f, t in sources().items() if f.is_relative_to(ROOT / "otcache_engine")}
    comfy = [str(f.relative_to(ROOT)) for f, t in engine.items() for node in ast.walk(t)
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and any(n.startswith(("comfy", "folder_paths", "benchmarks")) for n in
                     ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]))]
    assert comfy == []
    assert not (ROOT / "otcache_engine" / "toy").exists()


def test_the_circle_check_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
