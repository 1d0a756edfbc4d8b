#!/usr/bin/env bash
# Stages the GPU op test for a machine that has the CUDA driver and toolkit but none of the
# Debian libraries this tree links (the lent device machines): copies test_cuda_ops and the
# non-CUDA, non-libc shared libraries it needs into build-cuda/device/. Carry `build-cuda/device`
# and run there:   LD_LIBRARY_PATH=build-cuda/device build-cuda/device/test_cuda_ops
# Build first:     cmake -S . -B build-cuda -DCOMPACTOR_CUDA=ON && cmake --build build-cuda -j2 --target test_cuda_ops
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build-cuda/tests/test_cuda_ops
out=build-cuda/device
[[ -x $bin ]] || { echo "stage_for_device: $bin is missing; build the test_cuda_ops target first" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
cp "$bin" "$out/"
# Everything ldd resolves outside the C runtime and the CUDA toolkit (those exist on the device).
ldd "$bin" | awk '$3 ~ /^\// {print $3}' |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so|/usr/local/cuda' |
  while read -r lib; do cp -L "$lib" "$out/"; done
du -sh "$out"
ls "$out"
