"""The developer documents name code that exists: every `module.name` and `path/file.py` in
docs/architecture.md and docs/method.md resolves, and the module map of architecture.md lists every module
of the pack, the engine and the benchmarks, each at the path it has (pure: reads files, imports nothing)."""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "method.md"]
CODE_DIRS = ("nodes", "otcache_engine", "benchmarks", "scripts")
OUR_TOPS = CODE_DIRS + ("tests", "docs", "web", "workflows", "example_workflows", "presets")
EXTENSIONS = (".py", ".json", ".md", ".txt", ".js", ".mjs", ".sh", ".safetensors", ".png", ".toml")
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(\(\))?$")
MAPPED = ("nodes", "otcache_engine", "benchmarks")   # folders whose every module the module map must name


def spans(doc: Path) -> list[str]:
    """Inline code spans outside fenced blocks."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


@lru_cache(maxsize=None)
def modules() -> dict[str, list[Path]]:
    """Module (and package) basename -> files, over our code folders."""
    index: dict[str, list[Path]] = {}
    for top in CODE_DIRS:
        for f in (ROOT / top).rglob("*.py"):
            name = f.parent.name if f.name == "__init__.py" else f.stem
            index.setdefault(name, []).append(f)
        index.setdefault(top, []).append(ROOT / top / "__init__.py")
    return index


@lru_cache(maxsize=None)
def tree(path: Path) -> ast.Module | None:
    return ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else None


def names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What a module or class body defines, assigns or imports under a name."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        found[n.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                found[(a.asname or a.name).split(".")[0]] = node
    return found


def resolves(module_file: Path, parts: list[str]) -> bool:
    if not parts:
        return True
    head, rest = parts[0], parts[1:]
    if module_file.name == "__init__.py":
        sub = [module_file.parent / f"{head}.py", module_file.parent / head / "__init__.py"]
        if any(s.is_file() and resolves(s, rest) for s in sub):
            return True
    t = tree(module_file)
    node = names_in(t.body).get(head) if t is not None else None
    if node is None:
        return False
    if not rest:
        return True
    return isinstance(node, ast.ClassDef) and len(rest) == 1 and rest[0] in names_in(node.body)


def broken_dotted(ref: str) -> bool:
    parts = ref.removesuffix("()").split(".")
    files = modules().get(parts[0])
    if not files:
        return False      # not ours (torch.hub, comfy.model_patcher, ...)
    return not any(resolves(f, parts[1:]) for f in files)


def broken_path(ref: str) -> bool:
    if any(c in ref for c in "<>*{} ") or "://" in ref:
        return False      # a pattern or a URL, not a file of ours
    top = ref.split("/")[0]
    if top in OUR_TOPS or (ref.endswith(EXTENSIONS) and "/" not in ref.rstrip("/")):
        return not (ROOT / ref).exists()
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_reference_resolves(doc):
    bad = [s for s in spans(doc) if (DOTTED.match(s) and broken_dotted(s))
           or (("/" in s or s.endswith(EXTENSIONS)) and not DOTTED.match(s) and broken_path(s))]
    assert bad == [], f"{doc.name} names code that is not there: {bad}"


def module_map() -> list[str]:
    """Paths of the module map (the first fenced block of architecture.md): a folder line ends with '/',
    the lines indented below it are inside it; a line may name several files separated by ', '."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"## Module map\s*```\n(.*?)```", text, re.S).group(1)
    stack: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        token = line.split()[0] if line.strip() else ""
        if not re.fullmatch(r"[\w.]+(/|\.py,?|\.js|\.json)", token):
            continue                         # a description's continuation line
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = "".join(p for _, p in stack)
        first = line.strip().split("  ")[0]
        if first.endswith("/"):
            stack.append((indent, first))
            paths.append(prefix + first)
            continue
        paths += [prefix + name.strip() for name in first.split(",") if name.strip()]
    return paths


def test_the_module_map_names_every_module_where_it_is():
    mapped = module_map()
    missing_files = [p for p in mapped if not (ROOT / p).exists()]
    assert missing_files == [], f"the module map names paths that do not exist: {missing_files}"
    ours = {str(f.relative_to(ROOT)) for top in MAPPED for f in (ROOT / top).rglob("*.py")
            if f.name != "__init__.py" or f.parent.name == top}
    unnamed = sorted(ours - set(mapped))
    assert unnamed == [], f"modules the module map does not name: {unnamed}"
