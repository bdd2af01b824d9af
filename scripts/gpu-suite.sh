#!/usr/bin/env bash
# The one-call GPU suite, run on the GPU machine from the packed folder (scripts/gpu-pack.sh):
#   bash .gpu/gpu-suite.sh [OUT_DIR]      (or GPU_OUT=...; default ./gpu-out, or $OUT when set)
# 1. facts: GPU, driver, whether the Rust binaries run here;
# 2. every test binary with the device present;
# 3. compute-sanitizer memcheck, racecheck, synccheck on small naive and flash runs (ragged, causal, GQA);
# 4. PyTorch SDPA per backend (benches/torch_sdpa.py), then attn bench on the same sweep, compared;
#    with a packed baseline (gpu-pack.sh --baseline REF), its flash kernel on the same sweep too;
# and a short summary table, printed last. Budget: under 8 minutes on one H100.
# The layout probe test writes the real fragment layouts to $GPU_OUT (commit them as a golden file).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${GPU_OUT:-${OUT:-./gpu-out}}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export ATTN_BIN="$here/attn"
export GPU_OUT="$out"
summary="$out/summary.md"
echo "| step | result | seconds |" > "$summary"
echo "|---|---|---|" >> "$summary"

step() { # step NAME TIMEOUT COMMAND...: runs with a timeout, logs to $out/NAME.log, adds a summary row
  local name="$1" limit="$2"; shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  [ $rc -ne 0 ] && verdict="FAILED (rc $rc)"
  [ $rc -eq 124 ] && verdict="TIMEOUT after ${limit}s"
  echo "| $name | $verdict | $(( $(date +%s) - start )) |" >> "$summary"
  return 0
}

{
  echo "commit: $(cat "$here/COMMIT" 2>/dev/null | tr '\n' ' ')"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  "$ATTN_BIN" info 2>&1
} > "$out/facts.log"

for test in "$here"/tests/*; do
  step "test-$(basename "$test")" 240 "$test" --test-threads 1
done

small_case=(--dtype bf16 --batch 1 --seq-q 167 --seq-k 145 --heads 4 --heads-kv 2 --head-dim 40 --causal)
if command -v compute-sanitizer > /dev/null; then
  for kernel in naive flash; do
    for tool in memcheck racecheck synccheck; do
      step "sanitizer-$kernel-$tool" 120 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$ATTN_BIN" check --kernel "$kernel" "${small_case[@]}"
    done
  done
else
  echo "| sanitizer | compute-sanitizer not found | 0 |" >> "$summary"
fi

if python3 -c "import torch" 2>/dev/null; then
  step torch-sdpa 150 python3 "$here/torch_sdpa.py" --out "$out/torch.json"
  step bench 240 "$ATTN_BIN" bench --out "$out/bench" --compare "$out/torch.json"
else
  echo "| torch-sdpa | PyTorch not importable | 0 |" >> "$summary"
  step bench 240 "$ATTN_BIN" bench --out "$out/bench"
fi

if [ -x "$here/baseline/attn" ]; then
  echo "baseline: $(cat "$here/baseline/COMMIT")" >> "$out/facts.log"
  step bench-baseline 150 "$here/baseline/attn" bench --kernels flash --out "$out/bench-baseline"
fi

echo
cat "$out/facts.log"
echo
tail -n 60 "$out/bench.log"
echo
cat "$summary"
