#!/usr/bin/env bash
# Quality and evaluation runs on a lent GPU machine (issues 4, 5 and 6), in parts that each fit one
# device call. Stage first (here):
#   scripts/device-stage.sh BUILD bin/compactor tests/test_cuda_dequant tests/test_cuda_eval tests/test_cuda_qgemm ...
# On the device, after unpacking carry/*.tar.xz into $D (see run_device_bench.sh):
#   bash bench/run_device_quality.sh tests   GPU tests of the quantized and evaluation paths
#   bash bench/run_device_quality.sh tasks   every multiple-choice task, full sets, on the GPU: the model,
#                                            then its GPTQ w4g128 version paired against it (--base)
#   bash bench/run_device_quality.sh ptq     bench/ptq_quality.sh table (calibration on the device's CPU
#                                            cores unless QUANT_DEVICE=cuda, perplexity on the GPU)
# MODEL (default $D/shared/models/fixture-llama-sp) picks the model. Results go under $OUT.
set -uo pipefail
D=${D:-/tmp/d}
export LD_LIBRARY_PATH=$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export COMPACTOR_SHARED_DIR=${COMPACTOR_SHARED_DIR:-$D/shared} COMPACTOR_BINARY=${COMPACTOR_BINARY:-$D/bin/compactor}
export COMPACTOR_SHARED=${COMPACTOR_SHARED:-$D/shared}
OUT=${OUT:-bench/results}
MODEL=${MODEL:-$D/shared/models/fixture-llama-sp}
B=$D/bin/compactor
name=$(basename "$MODEL")
tasks=arc_challenge,arc_easy,hellaswag,boolq,mmlu,truthfulqa_mc1,truthfulqa_mc2
mkdir -p "$OUT"

run() {  # run LABEL CMD...: stdout+stderr to $OUT/LABEL.out, rc and seconds to stdout
  local label=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$label.out" 2>&1
  local rc=$?
  printf '%-36s rc=%-3s %5ss\n' "$label" "$rc" "$((SECONDS - t0))"
  tail -n 4 "$OUT/$label.out" | sed 's/^/    /'
}

case ${1:?usage: run_device_quality.sh tests|tasks|ptq} in
  tests)
    for t in test_cuda_dequant test_cuda_eval test_cuda_qgemm test_cuda_gptq; do
      [[ -x $D/bin/$t ]] && run "$t" timeout 300 "$D/bin/$t" --gtest_filter='-*bpe*'
    done ;;
  tasks)
    run "tasks-$name-cuda" timeout 300 "$B" eval "$MODEL" --tasks "$tasks" --device cuda --data-dir "$D/shared/data" \
      --json --no-record --record-dir "$OUT"
    q=$(mktemp -d)/gptq-w4g128
    run "quantize-$name-gptq-w4g128" timeout 120 "$B" quantize "$MODEL" "$q" --method gptq --bits 4 --group 128 \
      --calib c4 --calib-samples 128 --calib-seqlen 512 --no-record --json
    run "tasks-$name-gptq-w4g128-cuda" timeout 300 "$B" eval "$q" --base "$MODEL" --tasks "$tasks" --device cuda \
      --data-dir "$D/shared/data" --json --no-record --record-dir "$OUT"
    rm -rf "$(dirname "$q")" ;;
  ptq)
    EVAL_DEVICE=cuda QUANT_DEVICE=${QUANT_DEVICE:-cpu} BIN=$B run "ptq-quality-$name" timeout 540 \
      bench/ptq_quality.sh "$MODEL" "$OUT/ptq-$name" ${PTQ_VARIANTS:-}
    cat "$OUT/ptq-$name/table.md" ;;
esac
