// Dequantization of packed intN weights (formats/quant_pack.h: qweight [W(K), N] packs codes down
// each column). 2/4/8 bits: a block dequantizes a tile of 32 columns × 32 packed words (up to 512
// positions of K); it reads the words coalesced along N (128 bytes per warp per tile row) into
// shared memory, then each thread turns one word (32/bits consecutive positions of one output
// row) into 32/bits outputs and writes them with 8/16/32-byte stores, a warp covering 32
// consecutive words of one row (contiguous along K). The code-to-float step is one AND-OR against
// the bits of 2^23 and one subtraction of 2^23 + zero (exact), then one multiply by the scale:
// the same f32 value (c - z)·s as dequantize_ref, rounded once. Without this tiling (one thread per
// element reading its word down the column) the kernel ran ~8x below the 3 TB/s the 2 + bits/8
// bytes per weight allow (H100: 330 us for 11008x4096 int4). 3 bits (codes straddle words) keep
// the simple per-element kernel. Instantiated for the two activation types only.
// Test: build-*/tests/test_cuda_dequant (on a GPU machine). Bench: build-*/bench/bench_qgemm
// (the "deq+cuBLAS" column).
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/device_utils.cuh"
#include "formats/quant_pack.h"

namespace compactor {

// 3 bits (and the reference shape of the tiled kernel): one thread per output element.
template <typename T>
__global__ void dequantize_kernel(T* __restrict__ out,                // [N, K]
                                  const int32_t* __restrict__ qweight,  // [W(K), N]
                                  const __half* __restrict__ scales,    // [G, N]
                                  const int32_t* __restrict__ qzeros,   // [G, W(N)]
                                  const int32_t* __restrict__ g_idx,    // [K] or nullptr
                                  int bits, int group_size, int64_t n, int64_t k) {
  const int64_t zero_words = (n * bits + 31) / 32;
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / k, col = i - row * k;
    const int64_t grp = g_idx ? g_idx[col] : (group_size ? col / group_size : 0);
    const float code = static_cast<float>(packed_value(qweight + row, n, bits, col));
    const float zero = static_cast<float>(packed_value(qzeros + grp * zero_words, 1, bits, row));
    out[i] = from_f32<T>((code - zero) * __half2float(scales[grp * n + row]));
  }
}

namespace {

constexpr int kDqTileN = 32;  // columns (output rows) per tile
constexpr int kDqTileW = 32;  // packed words along K per tile
constexpr int kDqThreads = 256;

}  // namespace

// out rows n0.., positions of words w0..: see the file comment. vec: whole words only
// (K % (32/bits) == 0), K * sizeof(T) % 16 == 0 and out 16-byte aligned, so each thread's
// outputs go out in 8/16/32-byte stores.
template <typename T, int kBits>
__global__ void __launch_bounds__(kDqThreads) dequantize_tile_kernel(T* __restrict__ out,                // [N, K]
                                                                     const int32_t* __restrict__ qweight,  // [W(K), N]
                                                                     const __half* __restrict__ scales,    // [G, N]
                                                                     const int32_t* __restrict__ qzeros,   // [G, W(N)]
                                                                     const int32_t* __restrict__ g_idx,    // [K] or null
                                                                     int group_size, int64_t n, int64_t k, bool vec) {
  constexpr int kPerWord = 32 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  __shared__ uint32_t tile[kDqTileW][kDqTileN + 1];  // +1: the column reads below hit 32 banks
  const int64_t words = (k + kPerWord - 1) / kPerWord;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kDqTileN, w0 = static_cast<int64_t>(blockIdx.y) * kDqTileW;
  for (int i = threadIdx.x; i < kDqTileW * kDqTileN; i += kDqThreads) {
    const int wl = i / kDqTileN, nl = i % kDqTileN;
    const int64_t w = w0 + wl, col = n0 + nl;
    tile[wl][nl] = w < words && col < n ? static_cast<uint32_t>(__ldg(qweight + w * n + col)) : 0u;
  }
  __syncthreads();
  const int64_t zero_words = (n * kBits + 31) / 32;
  // Every position of a word shares its group unless act-order or a group size that is not a
  // multiple of the word's positions.
  const bool word_group = g_idx == nullptr && (group_size == 0 || group_size % kPerWord == 0);
  for (int i = threadIdx.x; i < kDqTileW * kDqTileN; i += kDqThreads) {
    const int wl = i % kDqTileW, nl = i / kDqTileW;
    const int64_t w = w0 + wl, row = n0 + nl;
    if (w >= words || row >= n) continue;
    const uint32_t v = tile[wl][nl];
    const int64_t kb = w * kPerWord;
    alignas(16) T o[kPerWord];
    if (word_group) {
      const int64_t grp = group_size != 0 ? kb / group_size : 0;
      const float s = __half2float(scales[grp * n + row]);
      const float zb = 8388608.f + static_cast<float>(packed_value(qzeros + grp * zero_words, 1, kBits, row));
#pragma unroll
      for (int e = 0; e < kPerWord; ++e) {
        const float c = __int_as_float(static_cast<int>(((v >> (kBits * e)) & kMask) | 0x4B000000u));  // 2^23 + code
        o[e] = from_f32<T>((c - zb) * s);
      }
    } else {
#pragma unroll
      for (int e = 0; e < kPerWord; ++e) {
        const int64_t col = kb + e < k ? kb + e : k - 1;
        const int64_t grp = g_idx != nullptr ? g_idx[col] : (group_size != 0 ? col / group_size : 0);
        const float zero = static_cast<float>(packed_value(qzeros + grp * zero_words, 1, kBits, row));
        const float code = static_cast<float>((v >> (kBits * e)) & kMask);
        o[e] = from_f32<T>((code - zero) * __half2float(scales[grp * n + row]));
      }
    }
    T* dst = out + row * k + kb;
    if (vec) {
      if constexpr (sizeof(o) >= 16) {
#pragma unroll
        for (size_t j = 0; j < sizeof(o) / 16; ++j) reinterpret_cast<uint4*>(dst)[j] = reinterpret_cast<const uint4*>(o)[j];
      } else {
        *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(o);
      }
    } else {
#pragma unroll
      for (int e = 0; e < kPerWord; ++e)
        if (kb + e < k) dst[e] = o[e];
    }
  }
}

