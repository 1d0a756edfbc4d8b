// Fused dequantize-and-multiply for packed intN weights at decode sizes (M = 1..64 input rows):
// y[M, N] = x[M, K] · dq(W)ᵀ read straight from the repacked codes (formats/quant_repack.h), so
// the product streams about bits/8 bytes per weight instead of the dequantize + cuBLAS path's
// 2 (write) + 2 (read) + bits/8. Activations bf16 or f16, f32 accumulation, int2/3/4/8, group
// sizes 32/64/128/.. (powers of two >= 32) or per-channel, symmetric or asymmetric (the zero point
// is stored either way), act-order through the repack's column permutation (x is gathered by it
// into a staging buffer before the product).
//   qgemv_repack_cuda   once per weight: the packed LinearWeight (quant_pack.h layout) -> the
//                       repacked tensors, on the device (qgemv_repack.cu)
//   qgemv_cuda          per matmul: the product (qgemv.cu)
//   qgemv_tc.cu         the tensor-core variant for int4, int8 without act-order and NF4 with blocks >= 64
//                       (QgemvKernel::kTensorCores), single or grouped (qgemv_group_cuda)
// CudaBackend::matmul picks this path for quantized weights up to kQgemvAutoMaxRows input rows
// (int4 on tensor cores: kQgemvTcAutoMaxRows) and keeps the repacked copy of each weight in a
// cache; above that it dequantizes and calls cuBLAS.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#pragma once

#include "backend/backend.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/qgemm_plan.h"
#include "formats/quant_repack.h"

