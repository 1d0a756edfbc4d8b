// Helpers shared by the GPU tests (tests/cuda, ctest label gpu): header-only, because only the
// CUDA build compiles this ring and tests/support must build without CUDA.
#pragma once

#include <cuda_runtime.h>

namespace compactor::test {

// True when a CUDA device is usable; clears the error a missing driver or device leaves behind.
inline bool gpu_present() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err == cudaSuccess && count > 0;
}

}  // namespace compactor::test
