// CPU side of NF4 linears (backend/cpu/cpu_nf4.h): views, checks, the row-block dequantization and
// the fused GEMV for few rows.
// Test: build-*/tests/test_cpu_nf4.
#include "backend/cpu/cpu_nf4.h"

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_simd.h"

namespace compactor {

namespace {

constexpr int64_t kParallelMinWork = int64_t{1} << 16;
constexpr int kFusedMaxRows = 4;  // x rows per pass over the packed words (accumulator registers)

// ---- fused GEMV: SIMD lanes are output rows (as cpu_qmatmul.cpp's intN GEMV) ----
// One vector load takes word r of kRowLanes consecutive output rows (contiguous in qweight); each
// 4-bit field indexes the 16 NF4 levels, which fit one AVX-512 register (one permute per code;
// AVX2 permutes two halves of 8 and blends on bit 3). Each block's partial sums are scaled once by
// the rows' absmax'.
#if defined(__AVX512F__)
constexpr int kRowLanes = 16;
using IVec = __m512i;
using FVec = __m512;
struct Levels {
  __m512 all = _mm512_loadu_ps(kNF4Values);
};
inline IVec iload(const int32_t* p) { return _mm512_loadu_si512(p); }
inline FVec level(const Levels& t, IVec word, int shift) {
  return _mm512_permutexvar_ps(_mm512_and_si512(_mm512_srli_epi32(word, shift), _mm512_set1_epi32(15)), t.all);
}
inline FVec fzero() { return _mm512_setzero_ps(); }
inline FVec fset1(float v) { return _mm512_set1_ps(v); }
inline FVec fload(const float* p) { return _mm512_loadu_ps(p); }
inline FVec ffma(FVec a, FVec b, FVec c) { return _mm512_fmadd_ps(a, b, c); }
inline void fstore(float* p, FVec v) { _mm512_storeu_ps(p, v); }
#elif defined(__AVX2__)
constexpr int kRowLanes = 8;
using IVec = __m256i;
using FVec = __m256;
struct Levels {
  __m256 lo = _mm256_loadu_ps(kNF4Values), hi = _mm256_loadu_ps(kNF4Values + 8);
};
inline IVec iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline FVec level(const Levels& t, IVec word, int shift) {
  const __m256i idx = _mm256_and_si256(_mm256_srli_epi32(word, shift), _mm256_set1_epi32(15));
  const __m256 high = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // bit 3 -> sign bit (blendv's selector)
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, idx), _mm256_permutevar8x32_ps(t.hi, idx), high);
}
inline FVec fzero() { return _mm256_setzero_ps(); }
inline FVec fset1(float v) { return _mm256_set1_ps(v); }
inline FVec fload(const float* p) { return _mm256_loadu_ps(p); }
inline FVec ffma(FVec a, FVec b, FVec c) { return _mm256_fmadd_ps(a, b, c); }
inline void fstore(float* p, FVec v) { _mm256_storeu_ps(p, v); }
#else
constexpr int kRowLanes = 0;  // no fused path without AVX2
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
// y[m, n0 .. n0+kRowLanes) = x[m] · dq(w rows n0 ..)ᵀ for m < R. x: [R, K] f32; absmax: [G, kRowLanes]
// of these rows; y: row stride N.
template <int R>
void fused_rows(const NF4Ref& r, int64_t n0, const float* x, const float* absmax, float* y) {
  const int64_t n = r.out_features, k = r.in_features, words = k / 8, block_words = r.block_size / 8;
  const Levels levels;
  FVec acc[R];
  for (auto& a : acc) a = fzero();
  for (int64_t g = 0; g < r.blocks(); ++g) {
    FVec part[R];
    for (auto& a : part) a = fzero();
    for (int64_t w = g * block_words; w < std::min(words, (g + 1) * block_words); ++w) {
      const IVec word = iload(r.qweight + w * n + n0);
      const float* xk = x + w * 8;
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        const FVec c = level(levels, word, 4 * i);
        for (int m = 0; m < R; ++m) part[m] = ffma(c, fset1(xk[m * k + i]), part[m]);
      }
    }
    const FVec a = fload(absmax + g * kRowLanes);
    for (int m = 0; m < R; ++m) acc[m] = ffma(part[m], a, acc[m]);
  }
  for (int m = 0; m < R; ++m) fstore(y + m * n + n0, acc[m]);
}

