// Fast CPU matmul (GEMV for few rows, blocked convert + OpenBLAS sgemm for many); see cpu_matmul.h.
// Test: build/tests/test_cpu_ops; speed: build/bench/bench_cpu_ops.
#include "backend/cpu/cpu_matmul.h"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <string_view>
#include <vector>

#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/op_checks.h"

namespace compactor {

namespace {

constexpr int kTileN = 4;             // weight rows per GEMV tile: each x load feeds 4 FMAs
// Activation rows per GEMV tile: kTileN*kTileRows accumulators must fit the vector registers
// (32 with AVX-512, 16 with AVX2).
constexpr int kTileRows = simd::kLanes >= 16 ? 4 : 2;
constexpr int64_t kGemmBlockN = 128;  // weight rows converted to f32 per sgemm call
constexpr int64_t kGemmMinRowsSameWidth = 64;  // see matmul_gemm_min_rows()
constexpr int64_t kParallelMinWork = int64_t{1} << 16;  // multiply-adds below which threads cost more

// Keeps a pthreads OpenBLAS single-threaded while OpenMP threads each call sgemm on their own
// blocks (measured: interleaving OpenMP regions with OpenBLAS's own threads ran 2-6x slower on 2
// cores). An OpenMP OpenBLAS already runs single-threaded inside a parallel region, and there
// openblas_set_num_threads would change OpenMP's thread count, so it is left alone. Not safe for
// two threads calling matmul_gemm_cpu at once (the setting is global).
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

// sums[j*R + r] = x[r] · w[j] for NR weight rows w: [NR, k] of dtype W and R rows x: [R, ldx] f32.
template <DType W, int NR, int R>
void dot_tile(const void* w, int64_t k, const float* x, int64_t ldx, float* sums) {
  simd::Vec acc[NR][R];
  for (auto& row : acc)
    for (auto& a : row) a = simd::zero();
  int64_t i = 0;
  for (; i + simd::kLanes <= k; i += simd::kLanes) {
    simd::Vec xv[R];
    for (int r = 0; r < R; ++r) xv[r] = simd::load<DType::kF32>(x, r * ldx + i);
    for (int j = 0; j < NR; ++j) {
      const simd::Vec wv = simd::load<W>(w, j * k + i);
      for (int r = 0; r < R; ++r) acc[j][r] = simd::fmadd(wv, xv[r], acc[j][r]);
    }
  }
  for (int j = 0; j < NR; ++j)
    for (int r = 0; r < R; ++r) sums[j * R + r] = simd::reduce_add(acc[j][r]);
  for (; i < k; ++i)
    for (int j = 0; j < NR; ++j)
      for (int r = 0; r < R; ++r) sums[j * R + r] += simd::load1<W>(w, j * k + i) * x[r * ldx + i];
}

// y[r, n0+j] = x[r0+r] · w[n0+j] (+ bias) for the weight rows n0 .. n0+nr and all rows of x.
// w: [N, k] dtype W; x: [rows, k] f32; y: [rows, N] f32; bias: [N] f32 or nullptr
template <DType W>
void gemv_weight_tile(const void* w, int64_t n0, int nr, int64_t n_out, int64_t k, const float* x, int64_t rows,
                      const float* bias, float* y) {
  const auto* w_tile = static_cast<const uint8_t*>(w) + n0 * k * dtype_size(W);
  float sums[kTileN * kTileRows];
  for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
    const int nrows = static_cast<int>(std::min<int64_t>(kTileRows, rows - r0));
    const float* xr = x + r0 * k;
    if (nr == kTileN) {
      switch (nrows) {
        case 4: dot_tile<W, kTileN, 4>(w_tile, k, xr, k, sums); break;
        case 3: dot_tile<W, kTileN, 3>(w_tile, k, xr, k, sums); break;
        case 2: dot_tile<W, kTileN, 2>(w_tile, k, xr, k, sums); break;
        default: dot_tile<W, kTileN, 1>(w_tile, k, xr, k, sums); break;
      }
    } else {
      for (int j = 0; j < nr; ++j)
        for (int r = 0; r < nrows; ++r)
          dot_tile<W, 1, 1>(w_tile + j * k * dtype_size(W), k, xr + r * k, k, &sums[j * nrows + r]);
    }
    for (int j = 0; j < nr; ++j)
      for (int r = 0; r < nrows; ++r)
        y[(r0 + r) * n_out + n0 + j] = sums[j * nrows + r] + (bias ? bias[n0 + j] : 0.f);
  }
}

template <DType W>
void gemv(View out, View x, const LinearWeight& w, const float* bias) {
  const int64_t n_out = w.out_features, k = w.in_features, rows = x.rows();
  const int64_t n_tiles = (n_out + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(dynamic, 16) if (n_out * k * rows >= kParallelMinWork)
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    const int nr = static_cast<int>(std::min<int64_t>(kTileN, n_out - tile * kTileN));
    gemv_weight_tile<W>(w.weight.data, tile * kTileN, nr, n_out, k, x.as<const float>(), rows, bias,
                        out.as<float>());
  }
}

// Multiplies x by the weight rows n0 .. n0+nb, converted to f32 in `buffer` unless already f32.
// x: [T, k] f32; y: [T, N] f32; buffer: [>= nb*k]
template <DType W>
void gemm_block(const void* w, int64_t n0, int64_t nb, int64_t n_out, int64_t k, const float* x, int64_t rows,
                const float* bias, float* y, std::vector<float>& buffer) {
  const float* wf;
  if constexpr (W == DType::kF32) {
    wf = static_cast<const float*>(w) + n0 * k;
  } else {
    if (buffer.size() < static_cast<size_t>(nb * k)) buffer.resize(nb * k);
    simd::convert<W>(static_cast<const uint16_t*>(w) + n0 * k, nb * k, buffer.data());
    wf = buffer.data();
  }
  float beta = 0.f;
  if (bias) {
    for (int64_t r = 0; r < rows; ++r) std::copy(bias + n0, bias + n0 + nb, y + r * n_out + n0);
    beta = 1.f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(nb),
              static_cast<int>(k), 1.f, x, static_cast<int>(k), wf, static_cast<int>(k), beta, y + n0,
              static_cast<int>(n_out));
}

template <DType W>
void gemm(View out, View x, const LinearWeight& w, const float* bias) {
  const int64_t n_out = w.out_features, k = w.in_features;
  const int64_t n_blocks = (n_out + kGemmBlockN - 1) / kGemmBlockN;
  SingleThreadedBlas single_threaded_blas;
#pragma omp parallel
  {
    thread_local std::vector<float> buffer;
#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t n0 = blk * kGemmBlockN;
      gemm_block<W>(w.weight.data, n0, std::min(kGemmBlockN, n_out - n0), n_out, k, x.as<const float>(), x.rows(),
                    bias, out.as<float>(), buffer);
    }
  }
}

