// CPU matmul with packed intN weights: reference (whole-weight dequantize + matmul_ref), the fused
// GEMV for few rows, and the blocked path (per-thread f32 blocks of output rows, SIMD dots or
// sgemm) for the rest; see cpu_qmatmul.h.
// Test: build-*/tests/test_cpu_qmatmul.
#include "backend/cpu/cpu_qmatmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/ops_ref.h"

namespace compactor {

namespace {

constexpr int64_t kBlockBytes = int64_t{256} << 10;  // f32 block per thread: stays in L2
constexpr int64_t kMaxBlockRows = 128;
constexpr int64_t kGemmMinRows = 8;  // blocked path: rows of x from which sgemm beats the dots
constexpr int64_t kParallelMinWork = int64_t{1} << 16;
constexpr int kDotRows = 4;                          // x rows per pass over a dequantized weight row

// ---- fused GEMV: SIMD lanes are output rows ----
// qweight is [K*bits/32, N] row-major, so one vector load takes word r of kRowLanes consecutive
// output rows; shifting and masking it yields the codes of input k = r*32/bits + i for all of them
// at once, which multiply the broadcast x[k]. Zero points are subtracted in integers (exact) and
// each group's sum is scaled once. Needs whole words per group (and per K) and no act-order; 3-bit
// codes straddle words and take the blocked path.
#if defined(__AVX512F__)
constexpr int kRowLanes = 16;
using IVec = __m512i;
using FVec = __m512;
inline IVec iload(const int32_t* p) { return _mm512_loadu_si512(p); }
inline IVec iset1(int v) { return _mm512_set1_epi32(v); }
inline IVec iand(IVec a, IVec b) { return _mm512_and_si512(a, b); }
inline IVec isub(IVec a, IVec b) { return _mm512_sub_epi32(a, b); }
template <int S> inline IVec ishr(IVec v) { return _mm512_srli_epi32(v, S); }
inline FVec to_float(IVec v) { return _mm512_cvtepi32_ps(v); }
inline FVec fzero() { return _mm512_setzero_ps(); }
inline FVec fset1(float v) { return _mm512_set1_ps(v); }
inline FVec ffma(FVec a, FVec b, FVec c) { return _mm512_fmadd_ps(a, b, c); }
inline FVec fload_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline void fstore(float* p, FVec v) { _mm512_storeu_ps(p, v); }
#elif defined(__AVX2__)
constexpr int kRowLanes = 8;
using IVec = __m256i;
using FVec = __m256;
inline IVec iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline IVec iset1(int v) { return _mm256_set1_epi32(v); }
inline IVec iand(IVec a, IVec b) { return _mm256_and_si256(a, b); }
inline IVec isub(IVec a, IVec b) { return _mm256_sub_epi32(a, b); }
template <int S> inline IVec ishr(IVec v) { return _mm256_srli_epi32(v, S); }
inline FVec to_float(IVec v) { return _mm256_cvtepi32_ps(v); }
inline FVec fzero() { return _mm256_setzero_ps(); }
inline FVec fset1(float v) { return _mm256_set1_ps(v); }
inline FVec ffma(FVec a, FVec b, FVec c) { return _mm256_fmadd_ps(a, b, c); }
inline FVec fload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void fstore(float* p, FVec v) { _mm256_storeu_ps(p, v); }
#else
constexpr int kRowLanes = 0;  // no fused path without AVX2
#endif
constexpr int kFusedMaxRows = 4;  // x rows per pass over the packed words (accumulator registers)

// The fused int4 GEMV ran as fast as the dense bf16 GEMV at 1..256 rows (4096², AVX-512 AMD EPYC,
// 2 cores), so it is used wherever the dense matmul would use its GEMV.
bool fused_eligible(const PackedRef& p, int64_t rows) {
  if (kRowLanes == 0 || rows >= matmul_gemm_min_rows() || p.g_idx != nullptr || 32 % p.bits != 0) return false;
  const int per = 32 / p.bits;
  return p.in_features % per == 0 && p.group_size % per == 0 && p.out_features >= kRowLanes;
}

#if defined(__AVX512F__) || defined(__AVX2__)
// y[m, n0 .. n0+kRowLanes) = x[m] · dq(w rows n0 ..)ᵀ for m < R. x: [R, K] f32 (row stride K);
// zeros: [G, kRowLanes] i32 of these rows; y: row stride N.
template <int BITS, int R>
void fused_rows(const PackedRef& p, int64_t n0, const float* x, const int32_t* zeros, float* y) {
  constexpr int kPer = 32 / BITS;
  const int64_t n = p.out_features, k = p.in_features, groups = p.groups();
  const int64_t words = k / kPer, group_words = p.group_size == 0 ? words : p.group_size / kPer;
  const IVec mask = iset1((1 << BITS) - 1);
  FVec acc[R];
  for (auto& a : acc) a = fzero();
  for (int64_t g = 0; g < groups; ++g) {
    const IVec zero = iload(zeros + g * kRowLanes);
    FVec part[R];
    for (auto& a : part) a = fzero();
    for (int64_t r = g * group_words; r < std::min(words, (g + 1) * group_words); ++r) {
      IVec word = iload(p.qweight + r * n + n0);
      const float* xk = x + r * kPer;
#pragma GCC unroll 16
      for (int i = 0; i < kPer; ++i) {
        const FVec c = to_float(isub(iand(word, mask), zero));
        word = ishr<BITS>(word);
        for (int m = 0; m < R; ++m) part[m] = ffma(c, fset1(xk[m * k + i]), part[m]);
      }
    }
    const FVec scale = fload_f16(p.scales + g * n + n0);
    for (int m = 0; m < R; ++m) acc[m] = ffma(part[m], scale, acc[m]);
  }
  for (int m = 0; m < R; ++m) fstore(y + m * n + n0, acc[m]);
}

template <int BITS>
void fused_block(const PackedRef& p, int64_t n0, const float* x, int64_t rows, const int32_t* zeros, float* y) {
  const int64_t k = p.in_features, n = p.out_features;
  for (int64_t m0 = 0; m0 < rows; m0 += kFusedMaxRows) {
    const float* xm = x + m0 * k;
    float* ym = y + m0 * n;
    switch (std::min<int64_t>(kFusedMaxRows, rows - m0)) {
      case 4: fused_rows<BITS, 4>(p, n0, xm, zeros, ym); break;
      case 3: fused_rows<BITS, 3>(p, n0, xm, zeros, ym); break;
      case 2: fused_rows<BITS, 2>(p, n0, xm, zeros, ym); break;
      default: fused_rows<BITS, 1>(p, n0, xm, zeros, ym); break;
    }
  }
}

// Zero points of rows n0 .. n0+kRowLanes: zeros: [G, kRowLanes]
void unpack_zeros(const PackedRef& p, int64_t n0, int32_t* zeros) {
  const int64_t zero_words = packed_words(p.bits, p.out_features);
  for (int64_t g = 0; g < p.groups(); ++g)
    for (int l = 0; l < kRowLanes; ++l)
      zeros[g * kRowLanes + l] = static_cast<int32_t>(packed_value(p.qzeros + g * zero_words, 1, p.bits, n0 + l));
}

// Every whole kRowLanes block of output rows; returns the first row left for the blocked path.
int64_t fused_gemv(const PackedRef& p, const float* x, int64_t rows, float* y) {
  const int64_t n_blocks = p.out_features / kRowLanes;
#pragma omp parallel for schedule(dynamic, 4) if (p.out_features * p.in_features * rows >= kParallelMinWork)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    thread_local std::vector<int32_t> zeros;
    zeros.resize(p.groups() * kRowLanes);
    unpack_zeros(p, blk * kRowLanes, zeros.data());
    switch (p.bits) {
      case 2: fused_block<2>(p, blk * kRowLanes, x, rows, zeros.data(), y); break;
      case 4: fused_block<4>(p, blk * kRowLanes, x, rows, zeros.data(), y); break;
      default: fused_block<8>(p, blk * kRowLanes, x, rows, zeros.data(), y); break;
    }
  }
  return n_blocks * kRowLanes;
}
#else
int64_t fused_gemv(const PackedRef&, const float*, int64_t, float*) { return 0; }
#endif

// Same policy as cpu_matmul.cpp: a pthreads OpenBLAS runs single-threaded while OpenMP threads
// each call sgemm on their own blocks; an OpenMP OpenBLAS is left alone.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_parallel() == 1 ? openblas_get_num_threads() : 1) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

// Codes of output rows n0 .. n0+nb as floats: out: [nb, K]. 2/4/8 bits: whole codes per word.
void unpack_codes_block(const PackedRef& p, int64_t n0, int64_t nb, float* out) {
  const int64_t n = p.out_features, k = p.in_features;
  const int bits = p.bits;
  if (32 % bits != 0) {
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t col = 0; col < k; ++col)
        out[j * k + col] = static_cast<float>(packed_value(p.qweight + n0 + j, n, bits, col));
    return;
  }
  const int per = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const int64_t words = packed_words(bits, k);
  for (int64_t r = 0; r < words; ++r) {
    const auto* src = reinterpret_cast<const uint32_t*>(p.qweight + r * n + n0);
    const int64_t k0 = r * per;
    const int count = static_cast<int>(std::min<int64_t>(per, k - k0));
    for (int64_t j = 0; j < nb; ++j) {
      const uint32_t word = src[j];
      float* dst = out + j * k + k0;
      for (int i = 0; i < count; ++i) dst[i] = static_cast<float>((word >> (i * bits)) & mask);
    }
  }
}

