"""Browser tests: the host harness (tests/host) and the workflow generator (scripts/) on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT / "tests" / "host", ROOT / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
