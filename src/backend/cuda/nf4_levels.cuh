// The NF4 levels (formats/nf4.h: kNF4Values) in constant memory for the CUDA kernels that decode
// NF4 codes (qgemv.cu, dequant.cu). Kernels copy them into shared memory first: 16 floats sit in 16
// distinct banks, so any gather of levels by a warp is conflict-free, while a divergent index into
// constant memory is serialised.
#pragma once

#include "formats/nf4.h"

namespace compactor {

static __constant__ float kNF4LevelsDev[16] = {
    kNF4Values[0], kNF4Values[1], kNF4Values[2],  kNF4Values[3],  kNF4Values[4],  kNF4Values[5],
    kNF4Values[6], kNF4Values[7], kNF4Values[8],  kNF4Values[9],  kNF4Values[10], kNF4Values[11],
    kNF4Values[12], kNF4Values[13], kNF4Values[14], kNF4Values[15]};

// Block-wide: levels[0..16) = kNF4Values. Every thread of the block must call it (it synchronises).
__device__ __forceinline__ void stage_nf4_levels(float* levels) {
  if (threadIdx.x < 16) levels[threadIdx.x] = kNF4LevelsDev[threadIdx.x];
  __syncthreads();
}

}  // namespace compactor
