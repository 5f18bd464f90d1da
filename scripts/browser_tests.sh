#!/usr/bin/env bash
# Browser tests (tests/browser): the schedule plot and the example workflows in the real ComfyUI frontend,
# once per host ComfyUI, driven by playwright-core in Debian's chromium (never a downloaded browser).
#   - installs chromium (apt, when root and missing) and playwright-core (npm ci from the lock file) if it can;
#   - host 1: the ComfyUI tests/host/comfy_host.py finds, venv ${OTCACHE_VENV:-.venv};
#     host 2: ${COMFYUI_033_PATH:-~/comfy/ComfyUI-0.33}, venv $OTCACHE_VENV_033 or .venv-comfy033;
#   - the first host's screenshot becomes docs/images/plot.png (the README picture).
# Without chromium, node or a ComfyUI the tests skip with the reason. Exits non-zero when a run fails.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[browser] installing chromium (Debian package)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "[browser] could not install chromium: the browser tests will skip"
fi
if command -v npm >/dev/null 2>&1 && [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  echo "[browser] installing playwright-core from tests/browser/package-lock.json"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || echo "[browser] could not install playwright-core: the browser tests will skip"
fi

export OTCACHE_BROWSER=1
venv1=${OTCACHE_VENV:-.venv}
host2=${COMFYUI_033_PATH:-$HOME/comfy/ComfyUI-0.33}
status=0

run() {  # label venv comfy screenshot
  echo "== browser tests [$1]: ComfyUI at $3, python $2/bin/python"
  COMFYUI_PATH="$3" OTCACHE_SCREENSHOT="$4" "$2/bin/python" -m pytest tests/browser -q -p no:cacheprovider
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then echo "== browser tests [$1] FAILED (pytest exit $rc)"; status=1; fi
}

host1=""
if [ -x "$venv1/bin/python" ]; then
  host1=$("$venv1/bin/python" -c 'import sys; sys.path.insert(0, "tests/host"); import comfy_host
print(comfy_host.find_comfyui().path or "")')
fi
if [ -n "$host1" ]; then
  run "$(basename "$host1")" "$venv1" "$host1" "docs/images/plot.png"
else
  echo "== browser tests: no first ComfyUI found (set COMFYUI_PATH) or no $venv1: not run"
fi

if [ -d "$host2/comfy" ] && [ "$(cd "$host2" && pwd -P)" != "$(cd "${host1:-/nonexistent}" 2>/dev/null && pwd -P)" ]; then
  venv2=${OTCACHE_VENV_033:-.venv-comfy033}
  if [ ! -x "$venv2/bin/python" ]; then
    scripts/ensure_env.sh "$venv2" "$host2" 2.9 || { echo "cannot prepare $venv2"; status=1; }
  fi
  [ -x "$venv2/bin/python" ] && run "$(basename "$host2")" "$venv2" "$host2" ""
else
  echo "== browser tests: no second ComfyUI at $host2: not run"
fi
exit $status
