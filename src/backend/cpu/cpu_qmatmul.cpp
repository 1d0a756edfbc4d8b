// CPU matmul with packed intN weights: reference (whole-weight dequantize + matmul_ref) and the
// blocked fast path (per-thread f32 blocks of output rows, SIMD dots or sgemm); see cpu_qmatmul.h.
// Test: build-*/tests/test_cpu_qmatmul.
#include "backend/cpu/cpu_qmatmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/ops_ref.h"

namespace compactor {

namespace {

constexpr int64_t kBlockBytes = int64_t{256} << 10;  // f32 block per thread: stays in L2
constexpr int64_t kMaxBlockRows = 128;
constexpr int64_t kGemmMinRows = 8;                  // rows of x from which sgemm beats the dots
constexpr int64_t kParallelMinWork = int64_t{1} << 16;
constexpr int kDotRows = 4;                          // x rows per pass over a dequantized weight row

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

}  // namespace

PackedRef packed_ref(const LinearWeight& w) {
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
  const Status s = check_packed_shapes(op, w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                                       w.scales, w.qzeros, w.g_idx);
  COMPACTOR_ASSERT(s.is_ok(), "{}", s.message());
  COMPACTOR_ASSERT(w.qweight.device == Device::kCpu && w.scales.device == Device::kCpu &&
                       w.qzeros.device == Device::kCpu && w.g_idx.device == Device::kCpu,
                   "{}: packed weight is not in host memory", op);
}

void dequantize_linear_ref(const LinearWeight& w, float* out) {
  check_quantized_weight("dequantize", w);
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

void matmul_quantized_cpu(View out, View x, const LinearWeight& w) {
  check_qmatmul(out, x, w);
  const PackedRef p = packed_ref(w);
  const int64_t n_out = w.out_features, k = w.in_features, rows = x.rows();
  const int64_t nb_max = block_rows(k);
  const int64_t n_blocks = (n_out + nb_max - 1) / nb_max;
  if (rows == 0 || n_out == 0) return;
  const bool use_gemm = rows >= kGemmMinRows;
  SingleThreadedBlas single_threaded_blas;
#pragma omp parallel for schedule(dynamic) if (n_out * k * std::max<int64_t>(rows, 4) >= kParallelMinWork)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    thread_local std::vector<float> buffer;
    const int64_t n0 = blk * nb_max, nb = std::min(nb_max, n_out - n0);
    buffer.resize(nb_max * k);
    unpack_codes_block(p, n0, nb, buffer.data());
    apply_affine_block(p, n0, nb, buffer.data());
    if (use_gemm) {
      gemm_block(buffer.data(), nb, k, x.as<const float>(), rows, n0, n_out, out.as<float>());
    } else {
      dots_block(buffer.data(), nb, k, x.as<const float>(), rows, n0, n_out, out.as<float>());
    }
  }
  add_bias(out, w);
}

}  // namespace compactor
