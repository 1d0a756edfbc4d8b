// Per-op time of one decoder layer on the GPU, for finding where a step's time goes: each op of
// the layer (norms, grouped GEMMs/GEMVs, rope + KV append, attention, ...) is captured 20 times
// into a CUDA graph and the replay is timed with CUDA events (so launch gaps count as in the
// decode graph), for prefill and decode shapes, with the bytes and FLOPs each op must move.
// Only built with CUDA. Used by `compactor bench --breakdown`; run on the device by
// bench/run_device_bench.sh.
#pragma once

#ifdef COMPACTOR_HAS_CUDA

#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "model/model.h"

namespace compactor {

struct OpTiming {
  std::string op;
  double us = 0;     // per call (median of the replays / reps)
  double bytes = 0;  // fewest bytes the op must move
  double flops = 0;
};

struct LayerProfile {
  std::string phase;  // "prefill T=2048" | "decode B=32"
  int batch = 1, tokens = 1, past = 0;
  std::vector<OpTiming> ops;
};

struct ProfileShape {
  int batch, tokens, past;
};

Result<std::vector<LayerProfile>> profile_layer(Model& model, CudaBackend& be, const std::vector<ProfileShape>& shapes);

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
