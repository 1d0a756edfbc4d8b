// The device repack of packed intN weights (quant_pack.h, GPTQ layout) into the layout the fused
// kernel reads (quant_repack.h): one thread per (output row, 32-code block) gathers its codes
// through packed_value (reads coalesced along N) and writes the block's words; one thread per
// (row, group) combines scale and zero. Runs once per weight; the host builds the act-order
// permutation (plan_repack) from a host copy of g_idx. Byte-identical to repack_linear_ref.
// Test: build-*/tests/test_cuda_qgemm --gtest_filter='*Repack*' (on a GPU machine).
#include <new>
#include <vector>

#include "backend/cuda/dequant.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/qgemv.cuh"
#include "formats/nf4.h"
#include "formats/quant_pack.h"

namespace compactor {

__global__ void qgemv_repack_codes_kernel(uint32_t* __restrict__ out,           // [N, words_per_row]
                                          const int32_t* __restrict__ qweight,  // [W(K), N]
                                          const int32_t* __restrict__ perm,     // [Kp] or nullptr
                                          int bits, int64_t n, int64_t k, int64_t blocks_per_row,
                                          int64_t words_per_row) {
  const int64_t total = n * blocks_per_row;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx / n, row = idx - b * n;
    uint32_t codes[kRepackBlockK];
    for (int i = 0; i < kRepackBlockK; ++i) {
      const int64_t pos = b * kRepackBlockK + i;
      const int64_t col = perm != nullptr ? perm[pos] : (pos < k ? pos : -1);
      codes[i] = col >= 0 ? packed_value(qweight + row, n, bits, col) : 0u;
    }
    uint32_t words[8];
    pack_repacked_block(codes, bits, words);
    for (int j = 0; j < bits; ++j) out[row * words_per_row + b * bits + j] = words[j];
  }
}

// The tc layouts of int4 and int8 (quant_repack.h): one thread per output word gathers its codes.
__global__ void qgemv_repack_tc_kernel(uint32_t* __restrict__ out,           // [Np * Kp * bits / 32]
                                       const int32_t* __restrict__ qweight,  // [W(K), N]
                                       const int32_t* __restrict__ perm,     // [Kp] or nullptr
                                       int bits, int64_t n, int64_t k, int64_t chunks, int64_t words) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < words;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t v = 0;
    for (int q = 0; q < 32 / bits; ++q) {
      int64_t row = 0, pos = 0;
      if (bits == 4) {
        tc_int4_source(idx, q, chunks, &row, &pos);
      } else {
        tc_int8_source(idx, q, chunks, &row, &pos);
      }
      if (row >= n) continue;
      const int64_t col = perm != nullptr ? perm[pos] : (pos < k ? pos : -1);
      if (col >= 0) v |= packed_value(qweight + row, n, bits, col) << (bits * q);
    }
    out[idx] = v;
  }
}

__global__ void qgemv_repack_scales_kernel(uint32_t* __restrict__ out,           // [N, Gp]
                                           const uint16_t* __restrict__ scales,  // [G, N] f16 bits
                                           const int32_t* __restrict__ qzeros,   // [G, W(N)]
                                           int bits, int64_t n, int64_t groups, int64_t groups_padded) {
  const int64_t zero_words = (n * bits + 31) / 32;
  const int64_t total = n * groups_padded;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = idx / n, row = idx - g * n;
    uint32_t v = 0;
    if (g < groups) {
      const uint32_t zero = packed_value(qzeros + g * zero_words, 1, bits, row);
      const uint32_t zero_f16 = __half_as_ushort(__float2half_rn(static_cast<float>(zero)));
      v = static_cast<uint32_t>(scales[g * n + row]) | (zero_f16 << 16);
    }
    out[row * groups_padded + g] = v;
  }
}

// NF4: scale_zero[n, g] = f32 bits of the block's absmax, decoded from its E4M3 code, the nested
// scale of its 256-entry block (entries flattened [G, N]) and the offset (formats/nf4.h).
__global__ void qgemv_repack_nf4_scales_kernel(uint32_t* __restrict__ out,                  // [N, Gp]
                                               const uint8_t* __restrict__ scales,          // [G, N] E4M3
                                               const float* __restrict__ nested_scales,     // [ceil(G*N/256)]
                                               const float* __restrict__ nested_offset,     // [1]
                                               int64_t n, int64_t groups, int64_t groups_padded) {
  const int64_t total = n * groups_padded;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = idx / n, row = idx - g * n;
    const float absmax = g < groups ? nf4_absmax(scales[idx], nested_scales[idx / kNF4NestedBlock], nested_offset[0]) : 0.f;
    out[row * groups_padded + g] = __float_as_uint(absmax);
  }
}

