// Backend factory: the CPU backend always, the CUDA backend when built and a GPU is present.
#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace compactor {

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