// In place on w: [nb, K] codes -> (code - z) * s for output rows n0 .. n0+nb.
void apply_affine_block(const PackedRef& p, int64_t n0, int64_t nb, float* w) {
  const int64_t n = p.out_features, k = p.in_features, groups = p.groups();
  const int64_t zero_words = packed_words(p.bits, n);
  const int64_t gs = p.group_size == 0 ? k : p.group_size;
  thread_local std::vector<float> zs, ss;  // [G] of the current row
  zs.resize(groups);
  ss.resize(groups);
  for (int64_t j = 0; j < nb; ++j) {
    for (int64_t g = 0; g < groups; ++g) {
      zs[g] = static_cast<float>(packed_value(p.qzeros + g * zero_words, 1, p.bits, n0 + j));
      ss[g] = f16_to_f32(p.scales[g * n + n0 + j]);
    }
    float* row = w + j * k;
    if (p.g_idx) {
      for (int64_t col = 0; col < k; ++col) row[col] = (row[col] - zs[p.g_idx[col]]) * ss[p.g_idx[col]];
      continue;
    }
    for (int64_t g = 0; g < groups; ++g) {
      const float z = zs[g], s = ss[g];
      const int64_t end = std::min(k, (g + 1) * gs);
#pragma omp simd
      for (int64_t col = g * gs; col < end; ++col) row[col] = (row[col] - z) * s;
    }
  }
}

