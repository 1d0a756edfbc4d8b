// Backend factory: the CPU backend always, the CUDA backend when built and a GPU is present.
#include "backend/backend.h"

#include <vector>

#include "backend/cpu/cpu_backend.h"
#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace compactor {

void Backend::copy(View dst, View src) {
  COMPACTOR_ASSERT(dst.shape == src.shape && dst.dtype == src.dtype, "copy {} -> {}", src.shape.str(), dst.shape.str());
  std::vector<uint8_t> staging(src.bytes());
  copy_to_host(src, staging.data());
  copy_from_host(staging.data(), dst);
}

void Backend::matmul_group(const View* outs, View x, const LinearWeight* const* ws, int n) {
  for (int i = 0; i < n; ++i) matmul(outs[i], x, *ws[i]);
}

void Backend::matmul_add(View x, View a, const LinearWeight& w, View scratch) {
  matmul(scratch, a, w);
  add(x, scratch);
}

void Backend::rms_norm_matmul_group(const View* outs, View x, View norm_weight, float eps,
                                    const LinearWeight* const* ws, int n, View h) {
  rms_norm(h, x, norm_weight, eps);
  matmul_group(outs, h, ws, n);
}

void Backend::swiglu_matmul_add(View x, View gate, View up, const LinearWeight& w, View act, View scratch) {
  swiglu(act, gate, up);
  matmul_add(x, act, w, scratch);
}

void Backend::rope_kv_store(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads, int head_dim,
                            const float* inv_freq, const BatchLayout& layout) {
  rope(q, heads, head_dim, inv_freq, layout);
  rope(k, kv_heads, head_dim, inv_freq, layout);
  kv_store(k_cache, v_cache, k, v, layout);
}

void copy_to_host_f32(Backend& backend, View src, float* out) {
  if (src.dtype == DType::kF32) {
    backend.copy_to_host(src, out);
    return;
  }
  std::vector<uint8_t> raw(src.bytes());
  backend.copy_to_host(src, raw.data());
  convert_to_f32(raw.data(), src.dtype, src.numel(), out);
}

Result<std::unique_ptr<Backend>> make_backend(BackendKind kind) {
  if (kind == BackendKind::kCpu) return std::unique_ptr<Backend>(std::make_unique<CpuBackend>());
#ifdef COMPACTOR_HAS_CUDA
  return make_cuda_backend();
#else
  return unsupported("--device cuda: this build of compactor has no CUDA backend (nvcc was not found at build time)");
#endif
}

Result<BackendKind> backend_kind_from_name(const std::string& name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda" || name == "gpu") return BackendKind::kCuda;
  return invalid_argument("--device: unknown device '{}' (expected cpu or cuda)", name);
}

}  // namespace compactor
