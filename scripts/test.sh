#!/usr/bin/env bash
# Every test: the engine, then the host tests against each real ComfyUI found on this machine.
#   ComfyUI v0.3.64-style host: $COMFYUI_PATH, else the ComfyUI/custom_nodes/ folder this pack sits in,
#                               else ~/comfy/ComfyUI
#   ComfyUI v0.33-style host:   $COMFYUI_033_PATH, else ~/comfy/ComfyUI-0.33 (own venv with torch 2.9.1)
# Hosts that are absent are skipped with a message. Exits non-zero when any test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

find_comfy() {
  if [ -n "${COMFYUI_PATH:-}" ]; then echo "$COMFYUI_PATH"; return; fi
  local parent; parent=$(dirname "$root")
  if [ "$(basename "$parent")" = custom_nodes ] && [ -d "$(dirname "$parent")/comfy" ]; then dirname "$parent"; return; fi
  [ -d "$HOME/comfy/ComfyUI/comfy" ] && echo "$HOME/comfy/ComfyUI"
}

status=0
run_pytest() {  # venv, then pytest args
  local venv=$1; shift
  "$venv/bin/python" -m pytest "$@"
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
}

comfy=$(find_comfy || true)
scripts/ensure_env.sh .venv "$comfy" 2.14 || exit 1
if [ -n "$comfy" ]; then
  echo "== engine + host tests, ComfyUI at $comfy"
  COMFYUI_PATH="$comfy" run_pytest .venv tests -q -p no:cacheprovider
else
  echo "== engine tests (no ComfyUI found: host tests skip; set COMFYUI_PATH to run them)"
  run_pytest .venv tests -q -p no:cacheprovider
fi

comfy2=${COMFYUI_033_PATH:-$HOME/comfy/ComfyUI-0.33}
if [ -d "$comfy2/comfy" ] && [ "$comfy2" != "$comfy" ]; then
  echo "== host tests, second ComfyUI at $comfy2"
  venv2=${OTCACHE_VENV_033:-.venv-comfy033}
  if scripts/ensure_env.sh "$venv2" "$comfy2" 2.9; then
    COMFYUI_PATH="$comfy2" run_pytest "$venv2" tests/host -q -p no:cacheprovider
  else
    echo "could not prepare the environment for $comfy2"; status=1
  fi
else
  echo "== no second ComfyUI at $comfy2: its host tests are not run"
fi

if [ -x scripts/browser_tests.sh ]; then
  scripts/browser_tests.sh || status=1
fi
[ $status -eq 0 ] && echo "ALL TEST RUNS PASSED" || echo "SOME TEST RUN FAILED"
exit $status
