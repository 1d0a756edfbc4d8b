// Hopper (sm_90) bulk copies global -> shared through the TMA unit, completed on shared-memory
// mbarriers: one thread issues a copy of up to a few KB and the consumers wait on the barrier's
// phase, so a block keeps tens of KB in flight with no registers tied up in loads (the streaming
// GEMV, qgemv_stream.cu). Wrappers over the PTX of the ISA's "cp.async.bulk" and "mbarrier"
// sections; device code only (.cu files), sm_90 and up.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine).
#pragma once

#include <cstdint>

namespace compactor {
namespace bulk {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Barrier completing a phase once `arrivals` threads have arrived and every expected byte landed.
__device__ __forceinline__ void barrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals) : "memory");
}
// Makes initialised barriers visible to the async (TMA) proxy; then a __syncthreads.
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
// Arrives and announces `bytes` more to land in this phase (by copies naming this barrier).
__device__ __forceinline__ void arrive_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
// Blocks until the phase of parity `parity` has completed.
__device__ __forceinline__ void wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// L2 policy for data read once (weights streamed by a GEMV): evicted first, so that it does not
// push out what the next kernels re-read (activations, KV cache).
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

// `bytes` (a multiple of 16; src and dst 16-byte aligned) global -> shared, counted on `bar`.
__device__ __forceinline__ void copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

// The box at element coordinates (c0 = innermost, c1) of a 2-D tensor map (its swizzle applied;
// rows past the tensor's end zero-filled) -> shared, counted on `bar`.
__device__ __forceinline__ void copy_tensor_2d(void* dst, const void* tensor_map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          smem_addr(dst)),
      "l"(tensor_map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}

// bar.sync on a named barrier (1..15) for `threads` threads (a multiple of 32): a subset of the
// block (the consumer warps) synchronises without the producer warp.
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Thread block clusters (sm_90): the blocks of a cluster run at once on one GPC and read each
// other's shared memory.
// Every thread of every block of the cluster meets here; shared-memory writes made before are
// visible to the other blocks' reads after.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\n barrier.cluster.wait.acquire;" ::: "memory");
}
// The generic address, in the shared memory of the cluster's block `rank`, of what `p` addresses
// in this block's.
template <typename P>
__device__ __forceinline__ P* cluster_map(P* p, uint32_t rank) {
  uint64_t mapped;
  asm("mapa.u64 %0, %1, %2;" : "=l"(mapped) : "l"(p), "r"(rank));
  return reinterpret_cast<P*>(mapped);
}

}  // namespace bulk
}  // namespace compactor
