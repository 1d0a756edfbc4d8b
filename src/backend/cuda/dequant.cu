// Dequantization of packed intN weights (formats/quant_pack.h: qweight [W(K), N] packs codes down
// each column). A block dequantizes a tile of 32 columns × 32 units (a unit: one packed word for
// 2/4/8 bits, three words = 32 codes for 3 bits, whose codes straddle words); it reads the words
// coalesced along N (128 bytes per warp per tile row) into shared memory, then each thread turns
// one unit (consecutive positions of one output row) into 4-32 outputs and writes them with
// 8-64-byte vector stores, a warp covering 32 consecutive units of one row (contiguous along K). The code-to-float step is one AND-OR against
// the bits of 2^23 and one subtraction of 2^23 + zero (exact), then one multiply by the scale:
// the same f32 value (c - z)·s as dequantize_ref, rounded once. Without this tiling (one thread per
// element reading its word down the column) the kernel ran ~8x below the 3 TB/s the 2 + bits/8
// bytes per weight allow (H100: 330 us for 11008x4096 int4). Instances: 2 activation types × 4
// bit widths, plus NF4 (formats/nf4.h: the 4-bit codes index kNF4Values, the scale is the block's
// double-quantized absmax) × 2 activation types.
// Test: build-*/tests/test_cuda_dequant (on a GPU machine). Bench: build-*/bench/bench_qgemm
// (the "deq+cuBLAS" column).
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/nf4_levels.cuh"
#include "formats/quant_pack.h"