void fused_block(const NF4Ref& r, int64_t n0, const float* x, int64_t rows, const float* absmax, float* y) {
  const int64_t k = r.in_features, n = r.out_features;
  for (int64_t m0 = 0; m0 < rows; m0 += kFusedMaxRows) {
    const float* xm = x + m0 * k;
    float* ym = y + m0 * n;
    switch (std::min<int64_t>(kFusedMaxRows, rows - m0)) {
      case 4: fused_rows<4>(r, n0, xm, absmax, ym); break;
      case 3: fused_rows<3>(r, n0, xm, absmax, ym); break;
      case 2: fused_rows<2>(r, n0, xm, absmax, ym); break;
      default: fused_rows<1>(r, n0, xm, absmax, ym); break;
    }
  }
}
#endif

}  // namespace

bool nf4_fused_eligible(const NF4Ref& r) {
  return kRowLanes > 0 && r.in_features % 8 == 0 && r.block_size % 8 == 0 && r.out_features >= kRowLanes;
}

int64_t nf4_fused_gemv(const NF4Ref& r, const float* x, int64_t rows, float* y) {
#if defined(__AVX512F__) || defined(__AVX2__)
  const int64_t n_blocks = r.out_features / kRowLanes;
#pragma omp parallel for schedule(dynamic, 4) if (r.out_features * r.in_features * rows >= kParallelMinWork)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    thread_local std::vector<float> absmax;  // [G, kRowLanes]
    absmax.resize(r.blocks() * kRowLanes);
    for (int64_t g = 0; g < r.blocks(); ++g)
      for (int l = 0; l < kRowLanes; ++l) absmax[g * kRowLanes + l] = r.absmax(blk * kRowLanes + l, g);
    fused_block(r, blk * kRowLanes, x, rows, absmax.data(), y);
  }
  return n_blocks * kRowLanes;
#else
  (void)r, (void)x, (void)rows, (void)y;
  return 0;
#endif
}

NF4Ref nf4_ref(const LinearWeight& w) {
  NF4Ref r;
  r.block_size = w.group_size;
  r.out_features = w.out_features;
  r.in_features = w.in_features;
  r.qweight = w.qweight.as<const int32_t>();
  r.scales = w.scales.as<const uint8_t>();
  r.nested_scales = w.nested_scales.as<const float>();
  r.nested_offset = w.nested_offset.as<const float>();
  return r;
}

LinearWeight linear_weight_of(const PackedNF4& p, View bias) {
  LinearWeight w;
  w.format = Format::kNF4;
  w.out_features = p.out_features;
  w.in_features = p.in_features;
  w.bias = bias;
  w.qweight = p.qweight.view();
  w.scales = p.scales.view();
  w.nested_scales = p.nested_scales.view();
  w.nested_offset = p.nested_offset.view();
  w.group_size = p.block_size;
  return w;
}

void check_nf4_weight(const char* op, const LinearWeight& w) {
  COMPACTOR_ASSERT(w.format == Format::kNF4, "{}: format {} is not nf4", op, format_name(w.format));
  const Status s = check_nf4_shapes(op, w.group_size, w.out_features, w.in_features, w.qweight, w.scales,
                                    w.nested_scales, w.nested_offset);
  COMPACTOR_ASSERT(s.is_ok(), "{}", s.message());
  COMPACTOR_ASSERT(w.qweight.device == Device::kCpu && w.scales.device == Device::kCpu &&
                       w.nested_scales.device == Device::kCpu && w.nested_offset.device == Device::kCpu,
                   "{}: nf4 weight is not in host memory", op);
}

void dequantize_nf4_rows(const NF4Ref& r, int64_t n0, int64_t nb, float* out) {
  const int64_t n = r.out_features, k = r.in_features, words = (k + 7) / 8;
  for (int64_t wi = 0; wi < words; ++wi) {
    const auto* src = reinterpret_cast<const uint32_t*>(r.qweight + wi * n + n0);
    const int64_t k0 = wi * 8;
    const int count = static_cast<int>(std::min<int64_t>(8, k - k0));
    for (int64_t j = 0; j < nb; ++j) {
      const uint32_t word = src[j];
      float* dst = out + j * k + k0;
      for (int i = 0; i < count; ++i) dst[i] = kNF4Values[(word >> (4 * i)) & 15u];
    }
  }
  const int64_t bs = r.block_size;
  for (int64_t j = 0; j < nb; ++j) {
    float* row = out + j * k;
    for (int64_t b = 0; b < r.blocks(); ++b) {
      const float a = r.absmax(n0 + j, b);
      const int64_t end = std::min(k, (b + 1) * bs);
#pragma omp simd
      for (int64_t col = b * bs; col < end; ++col) row[col] *= a;
    }
  }
}

}  // namespace compactor
