// The backend interface: every op the models, evaluators and (later) compressors need, over plain
// Views. The CPU backend is always built; the CUDA backend implements the same interface.
// Activations use `activation_dtype()` (f32 on CPU); weights may be any Format.
//
// Layout conventions (row-major, contiguous):
//   tokens of a batch are flattened: x: [B*T, D] with sequence b's tokens at rows b*T .. b*T+T-1
//   attention heads are the minor split of the feature dim: q: [B*T, H*Dh], k/v: [B*T, Hkv*Dh]
//   the KV cache of one layer: k_cache/v_cache: [B, S_max, Hkv*Dh] (dtype = kv dtype)
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "formats/format.h"

namespace compactor {

// A linear layer's weight in any storage format. Dense: `weight` is [N, K] (HF out×in).
// Quantized (format_is_quantized): `weight` is empty and the GPTQ-style packed tensors below hold
// it (bit layout: formats/quant_pack.h); G = groups = ceil(K / group_size), or 1 per-channel.
struct LinearWeight {
  Format format = Format::kF32;
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  View weight;               // dense: [N, K] of the format's dtype
  View bias;                 // optional [N]; data == nullptr when absent
  View qweight;              // quantized: [ceil(K*bits/32), N] i32, codes of consecutive k packed
  View scales;               // quantized: [G, N] f16
  View qzeros;               // quantized: [G, ceil(N*bits/32)] i32, true zero points packed along N
  View g_idx;                // quantized, act-order only: [K] i32 group of each k; else data == nullptr
  int group_size = 0;        // quantized: input columns per group; 0 = per-channel (G = 1)
  // NF4 (formats/nf4.h): qweight as int4 (codes index kNF4Values), scales [G, N] u8 E4M3, qzeros
  // and g_idx empty, group_size = the NF4 block size, and the double quantization's parts:
  View nested_scales;        // nf4: [ceil(G*N/256)] f32; else data == nullptr
  View nested_offset;        // nf4: [1] f32; else data == nullptr

  bool quantized() const { return format_is_quantized(format); }
  int bits() const { return format_bits(format); }
  // Bytes a matmul reads: the dense weight or the packed tensors, plus the bias.
  // Views without data count nothing (an empty View has shape {} and would count one element).
  int64_t storage_bytes() const {
    int64_t total = 0;
    for (const View* v : {&weight, &qweight, &scales, &qzeros, &g_idx, &nested_scales, &nested_offset, &bias})
      if (v->data != nullptr) total += v->bytes();
    return total;
  }
};

// Positions and lengths of the sequences in a batch, on the host.
struct BatchLayout {
  int batch = 1;                  // B
  int tokens = 1;                 // T new tokens per sequence
  const int32_t* n_past = nullptr;  // [B] tokens already in the cache per sequence (nullptr: all 0)
  int past(int b) const { return n_past ? n_past[b] : 0; }
};

struct AttentionParams {
  int heads = 0;       // H
  int kv_heads = 0;    // Hkv (H % Hkv == 0)
  int head_dim = 0;    // Dh
  float scale = 0.f;   // usually 1/sqrt(Dh)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual DType activation_dtype() const = 0;

  // Memory. upload returns `host` itself on the CPU backend when no copy is needed.
  virtual Tensor alloc(Shape shape, DType dtype) = 0;
  virtual void copy_to_host(View src, void* dst) = 0;
  virtual void copy_from_host(const void* src, View dst) = 0;
  virtual void synchronize() = 0;
  // dst = src (same shape and dtype, both on this backend). The default goes through the host.
  virtual void copy(View dst, View src);

  // out: [T, D] act; ids: [T] i32 (host memory); table: [V, D] any float dtype
  virtual void embedding(View out, const int32_t* ids, View table) = 0;
  // out: [T, D] act; x: [T, D] act; weight: [D] any float dtype
  virtual void rms_norm(View out, View x, View weight, float eps) = 0;
  // residual += delta, then out = rms_norm(residual). residual/delta/out: [T, D] act
  virtual void add_rms_norm(View out, View residual, View delta, View weight, float eps) = 0;
  // x += delta, both [T, D] act
  virtual void add(View x, View delta) = 0;
  // out: [T, N] act = x: [T, K] act · wᵀ (+ bias)
  virtual void matmul(View out, View x, const LinearWeight& w) = 0;
  // In-place rotate-half RoPE on x: [B*T, nh*Dh]; positions are layout.past(b) + t.
  // inv_freq: [Dh/2] f32 (host memory), already including any rope scaling.
  virtual void rope(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) = 0;
  // Writes k, v: [B*T, Hkv*Dh] into the caches [B, S_max, Hkv*Dh] at positions past(b) + t.
  virtual void kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) = 0;
  // Causal attention of q: [B*T, H*Dh] over the cache (past(b) + T keys), out: [B*T, H*Dh].
  virtual void attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                         const BatchLayout& layout) = 0;
  // out = silu(gate) * up, all [T, F] act
  virtual void swiglu(View out, View gate, View up) = 0;

  // Fusion points (a backend may run these as one launch; the defaults call the ops above):
  // outs[i] = x · ws[i]ᵀ for i < n (1..3), linears sharing their input (q/k/v, gate/up)
  virtual void matmul_group(const View* outs, View x, const LinearWeight* const* ws, int n);
  // x += a · wᵀ (the residual add after a linear); scratch: [T, N] act for the default, which
  // runs matmul(scratch, a, w) then add(x, scratch)
  virtual void matmul_add(View x, View a, const LinearWeight& w, View scratch);
  // h = rms_norm(x, norm_weight), then matmul_group(outs, h, ws, n); h: [T, D] act scratch
  virtual void rms_norm_matmul_group(const View* outs, View x, View norm_weight, float eps, const LinearWeight* const* ws,
                                     int n, View h);
  // act = swiglu(gate, up), then matmul_add(x, act, w, scratch); act: [T, F], scratch: [T, N] act
  virtual void swiglu_matmul_add(View x, View gate, View up, const LinearWeight& w, View act, View scratch);
  // rope(q), rope(k), then kv_store(k_cache, v_cache, k, v)
  virtual void rope_kv_store(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads,
                             int head_dim, const float* inv_freq, const BatchLayout& layout);
  // nll: [T] f32 (host memory) = -log_softmax(logits[t])[targets[t]]; logits: [T, V] act; targets host [T]
  virtual void cross_entropy(float* nll, View logits, const int32_t* targets) = 0;
};

// Copies a float view (any float dtype) from the backend to host f32: out: [numel].
void copy_to_host_f32(Backend& backend, View src, float* out);

enum class BackendKind { kCpu, kCuda };

// Creates a backend; an error (not a crash) when CUDA is requested but absent.
Result<std::unique_ptr<Backend>> make_backend(BackendKind kind);
Result<BackendKind> backend_kind_from_name(const std::string& name);  // "cpu" | "cuda"

}  // namespace compactor
