// GPTQ, RTN and the output-error measurement on the GPU (gptq_cuda.h). The host decides what needs
// no arithmetic on K² values (dead inputs, act-order permutation, damping from diag H, retries);
// the device does the rest. Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include "compress/gptq_cuda.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "compress/cuda_context.h"
#include "compress/quant_grid.h"

#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/gptq_grid.cuh"
#include "backend/cuda/gptq_sweep.cuh"
#include "backend/cuda/hessian_accumulate.cuh"
#endif

namespace compactor {

#ifdef COMPACTOR_HAS_CUDA

#define CUSOLVER_RETURN_IF_ERROR(call)                                                              \
  do {                                                                                              \
    cusolverStatus_t _st = (call);                                                                  \
    if (_st != CUSOLVER_STATUS_SUCCESS) return internal_error("cuSOLVER error {} in {}", int(_st), #call); \
  } while (0)

namespace {

Status internal_error_status(const std::string& msg) { return Status(StatusCode::kInternal, msg); }
template <typename... Args>
Status internal_error(fmt::format_string<Args...> f, Args&&... args) {
  return internal_error_status(fmt::format(f, std::forward<Args>(args)...));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Status expect_f32_matrix(const View& v, int64_t rows, int64_t cols, const char* what, const std::string& module) {
  if (v.device != Device::kCuda || v.dtype != DType::kF32 || v.numel() != rows * cols || v.data == nullptr)
    return invalid_argument("{}: {} must be [{}, {}] f32 on the GPU, got {} {} on {}", module, what, rows, cols,
                            v.shape.str(), dtype_name(v.dtype), device_name(v.device));
  return Status::ok();
}

template <typename T>
Status to_host(CudaCompressContext& ctx, T* dst, const void* src, size_t count) {
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream()));
  return Status::ok();
}

using Slot = CudaCompressContext::Slot;

// A device copy of host[0 .. count) in scratch `slot` (a 1-element placeholder when count is 0).
View upload_bytes(CudaCompressContext& ctx, Slot slot, const void* host, int64_t count, DType dtype) {
  View v = ctx.scratch(slot, Shape{std::max<int64_t>(count, 1)}, dtype);
  if (count > 0) ctx.backend().copy_from_host(host, v);
  return v;
}

// What the host decides from diag H: dead inputs, sweep order, damping (obs_solver.cpp's rules).
struct HessianPlan {
  std::vector<int32_t> perm;
  std::vector<uint8_t> dead;
  int64_t dead_count = 0;
  double mean_diag = 0;
};

Result<HessianPlan> plan_hessian(CudaCompressContext& ctx, const float* gram, int64_t k, float scale, bool act_order,
                                 const std::string& module) {
  std::vector<float> diag(k);
  CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(diag.data(), sizeof(float), gram, (k + 1) * sizeof(float), sizeof(float), k,
                                         cudaMemcpyDeviceToHost, ctx.stream()));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream()));
  HessianPlan plan;
  plan.dead.assign(k, 0);
  for (int64_t i = 0; i < k; ++i) {
    diag[i] *= scale;  // InputStats::hessian's rounding
    if (diag[i] == 0.f) {
      plan.dead[i] = 1;
      ++plan.dead_count;
    }
  }
  plan.perm.resize(k);
  std::iota(plan.perm.begin(), plan.perm.end(), 0);
  auto fixed = [&](int32_t i) { return diag[i] == 0.f ? 1.f : diag[i]; };
  if (act_order)
    std::stable_sort(plan.perm.begin(), plan.perm.end(), [&](int32_t a, int32_t b) { return fixed(a) > fixed(b); });
  for (int64_t i = 0; i < k; ++i) plan.mean_diag += fixed(plan.perm[i]);
  plan.mean_diag /= static_cast<double>(k);
  if (!std::isfinite(plan.mean_diag))
    return invalid_argument("{}: the calibration inputs contain NaN or Inf (Hessian diagonal mean {})", module,
                            plan.mean_diag);
  return plan;
}

Result<int> device_info(CudaCompressContext& ctx, const int* info) {
  int host = 0;
  RETURN_IF_ERROR(to_host(ctx, &host, info, 1));
  return host;
}