namespace compactor {

namespace {

constexpr int kDqTileN = 32;  // columns (output rows) per tile
constexpr int kDqTileW = 32;  // packed words along K per tile
constexpr int kDqThreads = 256;

}  // namespace

// A unit: the packed words that hold a whole number of codes (one word for 2/4/8 bits; three for
// 3 bits, whose 32 codes fill 96 bits and straddle words).
template <int kBits> inline constexpr int kUnitWords = kBits == 3 ? 3 : 1;
template <int kBits> inline constexpr int kUnitCodes = kBits == 3 ? 32 : 32 / kBits;

// The double-quantized absmax of NF4 weights (LinearWeight::scales/nested_scales/nested_offset).
struct Nf4Scales {
  const uint8_t* codes = nullptr;   // [G, N] E4M3
  const float* nested = nullptr;    // [ceil(G*N/256)]
  const float* offset = nullptr;    // [1]
};

// out rows n0.., positions of units u0..: see the file comment. vec: whole units only
// (K % kUnitCodes == 0), K * sizeof(T) % 16 == 0 and out 16-byte aligned, so each thread's
// outputs go out in 8/16/32/64-byte stores.
// kNF4: codes are NF4 levels times the absmax from nf4 (scales/qzeros/g_idx unused).
template <typename T, int kBits, bool kNF4>
__global__ void __launch_bounds__(kDqThreads) dequantize_tile_kernel(T* __restrict__ out,                // [N, K]
                                                                     const int32_t* __restrict__ qweight,  // [W(K), N]
                                                                     const __half* __restrict__ scales,    // [G, N]
                                                                     const int32_t* __restrict__ qzeros,   // [G, W(N)]
                                                                     const int32_t* __restrict__ g_idx,    // [K] or null
                                                                     const Nf4Scales nf4, int group_size, int64_t n,
                                                                     int64_t k, bool vec) {
  constexpr int kUW = kUnitWords<kBits>, kPerUnit = kUnitCodes<kBits>;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  // +1: the reads below (lane = unit) hit distinct banks (rows kUW·lane + j, kUW odd).
  __shared__ uint32_t tile[kDqTileW * kUW][kDqTileN + 1];
  __shared__ float levels[16];
  if (kNF4 && threadIdx.x < 16) levels[threadIdx.x] = kNF4LevelsDev[threadIdx.x];
  const int64_t words = (k * kBits + 31) / 32, units = (k + kPerUnit - 1) / kPerUnit;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kDqTileN, u0 = static_cast<int64_t>(blockIdx.y) * kDqTileW;
  for (int i = threadIdx.x; i < kDqTileW * kUW * kDqTileN; i += kDqThreads) {
    const int wl = i / kDqTileN, nl = i % kDqTileN;
    const int64_t w = u0 * kUW + wl, col = n0 + nl;
    tile[wl][nl] = w < words && col < n ? static_cast<uint32_t>(__ldg(qweight + w * n + col)) : 0u;
  }
  __syncthreads();
  // The codes above are constant; the output buffer may still be read by the previous matmul.
  wait_for_prior_grids();
  const int64_t zero_words = (n * kBits + 31) / 32;
  // Every position of a unit shares its group unless act-order or a group size that is not a
  // multiple of the unit's positions.
  const bool unit_group = g_idx == nullptr && (group_size == 0 || group_size % kPerUnit == 0);
  for (int i = threadIdx.x; i < kDqTileW * kDqTileN; i += kDqThreads) {
    const int ul = i % kDqTileW, nl = i / kDqTileW;
    const int64_t u = u0 + ul, row = n0 + nl;
    if (u >= units || row >= n) continue;
    uint32_t v[kUW];
#pragma unroll
    for (int j = 0; j < kUW; ++j) v[j] = tile[ul * kUW + j][nl];
    // Code e of the unit (shifts are compile-time after unrolling).
    auto code = [&](int e) -> uint32_t {
      const int bit = kBits * e, wi = bit >> 5, off = bit & 31;
      uint32_t c = v[wi] >> off;
      if (off + kBits > 32) c |= v[wi + 1] << (32 - off);
      return c & kMask;
    };
    const int64_t kb = u * kPerUnit;
    alignas(16) T o[kPerUnit];
    if constexpr (kNF4) {
      // The absmax of the unit's block (every block of a multiple of 8 positions holds whole
      // units), else per position.
      auto absmax = [&](int64_t col) {
        const int64_t i = (col / group_size) * n + row;
        return nf4_absmax(nf4.codes[i], nf4.nested[i / kNF4NestedBlock], nf4.offset[0]);
      };
      const bool whole = group_size % kPerUnit == 0;
      const float unit_absmax = absmax(kb);
#pragma unroll
      for (int e = 0; e < kPerUnit; ++e)
        o[e] = from_f32<T>(levels[code(e)] * (whole ? unit_absmax : absmax(kb + e < k ? kb + e : k - 1)));
    } else if (unit_group) {
      const int64_t grp = group_size != 0 ? kb / group_size : 0;
      const float s = __half2float(scales[grp * n + row]);
      const float zb = 8388608.f + static_cast<float>(packed_value(qzeros + grp * zero_words, 1, kBits, row));
#pragma unroll
      for (int e = 0; e < kPerUnit; ++e) {
        const float c = __int_as_float(static_cast<int>(code(e) | 0x4B000000u));  // 2^23 + code, exact
        o[e] = from_f32<T>((c - zb) * s);
      }
    } else {
#pragma unroll
      for (int e = 0; e < kPerUnit; ++e) {
        const int64_t col = kb + e < k ? kb + e : k - 1;
        const int64_t grp = g_idx != nullptr ? g_idx[col] : (group_size != 0 ? col / group_size : 0);
        const float zero = static_cast<float>(packed_value(qzeros + grp * zero_words, 1, kBits, row));
        o[e] = from_f32<T>((static_cast<float>(code(e)) - zero) * __half2float(scales[grp * n + row]));
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
      for (int e = 0; e < kPerUnit; ++e)
        if (kb + e < k) dst[e] = o[e];
    }
  }
}

namespace {

template <typename T, int kBits, bool kNF4 = false>
Status launch_tiles(View out, const LinearWeight& w, cudaStream_t stream) {
  constexpr int kPerUnit = kUnitCodes<kBits>;
  const int64_t n = w.out_features, k = w.in_features;
  const int64_t units = (k + kPerUnit - 1) / kPerUnit;
  const int64_t tiles_n = (n + kDqTileN - 1) / kDqTileN, tiles_w = (units + kDqTileW - 1) / kDqTileW;
  if (tiles_n > 0x7fffffff || tiles_w > 65535)
    return invalid_argument("dequantize: [{}, {}] needs a {} x {} grid (too large)", n, k, tiles_n, tiles_w);
  const bool vec = k % kPerUnit == 0 && (k * static_cast<int64_t>(sizeof(T))) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out.data) % 16 == 0;
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(tiles_w));
  Nf4Scales nf4;
  if (kNF4) nf4 = {w.scales.as<const uint8_t>(), w.nested_scales.as<const float>(), w.nested_offset.as<const float>()};
  CUDA_RETURN_IF_ERROR(launch_kernel(dequantize_tile_kernel<T, kBits, kNF4>, grid, kDqThreads, 0, stream, out.as<T>(),
                                     w.qweight.as<const int32_t>(), kNF4 ? nullptr : w.scales.as<const __half>(),
                                     w.qzeros.as<const int32_t>(), w.g_idx.as<const int32_t>(), nf4, w.group_size, n, k,
                                     vec));
  return Status::ok();
}

Status check_dequantize(View out, const LinearWeight& w) {
  if (!w.quantized()) return invalid_argument("dequantize: format {} is not quantized", format_name(w.format));
  RETURN_IF_ERROR(expect_act("dequantize", "out", out));
  RETURN_IF_ERROR(expect_shape2("dequantize", "out", out, w.out_features, w.in_features));
  if (w.format == Format::kNF4) return check_nf4_weight_cuda("dequantize", w);
  RETURN_IF_ERROR(expect_cuda("dequantize", "qweight", w.qweight));
  RETURN_IF_ERROR(expect_cuda("dequantize", "scales", w.scales));
  RETURN_IF_ERROR(expect_cuda("dequantize", "qzeros", w.qzeros));
  if (w.g_idx.data != nullptr) RETURN_IF_ERROR(expect_cuda("dequantize", "g_idx", w.g_idx));
  return check_packed_shapes("dequantize", w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                             w.scales, w.qzeros, w.g_idx);
}

}  // namespace

