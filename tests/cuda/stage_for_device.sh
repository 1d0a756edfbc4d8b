#!/usr/bin/env bash
# Stages the GPU tests for a machine that has the CUDA driver and toolkit but none of the Debian
# libraries this tree links (the lent device machines): copies test_cuda_ops, test_cuda_model,
# the non-CUDA, non-libc shared libraries they need, and the fixtures named as arguments
# (default: stories260K; the two larger fixtures are ~50-60 MB each) into build-cuda/device/.
# Carry `build-cuda/device` and run there:
#   export LD_LIBRARY_PATH=build-cuda/device COMPACTOR_SHARED_DIR=build-cuda/device/shared
#   build-cuda/device/test_cuda_ops && build-cuda/device/test_cuda_model --gtest_filter='*stories260K*'
# Build first: cmake -S . -B build-cuda -DCOMPACTOR_CUDA=ON &&
#              cmake --build build-cuda -j2 --target test_cuda_ops test_cuda_model
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build-cuda/device
shared=${COMPACTOR_SHARED_DIR:-../shared}
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(stories260K)
rm -rf "$out" && mkdir -p "$out"
for t in test_cuda_ops test_cuda_model; do
  bin=build-cuda/tests/$t
  [[ -x $bin ]] || { echo "stage_for_device: $bin is missing; build the $t target first" >&2; exit 1; }
  cp "$bin" "$out/"
  # Everything ldd resolves outside the C runtime and the CUDA toolkit (those exist on the device).
  ldd "$bin" | awk '$3 ~ /^\// {print $3}' |
    grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so|/usr/local/cuda' |
    while read -r lib; do cp -Ln "$lib" "$out/"; done
done
for m in "${models[@]}"; do
  mkdir -p "$out/shared/models/$m" "$out/shared/reference/$m"
  for f in config.json model.safetensors tokenizer_config.json generation_config.json; do
    [[ -e $shared/models/$m/$f ]] && cp "$shared/models/$m/$f" "$out/shared/models/$m/"
  done
  cp "$shared/reference/$m/prompts_logits.json" "$out/shared/reference/$m/"
done
du -sh "$out"