// u: [K, K] f32 <- the upper Cholesky factor of (Hp)⁻¹ (row-major upper triangle), from hp in place.
// False when Hp is not positive definite.
Result<bool> inverse_cholesky_upper(CudaCompressContext& ctx, float* hp, int64_t k) {
  const int n = static_cast<int>(k);
  int lwork_f = 0, lwork_i = 0;
  const cublasFillMode_t lower = CUBLAS_FILL_MODE_LOWER;
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSpotrf_bufferSize(ctx.cusolver(), lower, n, hp, n, &lwork_f));
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSpotri_bufferSize(ctx.cusolver(), lower, n, hp, n, &lwork_i));
  View work = ctx.scratch(Slot::kSolverWork, Shape{std::max({lwork_f, lwork_i, 1})}, DType::kF32);
  View info = ctx.scratch(Slot::kInfo, Shape{1}, DType::kI32);
  const int lwork = std::max({lwork_f, lwork_i, 1});
  // H is symmetric: row- and column-major agree. Column-major lower factors are row-major upper.
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSpotrf(ctx.cusolver(), lower, n, hp, n, work.as<float>(), lwork, info.as<int>()));
  ASSIGN_OR_RETURN(int st, device_info(ctx, info.as<int>()));
  if (st != 0) return false;
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSpotri(ctx.cusolver(), lower, n, hp, n, work.as<float>(), lwork, info.as<int>()));
  ASSIGN_OR_RETURN(st, device_info(ctx, info.as<int>()));
  if (st != 0) return false;
  RETURN_IF_ERROR(symmetrize_lower_cuda(hp, k, ctx.stream()));
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSpotrf(ctx.cusolver(), lower, n, hp, n, work.as<float>(), lwork, info.as<int>()));
  ASSIGN_OR_RETURN(st, device_info(ctx, info.as<int>()));
  return st == 0;
}

// Damps, permutes and factors; raises the damping tenfold while the factorization fails.
Result<ObsStats> damped_factor(CudaCompressContext& ctx, const HessianPlan& plan, const float* gram, float scale,
                               const int32_t* perm_dev, int64_t k, float percdamp, float* u,
                               const std::string& module) {
  ObsStats stats;
  stats.dead_columns = plan.dead_count;
  float damp = static_cast<float>(std::max(percdamp, 1e-6f) * plan.mean_diag);
  for (int attempt = 0; attempt <= 6; ++attempt, damp *= 10.f) {
    RETURN_IF_ERROR(hessian_permute_damp_cuda(u, gram, scale, perm_dev, k, damp, ctx.stream()));
    ASSIGN_OR_RETURN(bool ok, inverse_cholesky_upper(ctx, u, k));
    if (ok) {
      stats.damp = damp;
      stats.damp_retries = attempt;
      return stats;
    }
  }
  return invalid_argument("{}: the Hessian is not positive definite even with damping {} (inputs degenerate?)", module,
                          damp);
}

// The blocked sweep over wt [K, N] (sweep order) with the lazy update as one GEMM per block.
Status sweep(CudaCompressContext& ctx, GptqBlockArgs args, int block_size) {
  const int64_t n = args.n, k = args.k, bs = std::max(1, block_size);
  View err = ctx.scratch(Slot::kErr, Shape{bs, n}, DType::kF32);
  args.err = err.as<float>();
  const float minus_one = -1.f, one = 1.f;
  for (int64_t i1 = 0; i1 < k; i1 += bs) {
    const int64_t i2 = std::min(k, i1 + bs);
    args.i1 = i1;
    args.i2 = i2;
    RETURN_IF_ERROR(gptq_block_cuda(args, ctx.stream()));
    if (i2 == k) break;
    // Row-major wt[i2:, :] -= U[i1:i2, i2:]ᵀ · err  ==  column-major C [N, K-i2] -= err [N, B] · U_blkᵀ.
    CUBLAS_RETURN_IF_ERROR(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n),
                                       static_cast<int>(k - i2), static_cast<int>(i2 - i1), &minus_one, args.err,
                                       static_cast<int>(n), args.u + i1 * k + i2, static_cast<int>(k), &one,
                                       args.wt + i2 * n, static_cast<int>(n)));
  }
  return Status::ok();
}

// Σ_n d_n G d_nᵀ, d = a − b (b may be nullptr), in f64 on the device.
Result<double> quadratic_error_cuda(CudaCompressContext& ctx, const float* a, const float* b, int64_t n, int64_t k,
                                    const float* g) {
  View d = ctx.scratch(Slot::kDiff, Shape{n, k}, DType::kF32), dg = ctx.scratch(Slot::kDiffGram, Shape{n, k}, DType::kF32);
  RETURN_IF_ERROR(sub_f32_cuda(d.as<float>(), a, b, n * k, ctx.stream()));
  const float one = 1.f, zero = 0.f;
  const int ki = static_cast<int>(k);
  // Row-major D·G [N, K] is column-major G·Dᶜ (G symmetric).
  CUBLAS_RETURN_IF_ERROR(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ki, static_cast<int>(n), ki, &one, g, ki,
                                     d.as<float>(), ki, &zero, dg.as<float>(), ki));
  View out = ctx.scratch(Slot::kDot, Shape{1}, DType::kF64);
  RETURN_IF_ERROR(dot_f64_cuda(out.as<double>(), d.as<float>(), dg.as<float>(), n * k, ctx.stream()));
  double total = 0;
  RETURN_IF_ERROR(to_host(ctx, &total, out.data, 1));
  return total;
}

}  // namespace