Status check_nf4_weight_cuda(const char* op, const LinearWeight& w) {
  for (const auto& [name, v] : {std::pair<const char*, const View*>{"qweight", &w.qweight}, {"scales", &w.scales},
                                {"nested_scales", &w.nested_scales}, {"nested_offset", &w.nested_offset}})
    RETURN_IF_ERROR(expect_cuda(op, name, *v));
  const int64_t n = w.out_features, k = w.in_features;
  if (w.group_size <= 0) return invalid_argument("{} (nf4): block size {} (expected > 0)", op, w.group_size);
  const int64_t groups = quant_groups(w.group_size, k);
  const int64_t nested = (groups * n + kNF4NestedBlock - 1) / kNF4NestedBlock;
  auto expect = [op](const char* name, View v, DType dtype, Shape shape) -> Status {
    if (v.dtype != dtype || !(v.shape == shape))
      return invalid_argument("{} (nf4): {} is {} {}, expected {} {}", op, name, dtype_name(v.dtype), v.shape.str(),
                              dtype_name(dtype), shape.str());
    return Status::ok();
  };
  RETURN_IF_ERROR(expect("qweight", w.qweight, DType::kI32, Shape{packed_words(4, k), n}));
  RETURN_IF_ERROR(expect("scales", w.scales, DType::kU8, Shape{groups, n}));
  RETURN_IF_ERROR(expect("nested_scales", w.nested_scales, DType::kF32, Shape{nested}));
  return expect("nested_offset", w.nested_offset, DType::kF32, Shape{1});
}

Status dequantize_cuda(View out, const LinearWeight& w, cudaStream_t stream) {
  RETURN_IF_ERROR(check_dequantize(out, w));
  const int64_t total = w.out_features * w.in_features;
  if (total == 0) return Status::ok();
  return dispatch_act(out.dtype, "dequantize", [&](auto tag) -> Status {
    using T = decltype(tag);
    if (w.format == Format::kNF4) return launch_tiles<T, 4, true>(out, w, stream);
    switch (w.bits()) {
      case 8: return launch_tiles<T, 8>(out, w, stream);
      case 4: return launch_tiles<T, 4>(out, w, stream);
      case 3: return launch_tiles<T, 3>(out, w, stream);
      case 2: return launch_tiles<T, 2>(out, w, stream);
      default: return invalid_argument("dequantize: bits {} (expected 2, 3, 4 or 8)", w.bits());
    }
  });
}

}  // namespace compactor