using MatmulKernel = void (*)(View, View, const LinearWeight&, const float*);

MatmulKernel gemv_for(Format f) {
  switch (f) {
    case Format::kF32: return gemv<DType::kF32>;
    case Format::kF16: return gemv<DType::kF16>;
    case Format::kBF16: return gemv<DType::kBF16>;
    default: break;  // quantized formats: cpu_qmatmul.h
  }
  COMPACTOR_ASSERT(false, "matmul: no CPU GEMV for format #{}", static_cast<int>(f));
}

MatmulKernel gemm_for(Format f) {
  switch (f) {
    case Format::kF32: return gemm<DType::kF32>;
    case Format::kF16: return gemm<DType::kF16>;
    case Format::kBF16: return gemm<DType::kBF16>;
    default: break;  // quantized formats: cpu_qmatmul.h
  }
  COMPACTOR_ASSERT(false, "matmul: no CPU GEMM for format #{}", static_cast<int>(f));
}

void check_cpu_matmul(View out, View x, const LinearWeight& w) {
  check_matmul(out, x, w);
  COMPACTOR_ASSERT(out.dtype == DType::kF32 && x.dtype == DType::kF32, "matmul (cpu): out {} and x {} must be f32",
                   dtype_name(out.dtype), dtype_name(x.dtype));
}

std::vector<float> bias_f32(const LinearWeight& w) {
  std::vector<float> bias;
  if (w.bias.data == nullptr) return bias;
  bias.resize(w.out_features);
  convert_to_f32(w.bias.data, w.bias.dtype, w.out_features, bias.data());
  return bias;
}

}  // namespace

void matmul_gemv_cpu(View out, View x, const LinearWeight& w) {
  check_cpu_matmul(out, x, w);
  const std::vector<float> bias = bias_f32(w);
  gemv_for(w.format)(out, x, w, bias.empty() ? nullptr : bias.data());
}

void matmul_gemm_cpu(View out, View x, const LinearWeight& w) {
  check_cpu_matmul(out, x, w);
  const std::vector<float> bias = bias_f32(w);
  gemm_for(w.format)(out, x, w, bias.empty() ? nullptr : bias.data());
}

int64_t matmul_gemm_min_rows() {
  static const int64_t rows = [] {
    if (simd::kLanes < 16) return kGemmMinRowsSameWidth;
    const std::string_view core = openblas_get_corename();
    const bool avx512_blas = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
    return avx512_blas ? kGemmMinRowsSameWidth : std::numeric_limits<int64_t>::max();
  }();
  return rows;
}

void matmul_cpu(View out, View x, const LinearWeight& w) {
  if (x.rows() >= matmul_gemm_min_rows()) {
    matmul_gemm_cpu(out, x, w);
  } else {
    matmul_gemv_cpu(out, x, w);
  }
}

}  // namespace compactor
