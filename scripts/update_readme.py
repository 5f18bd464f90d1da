"""Copy the in-host fidelity benchmark's summary into README.md, as `python -m benchmarks.fidelity.bench`
wrote it (docs/results/fidelity/summary.md), between the ``fidelity-results`` markers; and the cost curve's
rows (`python -m benchmarks.fidelity.cost_curve`: docs/results/cost/readme.md) between ``cost-results``, and the
transfer margins (`python -m benchmarks.fidelity.transfer`: docs/results/transfer/readme.md) between
``transfer-results``.

The README shows the table whatever it says (the node reference has its own generator,
scripts/make_node_reference.py, writing docs/nodes.md).

    python scripts/update_readme.py [--summary docs/results/fidelity/summary.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "fidelity-results"
COST_MARKER = "cost-results"
TRANSFER_MARKER = "transfer-results"


def splice(readme: str, body: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, default=ROOT / "docs" / "results" / "fidelity" / "summary.md")
    ap.add_argument("--cost", type=Path, default=ROOT / "docs" / "results" / "cost" / "readme.md")
    ap.add_argument("--transfer", type=Path, default=ROOT / "docs" / "results" / "transfer" / "readme.md")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    text = splice(readme.read_text(encoding="utf-8"), args.summary.read_text(encoding="utf-8"), MARKER)
    text = splice(text, args.cost.read_text(encoding="utf-8"), COST_MARKER)
    text = splice(text, args.transfer.read_text(encoding="utf-8"), TRANSFER_MARKER)
    readme.write_text(text, encoding="utf-8")
    print(f"README.md: fidelity summary from {args.summary}, cost rows from {args.cost}, transfer from "
          f"{args.transfer}")


if __name__ == "__main__":
    main()
