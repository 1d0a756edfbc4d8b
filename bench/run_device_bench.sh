#!/usr/bin/env bash
# The CUDA backend's GPU tests and the end-to-end benchmark on a lent GPU machine, in one call.
# Stage first (here): cmake --build build-cperf -j2 --target compactor_cli test_cuda_ops test_cuda_model &&
#   scripts/device-stage.sh build-cperf bin/compactor tests/test_cuda_ops tests/test_cuda_model tests/test_bench_plan
# On the device (carry/ travels with the tree):
#   D=/tmp/d; mkdir -p $D; for f in carry/*.tar.xz; do tar -xJf $f -C $D; done
#   bash bench/run_device_bench.sh            (results under $OUT, default bench/results/)
# Runs: test_cuda_ops, test_cuda_model, `compactor bench --synthetic llama2-7b` (issue points:
# TTFT 512/2048, decode batch 1/8/32 at prompt 512 + 128 generated), the same decode without CUDA
# graphs at batch 1, the bad-input cases, and prints a short table last. QUICK=1 keeps the tests,
# the main benchmark and the bad-input cases.
set -uo pipefail
source "$(dirname "$0")/device_run_common.sh" device-run.log
step test_cuda_ops timeout 300 "$D/bin/test_cuda_ops"
step test_cuda_model timeout 300 "$D/bin/test_cuda_model" --gtest_filter='-*bpe*'
[[ -x $D/bin/test_bench_plan ]] && step test_bench_plan timeout 60 "$D/bin/test_bench_plan"
grep -E "rel err|FAILED|Failure|error" "$log" | grep -vE "rel err [0-9.e-]+ \(tol" | head -40

json=$OUT/$machine-llama2-7b.json
step bench_llama2_7b timeout 400 "$B" bench --synthetic llama2-7b --device cuda --no-record --breakdown --out "$json"
if [[ -z ${QUICK:-} ]]; then  # QUICK=1: skip the side-by-side runs whose answers are recorded in NOTES.md
step bench_llama2_7b_nographs timeout 200 "$B" bench --synthetic llama2-7b --device cuda --no-record --graphs off \
  --batch 1 --ttft-prompts 512 --repeats 3 --out "$OUT/$machine-llama2-7b-nographs.json"
step bench_llama2_7b_nofuse timeout 200 "$B" bench --synthetic llama2-7b --device cuda --no-record --fuse off \
  --batch 1,32 --ttft-prompts 512 --repeats 3 --out "$OUT/$machine-llama2-7b-nofuse.json"
fi
if [[ -z ${QUICK:-} ]]; then
step bench_llama2_7b_cublas timeout 200 "$B" bench --synthetic llama2-7b --device cuda --no-record --gemv cublas \
  --batch 1 --ttft-prompts 2048 --repeats 3 --attention cuda-cores --out "$OUT/$machine-llama2-7b-cublas-cudacores.json"
step bench_llama3_8b timeout 200 "$B" bench --synthetic llama3-8b --device cuda --no-record --batch 1,32 \
  --ttft-prompts 2048 --repeats 3 --out "$OUT/$machine-llama3-8b.json"
fi

# Bad input: each must fail with a clear message (rc 1), never crash or hang.
bad() {
  local name=$1; shift
  echo "=== bad input $name: $*" >> "$log"
  timeout 120 "$@" >> "$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-34s rc=%-3s (want 1)' "bad:$name" "$rc")")
}
bad too_much_memory "$B" bench --synthetic llama2-13b --device cuda --no-record --batch 512 --prompt 4000 --gen 8
bad f32_dtype "$B" bench --synthetic llama2-7b --device cuda --no-record --dtype f32
bad cpu_synthetic "$B" bench --synthetic llama2-7b --device cpu --no-record
bad no_gpu env CUDA_VISIBLE_DEVICES= "$B" bench --synthetic llama2-7b --device cuda --no-record
grep -A2 "=== bad input" "$log" | grep -E "error" | head -8

echo
echo "---- results ($machine; full log: $log) ----"
for s in "${summary[@]}"; do echo "$s"; done
grep -E "^-- one layer|^  layer " "$OUT/bench_llama2_7b.out" 2>/dev/null
for f in "$OUT"/bench_*.out; do [[ -f $f ]] && { echo "-- $(basename "$f" .out)"; grep -vE "^  [a-z/+ ()]{20} " "$f" | tail -n 12; }; done
