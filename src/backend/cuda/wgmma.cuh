// Hopper warpgroup matrix multiply (wgmma, sm_90a only): the m64n128k16 and m64n256k16 shapes with A from
// registers and B from shared memory, f32 accumulators, and the fences around it. Wrappers over the
// PTX ISA's "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" section; device code only.
// The instructions exist only in the sm_90a target: the portable compute_90 PTX pass of the build
// (COMPACTOR_CUDA_ARCHS) compiles these to a trap, and the host launches wgmma kernels only on
// compute capability 9.0 (qgemm_wgmma_enabled).
//
// Fragments (a warpgroup = 4 consecutive warps, warp w of it owns rows 16w .. 16w+15 of the 64;
// g = lane / 4, t = lane % 4):
//   A (registers, 4 × 2 16-bit values): a0 = (row g, k 2t, 2t+1), a1 = (row g+8, k 2t, 2t+1),
//       a2 = (row g, k 2t+8, 2t+9), a3 = (row g+8, k 2t+8, 2t+9), the lower k in the low half;
//       the mma.m16n8k16 A layout per warp.
//   D (N / 2 f32): d[4i + e] = (row g + 8 (e >> 1), column 8i + 2t + (e & 1)), i < N / 8.
//   B (shared memory, K-major, 128-byte swizzle): column n's 16 k values of a k16 step are 32
//       contiguous bytes of row n (128 bytes per row = 64 k), rows 1024-byte-aligned in groups of 8
//       with 16-byte unit u of row r stored at unit u ^ (r % 8); step j starts 32 j bytes in.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace compactor {
namespace wgmma {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define COMPACTOR_WGMMA 1
#endif

// Descriptor of a K-major, 128-byte-swizzled B operand starting at shared address `addr`: stride
// between 8-row groups 1024 bytes, leading offset unused (1) for this swizzle, layout type 1.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

__device__ __forceinline__ void fence() {
#ifdef COMPACTOR_WGMMA
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void commit() {
#ifdef COMPACTOR_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void wait() {
#ifdef COMPACTOR_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
#endif
}

// Keeps the compiler from moving accesses of the accumulators across an asynchronous wgmma (they
// are read and written by the tensor cores between the issue and the wait).
template <int kN>
__device__ __forceinline__ void pin(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define COMPACTOR_WGMMA_D16(i)                                                                                  \
  "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),               \
      "+f"(d[i + 6]), "+f"(d[i + 7]), "+f"(d[i + 8]), "+f"(d[i + 9]), "+f"(d[i + 10]), "+f"(d[i + 11]),         \
      "+f"(d[i + 12]), "+f"(d[i + 13]), "+f"(d[i + 14]), "+f"(d[i + 15])
#define COMPACTOR_WGMMA_PRED "{\n .reg .pred p;\n setp.ne.b32 p, 1, 0;\n "
#define COMPACTOR_WGMMA_N128_OPERANDS \
  "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
  "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}"
#define COMPACTOR_WGMMA_N256_OPERANDS \
  "{" \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
  "}, {%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}"
#define COMPACTOR_WGMMA_D64 COMPACTOR_WGMMA_D16(0), COMPACTOR_WGMMA_D16(16), COMPACTOR_WGMMA_D16(32), COMPACTOR_WGMMA_D16(48)
#define COMPACTOR_WGMMA_D128                                                                                    \
  COMPACTOR_WGMMA_D64, COMPACTOR_WGMMA_D16(64), COMPACTOR_WGMMA_D16(80), COMPACTOR_WGMMA_D16(96),               \
      COMPACTOR_WGMMA_D16(112)
#define COMPACTOR_WGMMA_A_B "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)

// d[64 × kN] += a[64 × 16] · B[16 × kN] (B at descriptor b), issued asynchronously; kN = 128 or 256
// (d: kN / 2 registers).
template <typename T, int kN>
__device__ __forceinline__ void mma_m64k16(float (&d)[kN / 2], const uint32_t (&a)[4], uint64_t b) {
#ifdef COMPACTOR_WGMMA
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  static_assert(kBf16 || std::is_same_v<T, __half>, "bf16 or f16");
  static_assert(kN == 128 || kN == 256, "n128 or n256");
  if constexpr (kN == 128 && kBf16)
    asm volatile(COMPACTOR_WGMMA_PRED "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " COMPACTOR_WGMMA_N128_OPERANDS
                 : COMPACTOR_WGMMA_D64 : COMPACTOR_WGMMA_A_B);
  else if constexpr (kN == 128)
    asm volatile(COMPACTOR_WGMMA_PRED "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " COMPACTOR_WGMMA_N128_OPERANDS
                 : COMPACTOR_WGMMA_D64 : COMPACTOR_WGMMA_A_B);
  else if constexpr (kBf16)
    asm volatile(COMPACTOR_WGMMA_PRED "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " COMPACTOR_WGMMA_N256_OPERANDS
                 : COMPACTOR_WGMMA_D128 : COMPACTOR_WGMMA_A_B);
  else
    asm volatile(COMPACTOR_WGMMA_PRED "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 " COMPACTOR_WGMMA_N256_OPERANDS
                 : COMPACTOR_WGMMA_D128 : COMPACTOR_WGMMA_A_B);
#else
  __trap();
#endif
}
#undef COMPACTOR_WGMMA_D16
#undef COMPACTOR_WGMMA_PRED
#undef COMPACTOR_WGMMA_N128_OPERANDS
#undef COMPACTOR_WGMMA_N256_OPERANDS
#undef COMPACTOR_WGMMA_D64
#undef COMPACTOR_WGMMA_D128
#undef COMPACTOR_WGMMA_A_B

}  // namespace wgmma
}  // namespace compactor
