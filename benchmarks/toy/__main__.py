"""``python -m benchmarks.toy {demo, bench}`` (see commands.py)."""
from .commands import main

raise SystemExit(main())
