"""What a first-time reader clicks: every relative link and image of README.md and docs/ resolves, and the
README's first screen names the folder the demo writes to (the folder the demo really writes to)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Written by `python -m benchmarks.fidelity.bench` (docs/benchmarks.md); the README links them before the first run.
NOT_YET_GENERATED = ("docs/results/fidelity/",)


def relative_links(doc: Path) -> list[str]:
    found = [m.group(1).split("#")[0] for m in LINK.finditer(doc.read_text(encoding="utf-8"))]
    return [t for t in found if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    broken = [t for t in relative_links(doc) if not (doc.parent / t).exists()
              and not str((doc.parent / t).resolve().relative_to(ROOT)).startswith(NOT_YET_GENERATED)]
    assert broken == []


def test_the_bundled_samples_picture_is_linked_where_it_is():
    links = [(doc, t) for doc in DOCS for t in relative_links(doc) if t.endswith("samples.png")]
    assert links and all((doc.parent / t).resolve() == ROOT / "benchmarks/toy/weights/samples.png"
                         for doc, t in links)


def test_the_first_screen_says_where_the_demo_writes():
    from benchmarks.toy import commands

    parser = argparse.ArgumentParser()
    commands._demo_add_arguments(parser)
    default = parser.parse_args([]).out
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert f"`{default.as_posix()}/`" in first_screen
    assert 'cd "$(dirname "$0")/.."' in (ROOT / "scripts" / "demo.sh").read_text()   # relative to the repository
