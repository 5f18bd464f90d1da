#!/usr/bin/env bash
# Create (or reuse) a virtualenv with everything the demo and the tests need. Before installing anything it
# says how many steps there are, and each step says what it installs and how large that is (on disk, as
# measured on Linux x86_64); pip then shows every download with its size.
# Usage: scripts/ensure_env.sh [--dry-run] VENV_DIR [COMFYUI_DIR] [TORCH_FLAVOUR]
#   --dry-run:     list the steps that are due, install nothing
#   TORCH_FLAVOUR: "2.14" (default: torch 2.14.1 + torchvision 0.29.1)
#                  "2.9"  (torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9, needed by ComfyUI >= 0.33)
# torch is always installed first and pinned so that no later install can pull another one.
set -euo pipefail
dry=0
if [ "${1:-}" = --dry-run ]; then dry=1; shift; fi
venv=${1:?venv dir}
comfy=${2:-}
flavour=${3:-2.14}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}

case "$flavour" in
  2.14) torch_pins=("torch==2.14.1" "torchvision==0.29.1"); imports="torch, torchvision"
        torch_what="torch 2.14.1 + torchvision 0.29.1 with their CUDA libraries (about 5.5 GB on disk)" ;;
  2.9)  torch_pins=("torch==2.9.1" "torchvision==0.24.1" "torchaudio==2.9.*")
        imports="torch, torchvision, torchaudio"
        torch_what="torch 2.9.1 + torchvision 0.24.1 + torchaudio 2.9 with their CUDA libraries (about 7 GB on disk)" ;;
  *) echo "unknown torch flavour $flavour" >&2; exit 2 ;;
esac
reqs_what="the pack's requirements: numpy, scipy, optuna, lpips, pytest, matplotlib, pot, ... (about 0.5 GB on disk)"
comfy_what="ComfyUI's requirements from $comfy: transformers, av, its frontend, ..."
comfy_what+=" (about 0.5 GB on disk for v0.3.64, 1.2 GB for v0.33)"
pins="$venv/torch-pins.txt"
stamp="$venv/.otcache-deps"
want=$(cat "$here/requirements.txt" "$here/requirements-dev.txt" 2>/dev/null | sha1sum | cut -c1-12)
cstamp="$venv/.comfy-deps"
cwant=""
[ -n "$comfy" ] && [ -f "$comfy/requirements.txt" ] && cwant=$(sha1sum "$comfy/requirements.txt" | cut -c1-12)

has() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $1" 2>/dev/null; }
stale() { [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; }

# What is due, decided before anything is installed, so that every step can say "i of n".
steps=() ; what=()
due() { steps+=("$1"); what+=("$2"); }
[ -x "$venv/bin/python" ] || due venv "a virtualenv at $venv ($("$py" --version 2>&1), a few MB)"
if ! has "$imports"; then
  if [ "$flavour" = 2.9 ] && has "torch, torchvision"; then torch_what="torchaudio 2.9 (about 12 MB)"; fi
  due torch "$torch_what"
fi
stale "$stamp" "$want" && due reqs "$reqs_what"
[ -n "$cwant" ] && stale "$cstamp" "$cwant" && due comfy "$comfy_what"

if [ ${#steps[@]} -eq 0 ]; then echo "[env] ready: $venv (nothing to install)"; exit 0; fi
echo "[env] $venv: ${#steps[@]} step(s) to do; pip shows each download and its size"

pip_() { "$venv/bin/python" -m pip install --disable-pip-version-check "$@"; }
run_venv() { "$py" -m venv "$venv"; }
run_torch() { pip_ "${torch_pins[@]}"; }
run_reqs() { pip_ -c "$pins" -r "$here/requirements.txt" -r "$here/requirements-dev.txt"; echo "$want" > "$stamp"; }
run_comfy() {
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=!~])' "$comfy/requirements.txt" > "$venv/comfy-req.txt"
  echo requests >> "$venv/comfy-req.txt"
  pip_ -c "$pins" -r "$venv/comfy-req.txt"
  echo "$cwant" > "$cstamp"
}

for i in "${!steps[@]}"; do
  echo "[env] step $((i + 1))/${#steps[@]}: ${what[$i]}"
  if [ $dry -eq 0 ]; then
    [ "${steps[$i]}" = venv ] || printf '%s\n' "${torch_pins[@]}" > "$pins"   # before any pip install
    "run_${steps[$i]}"
  fi
done
if [ $dry -eq 1 ]; then echo "[env] dry run: nothing was installed into $venv"; else echo "[env] ready: $venv"; fi