// y[r, n0+j] = x[r] · w[j] for the block's rows; x: [rows, K]; w: [nb, K]; y: [rows, N]
void dots_block(const float* w, int64_t nb, int64_t k, const float* x, int64_t rows, int64_t n0, int64_t n_out,
                float* y) {
  for (int64_t j = 0; j < nb; ++j) {
    const float* wj = w + j * k;
    for (int64_t r0 = 0; r0 < rows; r0 += kDotRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kDotRows, rows - r0));
      simd::Vec acc[kDotRows] = {simd::zero(), simd::zero(), simd::zero(), simd::zero()};
      int64_t i = 0;
      for (; i + simd::kLanes <= k; i += simd::kLanes) {
        const simd::Vec wv = simd::load<DType::kF32>(wj, i);
        for (int r = 0; r < nr; ++r) acc[r] = simd::fmadd(wv, simd::load<DType::kF32>(x, (r0 + r) * k + i), acc[r]);
      }
      for (int r = 0; r < nr; ++r) {
        float sum = simd::reduce_add(acc[r]);
        for (int64_t t = i; t < k; ++t) sum += wj[t] * x[(r0 + r) * k + t];
        y[(r0 + r) * n_out + n0 + j] = sum;
      }
    }
  }
}

void gemm_block(const float* w, int64_t nb, int64_t k, const float* x, int64_t rows, int64_t n0, int64_t n_out,
                float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(nb),
              static_cast<int>(k), 1.f, x, static_cast<int>(k), w, static_cast<int>(k), 0.f, y + n0,
              static_cast<int>(n_out));
}