namespace {

template <typename T, int kBits>
Status launch_tiles(View out, const LinearWeight& w, cudaStream_t stream) {
  constexpr int kPerWord = 32 / kBits;
  const int64_t n = w.out_features, k = w.in_features;
  const int64_t words = (k + kPerWord - 1) / kPerWord;
  const int64_t tiles_n = (n + kDqTileN - 1) / kDqTileN, tiles_w = (words + kDqTileW - 1) / kDqTileW;
  if (tiles_n > 0x7fffffff || tiles_w > 65535)
    return invalid_argument("dequantize: [{}, {}] needs a {} x {} grid (too large)", n, k, tiles_n, tiles_w);
  const bool vec = k % kPerWord == 0 && (k * static_cast<int64_t>(sizeof(T))) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out.data) % 16 == 0;
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(tiles_w));
  dequantize_tile_kernel<T, kBits><<<grid, kDqThreads, 0, stream>>>(
      out.as<T>(), w.qweight.as<const int32_t>(), w.scales.as<const __half>(), w.qzeros.as<const int32_t>(),
      w.g_idx.as<const int32_t>(), w.group_size, n, k, vec);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status check_dequantize(View out, const LinearWeight& w) {
  if (!w.quantized()) return invalid_argument("dequantize: format {} is not quantized", format_name(w.format));
  RETURN_IF_ERROR(expect_act("dequantize", "out", out));
  RETURN_IF_ERROR(expect_shape2("dequantize", "out", out, w.out_features, w.in_features));
  RETURN_IF_ERROR(expect_cuda("dequantize", "qweight", w.qweight));
  RETURN_IF_ERROR(expect_cuda("dequantize", "scales", w.scales));
  RETURN_IF_ERROR(expect_cuda("dequantize", "qzeros", w.qzeros));
  if (w.g_idx.data != nullptr) RETURN_IF_ERROR(expect_cuda("dequantize", "g_idx", w.g_idx));
  return check_packed_shapes("dequantize", w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                             w.scales, w.qzeros, w.g_idx);
}

}  // namespace

Status dequantize_cuda(View out, const LinearWeight& w, cudaStream_t stream) {
  RETURN_IF_ERROR(check_dequantize(out, w));
  const int64_t total = w.out_features * w.in_features;
  if (total == 0) return Status::ok();
  constexpr int kThreads = 256;
  return dispatch_act(out.dtype, "dequantize", [&](auto tag) -> Status {
    using T = decltype(tag);
    switch (w.bits()) {
      case 8: return launch_tiles<T, 8>(out, w, stream);
      case 4: return launch_tiles<T, 4>(out, w, stream);
      case 2: return launch_tiles<T, 2>(out, w, stream);
      default: break;
    }
    dequantize_kernel<T><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
        out.as<T>(), w.qweight.as<const int32_t>(), w.scales.as<const __half>(), w.qzeros.as<const int32_t>(),
        w.g_idx.as<const int32_t>(), w.bits(), w.group_size, w.out_features, w.in_features);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::ok();
  });
}

}  // namespace compactor
