#!/usr/bin/env bash
# The main job: the whole OTCache method on the bundled model (calibration, reference, anchor search,
# OT interpolation, cached sampling). Creates ./.venv on first use. Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_env.sh .venv "" 2.14
exec .venv/bin/python -m benchmarks.toy demo "$@"
