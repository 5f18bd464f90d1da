"""Copy the benchmark results, as `python -m otcache_engine bench` wrote them, into README.md.

The README shows the table whatever it says; this keeps it identical to docs/results/bench.md
(the node reference has its own generator, scripts/make_node_reference.py).

    python scripts/update_readme.py [--results docs/results/bench.md]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def demoted(markdown: str, levels: int = 2) -> str:
    """The results file's headings sit under a README section: push them down a level or two."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def splice(readme: str, body: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body.strip()}\n{END}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "bench.md")
    args = ap.parse_args()
    body = demoted(args.results.read_text(encoding="utf-8"))
    readme = ROOT / "README.md"
    readme.write_text(splice(readme.read_text(encoding="utf-8"), body), encoding="utf-8")
    print(f"README.md: results from {args.results}")


if __name__ == "__main__":
    main()