namespace compactor {

// The per-M rule of CudaBackend::matmul for a quantized weight: the fused kernel up to these many
// input rows, dequantize + cuBLAS above. The thresholds to tune from bench_qgemm ("fused us" /
// "tc us" vs "deq+cuBLAS"):
// CUDA cores (int8/3/2, int4 with QuantKernel::kCudaCores): the FMAs grow with M (every code is
// converted and multiplied once per input row: H100 w4g128 11008x4096: M=8 68 us, M=16 121 us,
// M=32 246 us), while dequantize (~40-60 us after the tiled rewrite) + cuBLAS (~36 us) is flat:
// the crossover is between 8 and 16 rows.
inline constexpr int64_t kQgemvAutoMaxRows = 8;
// Tensor cores (int4): the conversion of a code is shared by the 8-64 rows of a block and the
// products are mma, so the kernel stays close to the weight stream at decode sizes; H100 bench_qgemm
// (w4g128): at M = 32 it beats dequantize + cuBLAS on every Llama-2 shape (gate/up 56 vs 92 us),
// at M = 64 it loses on every one (down 125 vs 95 us): the switch is at 32 rows.
inline constexpr int64_t kQgemvTcAutoMaxRows = 32;

// kCudaCores: qgemv.cu (every format; f32 FMAs). kTensorCores: qgemv_tc.cu for the formats
// tc_layout_supported accepts (mma.sync on exact c - z or NF4-level fragments, f32 accumulation),
// the CUDA-core kernel for the others.
enum class QgemvKernel { kCudaCores, kTensorCores };

// Device views of a repacked linear (owned elsewhere).
struct QgemvWeight {
  RepackPlan plan;
  const uint32_t* qweight = nullptr;     // [N, plan.words_per_row] u32
  const uint32_t* scale_zero = nullptr;  // [N, plan.groups_padded] u32 (f16 scale | f16 zero << 16)
  const int32_t* perm = nullptr;         // [plan.k_padded] i32, or nullptr when not act-order
  // Tensor-core int4 layout (quant_repack.h) instead of qweight: [tc_padded_rows(N) * Kp / 8] u32
  const uint32_t* tc = nullptr;
};

// Owning device tensors of a repacked linear.
struct QgemvRepacked {
  RepackPlan plan;
  Tensor qweight, scale_zero, perm;  // perm undefined unless plan.permuted
  Tensor tc;                         // kTensorCores int4: the tc layout (qweight then undefined)
  QgemvWeight view() const;
  int64_t bytes() const;
};

// Repacks a quantized LinearWeight whose qweight/scales/qzeros/g_idx are CUDA views (g_idx is
// read back to the host once to build the permutation) into the layout of `kernel` (the tc
// layout for int4 with kTensorCores, the row layout otherwise). Unsupported (the caller falls back
// to dequantize + cuBLAS) for group sizes plan_repack rejects and irregular act-order.
Result<QgemvRepacked> qgemv_repack_cuda(const LinearWeight& w, cudaStream_t stream,
                                        QgemvKernel kernel = QgemvKernel::kCudaCores);

// Bytes of the x staging buffer qgemv_cuda needs for `rows` input rows of this weight: 0 when x
// is read in place (K % 128 == 0 and no act-order, or act-order on the tensor-core kernel with at
// most 8 rows, which gathers x itself), else rows * Kp elements of the activation dtype.
size_t qgemv_scratch_bytes(const QgemvWeight& w, int64_t rows, DType act, const void* x_data);

// out: [M, N] act = x: [M, K] act · dq(w)ᵀ (+ bias: [N] f32|f16|bf16, or data == nullptr);
// accumulate: out += x · dq(w)ᵀ instead (no bias). scratch: qgemv_scratch_bytes(...) device bytes
// (may be nullptr when that is 0). Any M works; the kernel tiles M by 1/2/4/8 rows (tensor cores:
// 8/16/32/64). The kernel follows the layout w holds (tc: tensor cores).
Status qgemv_cuda(View out, View x, const QgemvWeight& w, View bias, bool accumulate, void* scratch,
                  cudaStream_t stream);

// Weights of one grouped launch at most (q/k/v; gate/up).
inline constexpr int kQgemvMaxGroup = 3;

// True when qgemv_group_cuda can multiply x by these weights in one launch: 1..kQgemvMaxGroup
// weights in the tensor-core layout with one K and group size, no act-order, x read in place.
bool qgemv_groupable(View x, const QgemvWeight* const* ws, int n);

// outs[i] = x · dq(ws[i])ᵀ (+ biases[i]) for i < n in one launch of the tensor-core kernel (their row
// tiles one after the other): q/k/v or gate/up at decode sizes, which as separate launches leave
// the GPU part-empty (4096-row weights fill a third of the H100's block slots). Requires
// qgemv_groupable; argument errors name the weight.
Status qgemv_group_cuda(const View* outs, View x, const QgemvWeight* const* ws, const View* biases, int n,
                        cudaStream_t stream);

// Whether tensor-core launches of up to 16 input rows use the streaming kernel (qgemv_stream.cu:
// TMA bulk copies into a shared-memory ring, compute capability 9.0 and up) where the weight fits
// it; off: the per-lane kernel everywhere (A/B runs). Process-wide; on by default, and CudaBackend
// sets it from its options (off below compute capability 9.0).
void set_qgemv_streaming(bool on);
bool qgemv_streaming_enabled();

// Whether tensor-core launches of int4 weights (act-order: x staged) above 32 input rows run the
// mixed-input wgmma GEMM (qgemm_wgmma.cu; then CudaBackend::matmul takes the fused path at every
// batch size) instead of the per-lane kernel (and the backend dequantize + cuBLAS above 32 rows).
// Process-wide; off by default, CudaBackend turns it on for compute capability 9.0 (the sm_90a
// code) unless its options turn it off (A/B runs).
void set_qgemm_wgmma(bool on);
bool qgemm_wgmma_enabled();
// Tokens per block (128 or 256) and blocks per output tile (split K over a thread block cluster)
// of the GEMM's launches (qgemm_plan.h): 0 (the default) lets the cost model choose per launch;
// else fixed (splits at most kGemmMaxSplits and no more than K has 64-position chunks), for A/B
// runs and tests. Process-wide.
void set_qgemm_wgmma_plan(int tokens, int splits);
// The plan the GEMM takes for x [m, k] times one weight of n rows on the current device.
Result<GemmPlan> qgemm_wgmma_plan(int64_t m, int64_t n, int64_t k);
// Blocks of the GEMM (128 or 256 tokens) that run at once on the current device in clusters of
// `splits` (1: one per SM; fewer where a GPC's SMs are not a multiple of the cluster).
Result<int> qgemm_wgmma_blocks_at_once(int tokens, int splits);
// Whether the GEMM takes a tensor-core weight of this format (enabled, int4, not NF4): the one rule
// of CudaBackend::matmul's row limit and of the launch.
bool qgemm_wgmma_takes(int bits, bool nf4);
// Input rows from which tensor-core launches use the wgmma GEMM where it applies. Its weights are
// rounded to the activation type before the product (as dequantize + cuBLAS does), the GEMV
// kernels' are exact: results differ within dequant_coef (tests/cuda/qgemm_check.h).
inline constexpr int64_t kQgemmWgmmaMinRows = kQgemvTcAutoMaxRows + 1;

}  // namespace compactor