namespace {

Status check_repack(const LinearWeight& w) {
  if (w.format == Format::kNF4) return check_nf4_weight_cuda("qgemv_repack", w);
  if (!w.quantized()) return invalid_argument("qgemv_repack: format {} is not quantized", format_name(w.format));
  RETURN_IF_ERROR(expect_cuda("qgemv_repack", "qweight", w.qweight));
  RETURN_IF_ERROR(expect_cuda("qgemv_repack", "scales", w.scales));
  RETURN_IF_ERROR(expect_cuda("qgemv_repack", "qzeros", w.qzeros));
  if (w.g_idx.data != nullptr) RETURN_IF_ERROR(expect_cuda("qgemv_repack", "g_idx", w.g_idx));
  return check_packed_shapes("qgemv_repack", w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                             w.scales, w.qzeros, w.g_idx);
}

Result<Tensor> device_tensor(Shape shape, DType dtype) {
  try {
    return Tensor::empty(shape, dtype, Device::kCuda);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory,
                  fmt::format("qgemv_repack: out of device memory for a {} {} tensor", shape.str(), dtype_name(dtype)));
  }
}

}  // namespace

QgemvWeight QgemvRepacked::view() const {
  QgemvWeight v;
  v.plan = plan;
  v.qweight = qweight.as<const uint32_t>();
  v.scale_zero = scale_zero.as<const uint32_t>();
  v.perm = perm.defined() ? perm.as<const int32_t>() : nullptr;
  v.tc = tc.defined() ? tc.as<const uint32_t>() : nullptr;
  return v;
}

int64_t QgemvRepacked::bytes() const {
  return (qweight.defined() ? qweight.bytes() : 0) + (tc.defined() ? tc.bytes() : 0) + scale_zero.bytes() +
         (perm.defined() ? perm.bytes() : 0);
}

Result<QgemvRepacked> qgemv_repack_cuda(const LinearWeight& w, cudaStream_t stream, QgemvKernel kernel) {
  RETURN_IF_ERROR(check_repack(w));
  const int64_t n = w.out_features, k = w.in_features;
  std::vector<int32_t> g_idx_host, perm_host;
  if (w.g_idx.data != nullptr) {
    g_idx_host.resize(k);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(g_idx_host.data(), w.g_idx.data, k * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  }
  QgemvRepacked r;
  ASSIGN_OR_RETURN(r.plan, plan_repack(w.bits(), w.group_size, n, k, g_idx_host.empty() ? nullptr : g_idx_host.data(),
                                       &perm_host));
  const RepackPlan& plan = r.plan;
  r.plan.nf4 = w.format == Format::kNF4;
  const bool tc = kernel == QgemvKernel::kTensorCores &&
                  tc_layout_supported(plan.bits, plan.nf4, plan.group_size, plan.permuted);
  if (tc) {
    ASSIGN_OR_RETURN(r.tc, device_tensor(Shape{tc_padded_rows(n) * plan.k_padded * plan.bits / 32}, DType::kI32));
  } else {
    ASSIGN_OR_RETURN(r.qweight, device_tensor(Shape{n, plan.words_per_row}, DType::kI32));
  }
  ASSIGN_OR_RETURN(r.scale_zero, device_tensor(Shape{n, plan.groups_padded}, DType::kI32));
  if (plan.permuted) {
    ASSIGN_OR_RETURN(r.perm, device_tensor(Shape{plan.k_padded}, DType::kI32));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(r.perm.data(), perm_host.data(), perm_host.size() * sizeof(int32_t),
                                         cudaMemcpyHostToDevice, stream));
  }
  constexpr int kThreads = 256;
  const int64_t blocks_per_row = plan.k_padded / kRepackBlockK;
  const int32_t* perm = r.perm.defined() ? r.perm.as<const int32_t>() : nullptr;
  if (tc) {
    const int64_t words = r.tc.numel();
    qgemv_repack_tc_kernel<<<grid_for(words, kThreads), kThreads, 0, stream>>>(
        r.tc.as<uint32_t>(), w.qweight.as<const int32_t>(), perm, plan.bits, n, k, tc_chunks(plan), words);
  } else {
    qgemv_repack_codes_kernel<<<grid_for(n * blocks_per_row, kThreads), kThreads, 0, stream>>>(
        r.qweight.as<uint32_t>(), w.qweight.as<const int32_t>(), perm, plan.bits, n, k, blocks_per_row,
        plan.words_per_row);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (plan.nf4) {
    qgemv_repack_nf4_scales_kernel<<<grid_for(n * plan.groups_padded, kThreads), kThreads, 0, stream>>>(
        r.scale_zero.as<uint32_t>(), w.scales.as<const uint8_t>(), w.nested_scales.as<const float>(),
        w.nested_offset.as<const float>(), n, quant_groups(w.group_size, k), plan.groups_padded);
  } else {
    qgemv_repack_scales_kernel<<<grid_for(n * plan.groups_padded, kThreads), kThreads, 0, stream>>>(
        r.scale_zero.as<uint32_t>(), w.scales.as<const uint16_t>(), w.qzeros.as<const int32_t>(), plan.bits, n,
        quant_groups(w.group_size, k), plan.groups_padded);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // perm_host must outlive the asynchronous upload above.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return r;
}

}  // namespace compactor
