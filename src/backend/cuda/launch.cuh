// Programmatic dependent launch (Hopper, CUDA 11.8+): every kernel of the decode path is launched
// with launch_kernel, which lets the next kernel in the stream start while this one drains (its
// blocks fill the SMs as this kernel's blocks retire, and a GEMV streams its first weights). The
// contract, on the device side: a kernel launched this way calls wait_for_prior_grids() before it
// reads anything an earlier kernel wrote or writes anything an earlier kernel reads; only
// constant inputs (weights, tables) may be touched before, and data that only launches before the
// previous one wrote (when this kernel starts, the previous one has passed its own wait, so they
// are complete): the decode attention (attention_decode.cu) fetches the cached keys that way. Every block calls it (a grid's completion
// must imply its predecessor's, since the next kernel's wait covers only its direct predecessor).
// set_dependent_launch(false) (CudaBackend option pdl=off) launches plainly: the waits are no-ops then.
// Test: build-*/tests/test_cuda_synthetic_quant --gtest_filter=*DependentLaunches* (GPU machine).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <utility>

namespace compactor {

inline std::atomic<bool>& dependent_launch_flag() {
  static std::atomic<bool> on{false};
  return on;
}
inline void set_dependent_launch(bool on) { dependent_launch_flag().store(on, std::memory_order_relaxed); }
inline bool dependent_launch_enabled() { return dependent_launch_flag().load(std::memory_order_relaxed); }

// The launch attribute that groups blocks into thread block clusters of `z` blocks along z.
inline cudaLaunchAttribute cluster_z_attribute(unsigned z) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim = {1, 1, z};
  return attr;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch when enabled,
// in thread block clusters of `cluster_z` blocks along z where that is above 1 (the grid's z a
// multiple of it; compute capability 9.0).
template <typename... Params, typename... Args>
cudaError_t launch_kernel_in_clusters(void (*kernel)(Params...), dim3 grid, unsigned cluster_z, dim3 block,
                                      size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[2];
  int n = 0;
  if (dependent_launch_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_z > 1) attr[n++] = cluster_z_attribute(cluster_z);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = static_cast<unsigned>(n);
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  return launch_kernel_in_clusters(kernel, grid, 1, block, smem, stream, std::forward<Args>(args)...);
}

// Lets kKernel take `bytes` of dynamic shared memory (the attribute is required once static plus
// dynamic shared memory passes 48 KB, so it is set whatever `bytes` is). The driver call is made
// only when a launch asks for more than the kernel was last opened to, so steady-state launches,
// graph capture included, add no host work.
template <auto kKernel>
cudaError_t allow_dynamic_smem(size_t bytes) {
  static std::atomic<size_t> opened{0};
  if (bytes <= opened.load(std::memory_order_relaxed)) return cudaSuccess;
  const cudaError_t err =
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err == cudaSuccess) opened.store(bytes, std::memory_order_relaxed);
  return err;
}

#ifdef __CUDACC__
// Waits for the previous kernel in the stream (griddepcontrol.wait), then lets the next one launch
// as soon as every block of this grid has got here (griddepcontrol.launch_dependents): the next
// kernel's blocks fill the SMs this one frees, and its own wait keeps it from reading too early.
__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

}  // namespace compactor
