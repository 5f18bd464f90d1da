#!/usr/bin/env bash
# Run the host tests (tests/host) once per real ComfyUI available on this machine, each with its own venv.
#   host 1: the ComfyUI tests/host/comfy_host.py finds (COMFYUI_PATH, else the ComfyUI/custom_nodes/ this
#           pack sits in, else ~/comfy/ComfyUI), venv ${OTCACHE_VENV:-.venv} (torch 2.14.1)
#   host 2: ${COMFYUI_033_PATH:-~/comfy/ComfyUI-0.33}, venv $OTCACHE_VENV_033 if set, else .venv-comfy033
#           made/reused by scripts/ensure_env.sh (torch 2.9.1 + torchaudio, which ComfyUI >= 0.33 imports)
# Extra arguments go to pytest (test paths among them replace tests/host). Prints the host of each run; exits non-zero when any run fails.
set -uo pipefail
cd "$(dirname "$0")/.."

venv1=${OTCACHE_VENV:-.venv}
host2=${COMFYUI_033_PATH:-$HOME/comfy/ComfyUI-0.33}
failed=()
ran=0

locate() {  # venv -> path of the ComfyUI the harness would use ("" when none)
  "$1/bin/python" -c 'import sys; sys.path.insert(0, "tests/host"); import comfy_host
loc = comfy_host.find_comfyui(); print(loc.path or "")'
}

run_host() {  # label venv comfy_path [pytest args]
  local label=$1 venv=$2 comfy=$3; shift 3
  echo "== host tests [$label]: ComfyUI at $comfy, python $venv/bin/python"
  local targets=(tests/host) a
  for a in "$@"; do [[ $a != -* ]] && targets=(); done  # explicit test paths replace tests/host
  COMFYUI_PATH="$comfy" "$venv/bin/python" -m pytest "${targets[@]}" -q -p no:cacheprovider "$@"
  local rc=$?
  ran=$((ran + 1))
  if [ $rc -ne 0 ]; then
    echo "== host tests [$label] FAILED (pytest exit $rc)"
    failed+=("$label")
  fi
}

if [ ! -x "$venv1/bin/python" ]; then
  scripts/ensure_env.sh "$venv1" "" 2.14 || { echo "cannot prepare $venv1"; exit 1; }
fi
host1=$(locate "$venv1")
if [ -n "$host1" ]; then
  run_host "$(basename "$host1")" "$venv1" "$host1" "$@"
else
  echo "== no first ComfyUI found (set COMFYUI_PATH): its host tests are not run"
fi

if [ -d "$host2/comfy" ] && [ "$(cd "$host2" && pwd -P)" != "$(cd "${host1:-/nonexistent}" 2>/dev/null && pwd -P)" ]; then
  if [ -n "${OTCACHE_VENV_033:-}" ]; then
    venv2=$OTCACHE_VENV_033
  else
    venv2=.venv-comfy033
    scripts/ensure_env.sh "$venv2" "$host2" 2.9 || { echo "cannot prepare $venv2"; failed+=("env-$venv2"); }
  fi
  if [ -x "$venv2/bin/python" ]; then
    run_host "$(basename "$host2")" "$venv2" "$host2" "$@"
  fi
else
  echo "== no second ComfyUI at $host2: its host tests are not run"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "HOST TESTS FAILED on: ${failed[*]}"
  exit 1
fi
if [ $ran -eq 0 ]; then
  echo "NO HOST FOUND: nothing ran"
  exit 1
fi
echo "HOST TESTS PASSED on $ran host(s)"