CudaCompressContext::~CudaCompressContext() {
  if (cusolver_ != nullptr) (void)cusolverDnDestroy(cusolver_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
}

Status CudaCompressContext::init() {
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, backend_.stream()));
  CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  CUSOLVER_RETURN_IF_ERROR(cusolverDnCreate(&cusolver_));
  CUSOLVER_RETURN_IF_ERROR(cusolverDnSetStream(cusolver_, backend_.stream()));
  return Status::ok();
}

Result<std::shared_ptr<CudaCompressContext>> make_cuda_compress_context(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  if (cuda == nullptr)
    return invalid_argument("GPU compression needs the CUDA backend, the model is on '{}'", backend.name());
  auto ctx = std::make_shared<CudaCompressContext>(*cuda);
  RETURN_IF_ERROR(ctx->init());
  return ctx;
}

Result<GptqResult> gptq_quantize_cuda(CudaCompressContext& ctx, View w, View gram, int64_t tokens,
                                      const GptqOptions& opts, View w_hat, const std::string& module,
                                      GpuSolveTimes* times) {
  const int64_t n = w.shape.ndim == 2 ? w.shape[0] : 0, k = w.shape.ndim == 2 ? w.shape[1] : 0;
  RETURN_IF_ERROR(check_quant_spec(opts.spec, k, module));
  RETURN_IF_ERROR(expect_f32_matrix(w, n, k, "w", module));
  RETURN_IF_ERROR(expect_f32_matrix(gram, k, k, "gram", module));
  RETURN_IF_ERROR(expect_f32_matrix(w_hat, n, k, "w_hat", module));
  auto t0 = std::chrono::steady_clock::now();
  const float scale = tokens > 0 ? 2.f / static_cast<float>(tokens) : 0.f;
  ASSIGN_OR_RETURN(HessianPlan plan, plan_hessian(ctx, gram.as<float>(), k, scale, opts.act_order, module));
  const View perm = upload_bytes(ctx, Slot::kPerm, plan.perm.data(), k, DType::kI32);
  const View dead = upload_bytes(ctx, Slot::kDead, plan.dead.data(), plan.dead_count > 0 ? k : 0, DType::kU8);
  const uint8_t* dead_dev = plan.dead_count > 0 ? dead.as<uint8_t>() : nullptr;
  const View u = ctx.scratch(Slot::kFactor, Shape{k, k}, DType::kF32);
  GptqResult r;
  ASSIGN_OR_RETURN(r.stats, damped_factor(ctx, plan, gram.as<float>(), scale, perm.as<int32_t>(), k, opts.percdamp,
                                          u.as<float>(), module));
  ctx.backend().synchronize();
  if (times) times->factor_seconds += seconds_since(t0);
  t0 = std::chrono::steady_clock::now();

  r.q = make_quantized_linear(opts.spec, n, k);
  const int64_t groups = r.q.groups();
  const View scales = ctx.scratch(Slot::kScales, Shape{n, groups}, DType::kF32);
  const View zeros = ctx.scratch(Slot::kZeros, Shape{n, groups}, DType::kF32);
  const bool static_groups = opts.static_groups && opts.spec.group_size > 0;
  if (static_groups)  // natural groups of the dead-zeroed weights, before any error feedback
    RETURN_IF_ERROR(quant_rtn_cuda(w.as<float>(), dead_dev, n, k, opts.spec, scales.as<float>(), zeros.as<float>(),
                                   nullptr, nullptr, ctx.stream()));
  const View wt = ctx.scratch(Slot::kSweep, Shape{k, n}, DType::kF32);
  const View codes_t = ctx.scratch(Slot::kSweepCodes, Shape{k, n}, DType::kU8);
  RETURN_IF_ERROR(gptq_gather_cuda(wt.as<float>(), w.as<float>(), perm.as<int32_t>(), dead_dev, n, k, ctx.stream()));
  GptqBlockArgs args;
  args.wt = wt.as<float>();
  args.codes_t = codes_t.as<uint8_t>();
  args.u = u.as<float>();
  args.scales = scales.as<float>();
  args.zeros = zeros.as<float>();
  args.perm = perm.as<int32_t>();
  args.n = n;
  args.k = k;
  args.spec = opts.spec;
  args.static_groups = static_groups;
  RETURN_IF_ERROR(sweep(ctx, args, opts.block_size));
  const View codes = ctx.scratch(Slot::kCodes, Shape{n, k}, DType::kU8);
  RETURN_IF_ERROR(gptq_scatter_cuda(w_hat.as<float>(), codes.as<uint8_t>(), wt.as<float>(), codes_t.as<uint8_t>(),
                                    perm.as<int32_t>(), n, k, ctx.stream()));
  RETURN_IF_ERROR(to_host(ctx, r.q.codes.data(), codes.data, r.q.codes.size()));
  RETURN_IF_ERROR(to_host(ctx, r.q.scales.data(), scales.data, r.q.scales.size()));
  RETURN_IF_ERROR(to_host(ctx, r.q.zeros.data(), zeros.data, r.q.zeros.size()));
  if (opts.act_order && !static_groups && opts.spec.group_size > 0) {
    r.q.g_idx.assign(k, 0);
    for (int64_t p = 0; p < k; ++p) r.q.g_idx[plan.perm[p]] = static_cast<int32_t>(p / opts.spec.group_size);
  }
  if (times) times->sweep_seconds += seconds_since(t0);
  return r;
}

