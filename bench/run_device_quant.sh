#!/usr/bin/env bash
# The quantized-weight GPU kernels (qgemv.cuh) on a lent GPU machine, in one call: their GPU tests,
# the kernel benchmark (bench_qgemm, JSON) and the end-to-end quantized-vs-dense decode benchmarks.
# Stage first (here):
#   cmake --build BUILD -j2 --target compactor_cli bench_qgemm test_cuda_qgemm test_cuda_nf4 \
#     test_cuda_dequant test_cuda_synthetic_quant test_cuda_model test_cuda_ops
#   scripts/device-stage.sh BUILD bin/compactor bench/bench_qgemm tests/test_cuda_qgemm tests/test_cuda_nf4 \
#     tests/test_cuda_dequant tests/test_cuda_synthetic_quant tests/test_cuda_model tests/test_cuda_ops
# On the device (carry/ travels with the tree):
#   D=/tmp/d; mkdir -p $D; for f in carry/*.tar.xz; do tar -xJf $f -C $D; done
#   bash bench/run_device_quant.sh            (results under $OUT, default bench/results/)
# QUICK=1: tests, bench_qgemm on w4g128/w8/nf4 only, and the w4g128 end-to-end run.
set -uo pipefail
source "$(dirname "$0")/device_run_common.sh" quant-run.log
for t in test_cuda_qgemm test_cuda_nf4 test_cuda_dequant test_cuda_synthetic_quant test_cuda_ops; do
  [[ -x $D/bin/$t ]] && step "$t" timeout 300 "$D/bin/$t"
done
[[ -x $D/bin/test_cuda_model ]] && step test_cuda_model timeout 300 "$D/bin/test_cuda_model" --gtest_filter='-*bpe*'
grep -E "FAILED|Failure" "$log" | head -20

formats=${FORMATS:-w4g128,w4g32,w4,w8,w3g128,w2g64,nf4}
[[ -n ${QUICK:-} ]] && formats=w4g128,w8,nf4
step bench_qgemm timeout 500 "$D/bin/bench_qgemm" --formats "$formats" --m 1,2,4,8,16,32,64,128 --quick \
  --json "$OUT/$machine-qgemm.json"
cp "$OUT/bench_qgemm.out" "$OUT/$machine-qgemm.txt"
# The per-lane tensor-core kernel at M <= 8 (what the streaming kernel replaced), same binary.
step bench_qgemm_stream_off timeout 200 "$D/bin/bench_qgemm" --formats "$formats" --m 1,8 --quick --stream-weights off
cp "$OUT/bench_qgemm_stream_off.out" "$OUT/$machine-qgemm-stream-off.txt"

e2e() {  # e2e NAME ARGS...: quantized vs dense decode on synthetic Llama-2-7B
  local name=$1; shift
  step "e2e_$name" timeout 300 "$B" bench --synthetic llama2-7b --device cuda --no-record --compare-dense \
    --repeats 3 --out "$OUT/$machine-llama2-7b-$name-vs-dense.json" "$@"
}
e2e w4g128 --quant w4g128 --batch 1,16 --ttft-prompts 512,2048
if [[ -z ${QUICK:-} ]]; then
  e2e w4g128-lmhead --quant w4g128 --quant-lm-head --batch 1,16 --ttft-prompts 512
  e2e w8 --quant w8 --batch 1,16 --ttft-prompts 512
  e2e nf4 --quant nf4 --batch 1,16 --ttft-prompts 512
  # What the programmatic dependent launches and the streaming GEMV buy (same binary, --pdl off,
  # --stream-weights off), and int8 on the
  # CUDA-core kernel (faster at batch 1, much slower at 16: bench_qgemm's w8 rows).
  e2e w4g128-pdl-off --quant w4g128 --batch 1,16 --ttft-prompts 512 --pdl off
  e2e w4g128-stream-off --quant w4g128 --batch 1,16 --ttft-prompts 512 --stream-weights off
  e2e w8-cuda-cores --quant w8 --quant-kernel cuda-cores --batch 1,16 --ttft-prompts 512
fi

echo
echo "---- results ($machine; full log: $log) ----"
for s in "${summary[@]}"; do echo "$s"; done
grep -E "linears per token" "$OUT/bench_qgemm.out"
for f in "$OUT"/e2e_*.out; do [[ -f $f ]] && { echo "-- $(basename "$f" .out)"; grep -E "TTFT|^ +[0-9]+ +[0-9]|speedup|x$" "$f" | tail -n 12; }; done
