"""``python -m otcache_engine ...`` (see cli.py)."""
from .cli import main

raise SystemExit(main())