int64_t block_rows(int64_t k) {
  const int64_t rows = kBlockBytes / (4 * std::max<int64_t>(k, 1));
  return std::clamp<int64_t>(rows / 4 * 4, 4, kMaxBlockRows);
}

void add_bias(View out, const LinearWeight& w) {
  if (w.bias.data == nullptr) return;
  std::vector<float> bias(w.out_features);
  convert_to_f32(w.bias.data, w.bias.dtype, w.out_features, bias.data());
  float* y = out.as<float>();
  for (int64_t r = 0; r < out.rows(); ++r)
    for (int64_t j = 0; j < w.out_features; ++j) y[r * w.out_features + j] += bias[j];
}

void check_qmatmul(View out, View x, const LinearWeight& w) {
  check_quantized_weight("matmul", w);
  COMPACTOR_ASSERT(out.dtype == DType::kF32 && x.dtype == DType::kF32 && out.device == Device::kCpu &&
                       x.device == Device::kCpu,
                   "matmul (cpu, {}): out {} and x {} must be f32 on the cpu", format_name(w.format),
                   dtype_name(out.dtype), dtype_name(x.dtype));
  COMPACTOR_ASSERT(x.cols() == w.in_features && out.cols() == w.out_features && out.rows() == x.rows(),
                   "matmul ({}): out {} = x {} · wᵀ [N={}, K={}]", format_name(w.format), out.shape.str(),
                   x.shape.str(), w.out_features, w.in_features);
  if (w.bias.data != nullptr)
    COMPACTOR_ASSERT(w.bias.numel() == w.out_features && w.bias.device == Device::kCpu, "matmul: bias {} vs N={}",
                     w.bias.shape.str(), w.out_features);
}

// Output rows first_row .. N through per-thread f32 blocks (dots or sgemm); fill(n0, nb, buffer)
// writes the dequantized rows n0 .. n0+nb as [nb, K] f32.
template <class Fill>
void blocked_rows(int64_t n_out, int64_t k, int64_t first_row, View x, View out, const Fill& fill) {
  const int64_t rows = x.rows();
  const int64_t nb_max = block_rows(k);
  const int64_t n_blocks = (n_out - first_row + nb_max - 1) / nb_max;
  const bool use_gemm = rows >= kGemmMinRows;
  SingleThreadedBlas single_threaded_blas;
#pragma omp parallel for schedule(dynamic) if ((n_out - first_row) * k * std::max<int64_t>(rows, 4) >= kParallelMinWork)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    thread_local std::vector<float> buffer;
    const int64_t n0 = first_row + blk * nb_max, nb = std::min(nb_max, n_out - n0);
    buffer.resize(nb_max * k);
    fill(n0, nb, buffer.data());
    if (use_gemm) {
      gemm_block(buffer.data(), nb, k, x.as<const float>(), rows, n0, n_out, out.as<float>());
    } else {
      dots_block(buffer.data(), nb, k, x.as<const float>(), rows, n0, n_out, out.as<float>());
    }
  }
}

void blocked_matmul(const PackedRef& p, int64_t first_row, View x, View out) {
  blocked_rows(p.out_features, p.in_features, first_row, x, out, [&](int64_t n0, int64_t nb, float* buffer) {
    unpack_codes_block(p, n0, nb, buffer);
    apply_affine_block(p, n0, nb, buffer);
  });
}

// NF4 rows first_row .. N through the blocked path (codebook lookup and double-quantized scales per
// row block).
void nf4_matmul(const LinearWeight& w, int64_t first_row, View x, View out) {
  const NF4Ref r = nf4_ref(w);
  blocked_rows(r.out_features, r.in_features, first_row, x, out,
               [&](int64_t n0, int64_t nb, float* buffer) { dequantize_nf4_rows(r, n0, nb, buffer); });
}

