"""Copy the generated and long-form parts into README.md: the benchmark results, as
`python -m otcache_engine bench` wrote them, and docs/toy.md (the bundled model, demo and bench).

The README shows the table whatever it says; this keeps it identical to docs/results/bench.md
(the node reference has its own generator, scripts/make_node_reference.py).

    python scripts/update_readme.py [--results docs/results/bench.md]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {"bench": "bench-results", "toy": "toy"}


def demoted(markdown: str, levels: int = 2) -> str:
    """The results file's headings sit under a README section: push them down a level or two."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def splice(readme: str, body: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def without_title(markdown: str) -> str:
    """docs/toy.md's own title is the README section's heading already."""
    return re.sub(r"\A# [^\n]*\n+", "", markdown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "bench.md")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    text = splice(text, demoted(args.results.read_text(encoding="utf-8")), MARKERS["bench"])
    toy = ROOT / "docs" / "toy.md"
    text = splice(text, demoted(without_title(toy.read_text(encoding="utf-8")), 1), MARKERS["toy"])
    readme.write_text(text, encoding="utf-8")
    print(f"README.md: results from {args.results}, bundled-model section from {toy}")


if __name__ == "__main__":
    main()
