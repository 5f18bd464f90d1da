#!/usr/bin/env bash
# Create (or reuse) a virtualenv with everything the demo and the tests need.
# Usage: scripts/ensure_env.sh VENV_DIR [COMFYUI_DIR] [TORCH_FLAVOUR]
#   TORCH_FLAVOUR: "2.14" (default: torch 2.14.1 + torchvision 0.29.1)
#                  "2.9"  (torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9, needed by ComfyUI >= 0.33)
# torch is always installed first and pinned so that no later install can pull another one.
set -euo pipefail
venv=${1:?venv dir}
comfy=${2:-}
flavour=${3:-2.14}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip_() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"; }

case "$flavour" in
  2.14) torch_pins=("torch==2.14.1" "torchvision==0.29.1") ;;
  2.9)  torch_pins=("torch==2.9.1" "torchvision==0.24.1") ;;
  *) echo "unknown torch flavour $flavour" >&2; exit 2 ;;
esac
pins="$venv/torch-pins.txt"
printf '%s\n' "${torch_pins[@]}" > "$pins"
if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[env] installing ${torch_pins[*]} into $venv"
  pip_ "${torch_pins[@]}"
fi
if [ "$flavour" = 2.9 ] && ! "$venv/bin/python" -c "import torchaudio" 2>/dev/null; then
  pip_ -c "$pins" "torch==2.9.1" "torchaudio==2.9.*"
  echo "torchaudio==2.9.*" >> "$pins"
fi

stamp="$venv/.otcache-deps"
want=$(cat "$here/requirements.txt" "$here/requirements-dev.txt" 2>/dev/null | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[env] installing the pack's requirements"
  pip_ -c "$pins" -r "$here/requirements.txt" -r "$here/requirements-dev.txt"
  echo "$want" > "$stamp"
fi

if [ -n "$comfy" ] && [ -f "$comfy/requirements.txt" ]; then
  cstamp="$venv/.comfy-deps"
  cwant=$(sha1sum "$comfy/requirements.txt" | cut -c1-12)
  if [ ! -f "$cstamp" ] || [ "$(cat "$cstamp")" != "$cwant" ]; then
    echo "[env] installing ComfyUI's requirements from $comfy"
    grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~])' "$comfy/requirements.txt" > "$venv/comfy-req.txt"
    echo requests >> "$venv/comfy-req.txt"
    pip_ -c "$pins" -r "$venv/comfy-req.txt"
    echo "$cwant" > "$cstamp"
  fi
fi
echo "[env] ready: $venv"