// NF4: the fused GEMV where the dense matmul would take its GEMV, the blocked path for the rest.
void nf4_matmul_cpu(View out, View x, const LinearWeight& w) {
  check_qmatmul(out, x, w);
  if (x.rows() == 0 || w.out_features == 0) return;
  const NF4Ref r = nf4_ref(w);
  int64_t first_row = 0;
  if (x.rows() < matmul_gemm_min_rows() && nf4_fused_eligible(r))
    first_row = nf4_fused_gemv(r, x.as<const float>(), x.rows(), out.as<float>());
  if (first_row < w.out_features) nf4_matmul(w, first_row, x, out);
  add_bias(out, w);
}

}  // namespace

PackedRef packed_ref(const LinearWeight& w) {
  COMPACTOR_ASSERT(format_is_int(w.format), "packed_ref: format {} is not intN", format_name(w.format));
  PackedRef p;
  p.bits = w.bits();
  p.group_size = w.group_size;
  p.out_features = w.out_features;
  p.in_features = w.in_features;
  p.qweight = w.qweight.as<const int32_t>();
  p.scales = w.scales.as<const uint16_t>();
  p.qzeros = w.qzeros.as<const int32_t>();
  p.g_idx = w.g_idx.as<const int32_t>();
  return p;
}

LinearWeight linear_weight_of(const PackedLinear& p, View bias) {
  LinearWeight w;
  w.format = p.format;
  w.out_features = p.out_features;
  w.in_features = p.in_features;
  w.bias = bias;
  w.qweight = p.qweight.view();
  w.scales = p.scales.view();
  w.qzeros = p.qzeros.view();
  if (p.g_idx.defined()) w.g_idx = p.g_idx.view();
  w.group_size = p.spec.group_size;
  return w;
}

void check_quantized_weight(const char* op, const LinearWeight& w) {
  COMPACTOR_ASSERT(w.quantized(), "{}: format {} is not quantized", op, format_name(w.format));
  if (w.format == Format::kNF4) return check_nf4_weight(op, w);
  const Status s = check_packed_shapes(op, w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                                       w.scales, w.qzeros, w.g_idx);
  COMPACTOR_ASSERT(s.is_ok(), "{}", s.message());
  COMPACTOR_ASSERT(w.qweight.device == Device::kCpu && w.scales.device == Device::kCpu &&
                       w.qzeros.device == Device::kCpu && w.g_idx.device == Device::kCpu,
                   "{}: packed weight is not in host memory", op);
}

void dequantize_linear_ref(const LinearWeight& w, float* out) {
  check_quantized_weight("dequantize", w);
  if (w.format == Format::kNF4) return dequantize_nf4_ref(nf4_ref(w), out);
  dequantize_ref(packed_ref(w), out);
}

void matmul_quantized_ref(View out, View x, const LinearWeight& w) {
  check_qmatmul(out, x, w);
  std::vector<float> dense(w.out_features * w.in_features);
  dequantize_linear_ref(w, dense.data());
  LinearWeight d;
  d.format = Format::kF32;
  d.out_features = w.out_features;
  d.in_features = w.in_features;
  d.weight = View{dense.data(), Shape{w.out_features, w.in_features}, DType::kF32, Device::kCpu};
  d.bias = w.bias;
  matmul_ref(out, x, d);
}

void matmul_quantized_blocked_cpu(View out, View x, const LinearWeight& w) {
  check_qmatmul(out, x, w);
  if (x.rows() == 0 || w.out_features == 0) return;
  if (w.format == Format::kNF4) {
    nf4_matmul(w, 0, x, out);
  } else {
    blocked_matmul(packed_ref(w), 0, x, out);
  }
  add_bias(out, w);
}

void matmul_quantized_cpu(View out, View x, const LinearWeight& w) {
  if (w.format == Format::kNF4) return nf4_matmul_cpu(out, x, w);
  check_qmatmul(out, x, w);
  const PackedRef p = packed_ref(w);
  if (x.rows() == 0 || w.out_features == 0) return;
  int64_t first_row = 0;
  if (fused_eligible(p, x.rows())) first_row = fused_gemv(p, x.as<const float>(), x.rows(), out.as<float>());
  if (first_row < w.out_features) blocked_matmul(p, first_row, x, out);
  add_bias(out, w);
}

}  // namespace compactor