Result<QuantizedLinear> rtn_quantize_cuda(CudaCompressContext& ctx, View w, const QuantSpec& spec, View w_hat,
                                          const std::string& module, bool host_codes) {
  const int64_t n = w.shape.ndim == 2 ? w.shape[0] : 0, k = w.shape.ndim == 2 ? w.shape[1] : 0;
  RETURN_IF_ERROR(check_quant_spec(spec, k, module));
  RETURN_IF_ERROR(expect_f32_matrix(w, n, k, "w", module));
  RETURN_IF_ERROR(expect_f32_matrix(w_hat, n, k, "w_hat", module));
  QuantizedLinear q;
  if (host_codes) {
    q = make_quantized_linear(spec, n, k);
  } else {
    q.spec = spec;
    q.out_features = n;
    q.in_features = k;
  }
  const int64_t groups = spec.group_size == 0 ? 1 : k / spec.group_size;
  const View scales = ctx.scratch(Slot::kRtnScales, Shape{n, groups}, DType::kF32);
  const View zeros = ctx.scratch(Slot::kRtnZeros, Shape{n, groups}, DType::kF32);
  const View codes = ctx.scratch(Slot::kRtnCodes, Shape{host_codes ? n * k : 1}, DType::kU8);
  RETURN_IF_ERROR(quant_rtn_cuda(w.as<float>(), nullptr, n, k, spec, scales.as<float>(), zeros.as<float>(),
                                 host_codes ? codes.as<uint8_t>() : nullptr, w_hat.as<float>(), ctx.stream()));
  if (host_codes) {
    RETURN_IF_ERROR(to_host(ctx, q.codes.data(), codes.data, q.codes.size()));
    RETURN_IF_ERROR(to_host(ctx, q.scales.data(), scales.data, q.scales.size()));
    RETURN_IF_ERROR(to_host(ctx, q.zeros.data(), zeros.data, q.zeros.size()));
  }
  return q;
}

Result<double> relative_output_error_cuda(CudaCompressContext& ctx, View w, View w_hat, View gram, double* base) {
  const int64_t n = w.shape.ndim == 2 ? w.shape[0] : 0, k = w.shape.ndim == 2 ? w.shape[1] : 0;
  RETURN_IF_ERROR(expect_f32_matrix(w, n, k, "w", "relative_output_error"));
  RETURN_IF_ERROR(expect_f32_matrix(w_hat, n, k, "w_hat", "relative_output_error"));
  RETURN_IF_ERROR(expect_f32_matrix(gram, k, k, "gram", "relative_output_error"));
  double b = base != nullptr ? *base : -1;
  if (b < 0) {
    ASSIGN_OR_RETURN(b, quadratic_error_cuda(ctx, w.as<float>(), nullptr, n, k, gram.as<float>()));
    if (base != nullptr) *base = b;
  }
  if (b <= 0) return 0.0;
  ASSIGN_OR_RETURN(double e, quadratic_error_cuda(ctx, w.as<float>(), w_hat.as<float>(), n, k, gram.as<float>()));
  return e / b;
}

#else  // no CUDA in this build

Result<std::shared_ptr<CudaCompressContext>> make_cuda_compress_context(Backend& backend) {
  return unsupported("GPU compression: this build of compactor has no CUDA backend (model on '{}')", backend.name());
}

Result<GptqResult> gptq_quantize_cuda(CudaCompressContext&, View, View, int64_t, const GptqOptions&, View,
                                      const std::string& module, GpuSolveTimes*) {
  return unsupported("{}: this build of compactor has no CUDA backend", module);
}

Result<QuantizedLinear> rtn_quantize_cuda(CudaCompressContext&, View, const QuantSpec&, View, const std::string& module,
                                          bool) {
  return unsupported("{}: this build of compactor has no CUDA backend", module);
}

Result<double> relative_output_error_cuda(CudaCompressContext&, View, View, View, double*) {
  return unsupported("relative_output_error_cuda: this build of compactor has no CUDA backend");
}

#endif

}  // namespace compactor
