#!/usr/bin/env bash
# Stages binaries for the lent GPU machine, which has the CUDA driver and toolkit but none of the
# Debian libraries compactor links and no ../shared. Writes into carry/ (git-ignored; name it in
# the device tool's `carry`):
#   carry/bin.tar.xz       the named executables from BUILD (default build-cuda) + their non-libc,
#                          non-CUDA shared libraries (lib/), compressed (OpenBLAS is 35 MB raw)
#   carry/fixtures.tar.xz  fixture-llama-sp, stories260K, their references and WikiText-2
#                          (made once; the upload limit is 64 MiB, so the weights travel compressed)
#   carry/tasks.tar.xz     the c4 calibration text and the multiple-choice task data of
#                          configs/tasks (made once; ~4.5 MB)
# On the device:  D=/tmp/d; mkdir -p $D; for f in carry/*.tar.xz; do tar -xJf $f -C $D; done
#   export LD_LIBRARY_PATH=$D/lib COMPACTOR_SHARED_DIR=$D/shared COMPACTOR_BINARY=$D/bin/compactor
# Usage: scripts/device-stage.sh [BUILD] [executable ...]   (paths relative to BUILD)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
shift || true
exes=("$@")
[[ ${#exes[@]} -gt 0 ]] || exes=(bin/compactor tests/test_cuda_ops tests/test_cuda_model)
shared=${COMPACTOR_SHARED_DIR:-../shared}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p carry "$stage/bin" "$stage/lib"
for exe in "${exes[@]}"; do
  [[ -x $build/$exe ]] || { echo "device-stage: $build/$exe is missing: build it first" >&2; exit 1; }
  cp "$build/$exe" "$stage/bin/"
  ldd "$build/$exe" | awk '$3 ~ /^\// {print $3}' |
    grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so|/usr/local/cuda|libcuda\.so' |
    while read -r lib; do cp -Ln "$lib" "$stage/lib/" 2>/dev/null || true; done
done
# The executables share most of their code (the static compactor libraries, CUDA kernels
# included): stripped and compressed in one xz block with a 64 MiB dictionary they cost ~1 each.
strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true
tar -C "$stage" -cf - bin lib | xz -T1 -9 > carry/bin.tar.xz.tmp && mv carry/bin.tar.xz.tmp carry/bin.tar.xz
if [[ ! -f carry/fixtures.tar.xz ]]; then
  fx=$(mktemp -d)
  mkdir -p "$fx/shared/models" "$fx/shared/reference" "$fx/shared/data/wikitext2" "$fx/shared/data/fixture-val"
  for m in fixture-llama-sp stories260K; do
    cp -r "$shared/models/$m" "$fx/shared/models/"
    cp -r "$shared/reference/$m" "$fx/shared/reference/"
  done
  cp "$shared/data/wikitext2/wiki.test.raw" "$fx/shared/data/wikitext2/"
  cp "$shared/data/fixture-val/val.txt" "$fx/shared/data/fixture-val/"
  rm -f "$fx/shared/models/stories260K/stories260K.bin"
  tar -C "$fx" -cf - shared | xz -T2 -6 > carry/fixtures.tar.xz.tmp && mv carry/fixtures.tar.xz.tmp carry/fixtures.tar.xz
  rm -rf "$fx"
fi
if [[ ! -f carry/tasks.tar.xz ]]; then
  tar -C "$shared" --transform 's,^,shared/,' -cf - data/calibration/c4.utf8 \
    data/arc/ARC-Challenge/ARC-Challenge-Test.jsonl data/arc/ARC-Challenge/ARC-Challenge-Train.jsonl \
    data/arc/ARC-Easy/ARC-Easy-Test.jsonl data/arc/ARC-Easy/ARC-Easy-Train.jsonl data/boolq data/hellaswag \
    data/mmlu/test data/mmlu/dev data/truthfulqa/data_v1_mc_task.json | xz -T2 -6 > carry/tasks.tar.xz.tmp
  mv carry/tasks.tar.xz.tmp carry/tasks.tar.xz
fi
du -ch carry/*.tar.xz | tail -n 3
