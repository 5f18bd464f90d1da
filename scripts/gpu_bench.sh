#!/usr/bin/env bash
# Real-size speed of OTCache on a GPU: FLUX.1-dev and Wan 2.1 14B (ComfyUI's own classes, seeded bf16 weights)
# sampled unpatched and through OTCache at N/K = 2, 3, 4, 5 for every reuse operator, with peak VRAM; the
# table goes to docs/results/runtime/gpu_real_size.txt, naming the card. Run from the repository root:
#
#   COMFYUI_PATH=/path/to/ComfyUI scripts/gpu_bench.sh
#
# - Python: $OTCACHE_VENV, else ./.venv, else python3 on the PATH: the first that imports torch is used and
#   nothing is installed; only when none does, scripts/ensure_env.sh makes ./.venv (torch, the pack's and
#   ComfyUI's requirements).
# - ComfyUI: COMFYUI_PATH (else the checkout tests/host/comfy_host.py finds).
# - Each model runs in its own process under a time limit; the results file is rewritten after every round,
#   so a model stopped by its limit keeps its complete rounds (and the file says it was stopped).
# Settings (environment): MODELS ("flux_dev wan21_14b"), STEPS (20), FLUX_REPEATS (3), WAN_REPEATS (2),
#   FLUX_LIMIT (1800 s), WAN_LIMIT (6000 s), EXTRA (more bench_runtime.py arguments, e.g.
#   "--speedups 2 4 --operators output omni1-res" for a short run), OUT_FILE.
# Expected on one H100 (estimated, not measured): FLUX.1-dev ~0.5 s/step, about 2 min a round; Wan 2.1 14B
# at 32760 tokens ~8 s/step, about 30 min a round. Each round's estimate is printed after the warm-up.
set -uo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-"flux_dev wan21_14b"}
STEPS=${STEPS:-20}
OUT_FILE=${OUT_FILE:-docs/results/runtime/gpu_real_size.txt}
EXTRA=${EXTRA:-}

has_torch() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c "import torch" >/dev/null 2>&1; }
py=""
for cand in "${OTCACHE_VENV:+$OTCACHE_VENV/bin/python}" .venv/bin/python "$(command -v python3 || true)"; do
  if has_torch "$cand"; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "[gpu-bench] no Python with torch found: creating .venv with scripts/ensure_env.sh"
  scripts/ensure_env.sh .venv "${COMFYUI_PATH:-}" || { echo "[gpu-bench] could not create .venv"; exit 1; }
  py=.venv/bin/python
fi
echo "[gpu-bench] python: $py ($("$py" -c 'import torch; print("torch", torch.__version__)'))"

card=$("$py" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)
if [ -z "$card" ]; then
  echo "[gpu-bench] no CUDA device: torch in $py sees no GPU; run this on a machine with an NVIDIA GPU"
  exit 2
fi
echo "[gpu-bench] card: $card"

# Preflight on the meta device: ComfyUI and the pack import, the models build (nothing allocated).
if ! "$py" benchmarks/bench_runtime.py --dry-run --size real --models $MODELS; then
  echo "[gpu-bench] ComfyUI or the pack cannot be imported with $py (see above): install ComfyUI's requirements"
  echo "            (scripts/ensure_env.sh VENV \$COMFYUI_PATH) or set COMFYUI_PATH, then run this again"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for model in $MODELS; do
  case "$model" in
    flux_dev) repeats=${FLUX_REPEATS:-3}; limit=${FLUX_LIMIT:-1800} ;;
    wan21_14b) repeats=${WAN_REPEATS:-2}; limit=${WAN_LIMIT:-6000} ;;
    *) echo "[gpu-bench] unknown model $model"; exit 2 ;;
  esac
  echo "[gpu-bench] $model: N=$STEPS, $repeats rounds, time limit $limit s"
  PYTHONUNBUFFERED=1 timeout --kill-after=60 "$limit" "$py" benchmarks/bench_runtime.py --device cuda --size real \
    --models "$model" --steps "$STEPS" --repeats "$repeats" --out "$work/$model.txt" $EXTRA 2>&1 \
    | tee "$work/$model.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) note="" ;;
    124|137) note="$model: stopped by its time limit of $limit s; the table above holds the rounds it completed."
             status=1 ;;
    *) note="$model: the run failed (exit code $rc); its last lines: $(tail -n 3 "$work/$model.log" | tr '\n' ' ')"
       status=1 ;;
  esac
  [ -n "$note" ] && echo "$note" >"$work/$model.note"
done

legend='^N/K: the speed-up asked for'
mkdir -p "$(dirname "$OUT_FILE")"
{
  echo "OTCache real-size speed on $card (torch.cuda.get_device_name)"
  command -v nvidia-smi >/dev/null 2>&1 \
    && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/nvidia-smi: /'
  echo "scripts/gpu_bench.sh: MODELS=\"$MODELS\" STEPS=$STEPS EXTRA=\"$EXTRA\", $(date -u +%Y-%m-%dT%H:%MZ)"
  for model in $MODELS; do
    echo
    if [ -s "$work/$model.txt" ]; then sed "\|$legend|,\$d" "$work/$model.txt"
    else echo "$model: no table (see the note)"; fi
    [ -f "$work/$model.note" ] && cat "$work/$model.note"
  done
  last=$(ls "$work"/*.txt 2>/dev/null | tail -n 1)
  [ -n "$last" ] && { echo; sed -n "\|$legend|,\$p" "$last"; }
} >"$OUT_FILE"
echo "[gpu-bench] table written to $OUT_FILE"
exit $status
