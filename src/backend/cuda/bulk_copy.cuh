// Hopper bulk copies (cp.async.bulk, the non-tensor TMA path) from global into shared memory,
// completed on an mbarrier with a transaction count: one thread moves kilobytes with one
// instruction and no registers, which is how a streaming kernel keeps enough bytes in flight.
// Usage: init(bar, 1) by one thread, fence_init, __syncthreads; then per stage one thread calls
// expect_bytes + copy, and every consumer wait(bar, phase) (phase flips each reuse of the barrier).
// Addresses and sizes must be multiples of 16 bytes. Device code only (sm_90+); .cu files.
// Test: build-*/tests/test_cuda_qgemm (the tensor-core GEMV streams its codes this way).
#pragma once

#include <cstdint>

namespace compactor {
namespace bulk {

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_addr(bar)), "r"(arrivals) : "memory");
}

// Makes the initialised barriers visible to the async proxy (the copy engine) before first use.
__device__ __forceinline__ void fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// This thread's arrival, announcing `bytes` that copies will deliver to the barrier's phase.
__device__ __forceinline__ void expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_addr(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_addr(dst)),
               "l"(src), "r"(bytes), "r"(shared_addr(bar))
               : "memory");
}

// Blocks until the barrier's phase with parity `phase` has completed (its bytes have landed).
__device__ __forceinline__ void wait(uint64_t* bar, uint32_t phase) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(shared_addr(bar)), "r"(phase)
        : "memory");
  } while (done == 0);
}

}  // namespace bulk
}  // namespace compactor
