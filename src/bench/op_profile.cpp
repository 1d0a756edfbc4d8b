// profile_layer (see op_profile.h): layer 0's weights, random activations and a random KV cache
// of past + T positions; each op replayed from a graph of kReps calls.
#include "bench/op_profile.h"

#ifdef COMPACTOR_HAS_CUDA

#include <algorithm>
#include <cmath>
#include <functional>

namespace compactor {

namespace {

constexpr int kReps = 20;
constexpr int kReplays = 5;

struct LayerBuffers {
  Tensor x, h, q, k, v, attn, proj, gate, up, act, last, logits, k_cache, v_cache;
};

Status fill_all(CudaBackend& be, std::initializer_list<Tensor*> ts, uint64_t seed) {
  for (Tensor* t : ts) RETURN_IF_ERROR(be.fill_normal(*t, ++seed, 0.f, 1.f));
  return Status::ok();
}

Result<LayerBuffers> make_buffers(const ModelConfig& c, CudaBackend& be, const ProfileShape& s) {
  const DType a = be.activation_dtype();
  const int64_t rows = static_cast<int64_t>(s.batch) * s.tokens, kv_dim = c.num_kv_heads * c.head_dim;
  auto buf = [&](int64_t r, int64_t cols) { return be.alloc(Shape{r, cols}, a); };
  LayerBuffers b;
  b.x = buf(rows, c.hidden_size);
  b.h = buf(rows, c.hidden_size);
  b.q = buf(rows, c.num_heads * c.head_dim);
  b.k = buf(rows, kv_dim);
  b.v = buf(rows, kv_dim);
  b.attn = buf(rows, c.num_heads * c.head_dim);
  b.proj = buf(rows, c.hidden_size);
  b.gate = buf(rows, c.intermediate_size);
  b.up = buf(rows, c.intermediate_size);
  b.act = buf(rows, c.intermediate_size);
  b.last = buf(s.batch, c.hidden_size);
  b.logits = buf(s.batch, c.vocab_size);
  b.k_cache = be.alloc(Shape{s.batch, s.past + s.tokens, kv_dim}, a);
  b.v_cache = be.alloc(Shape{s.batch, s.past + s.tokens, kv_dim}, a);
  RETURN_IF_ERROR(fill_all(be, {&b.x, &b.h, &b.q, &b.k, &b.v, &b.attn, &b.proj, &b.gate, &b.up, &b.act, &b.last,
                                &b.k_cache, &b.v_cache},
                           77));
  return b;
}

// Median over replays of a graph holding kReps calls of `op`, per call, in µs.
Result<double> time_op(CudaBackend& be, const std::function<void()>& op) {
  op();
  op();  // warm-up: lazy buffers and uploads happen outside the capture
  be.synchronize();
  RETURN_IF_ERROR(be.begin_capture());
  for (int r = 0; r < kReps; ++r) op();
  ASSIGN_OR_RETURN(CudaGraph graph, be.end_capture());
  RETURN_IF_ERROR(be.replay(graph));
  std::vector<double> us;
  for (int i = 0; i < kReplays; ++i) {
    ASSIGN_OR_RETURN(float ms, be.time_ms([&] { return be.replay(graph); }));
    us.push_back(1000.0 * ms / kReps);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// Bytes of a linear's weight as stored (dense, or every packed tensor), without the bias.
double weight_bytes(const LinearWeight& w) {
  return static_cast<double>(w.storage_bytes() - (w.bias.data != nullptr ? w.bias.bytes() : 0));
}
double params(const LinearWeight& w) { return static_cast<double>(w.out_features * w.in_features); }

double matmul_bytes(const LinearWeight& w, int64_t rows, int act) {
  return weight_bytes(w) + static_cast<double>(rows) * (w.in_features + w.out_features) * act;
}

}  // namespace

Result<std::vector<LayerProfile>> profile_layer(Model& model, CudaBackend& be, const std::vector<ProfileShape>& shapes) {
  const ModelConfig& c = model.config();
  const LayerWeights& w = model.weights().layers.at(0);
  const std::vector<float> inv_freq = rope_inv_freq(c);
  const int act = dtype_size(be.activation_dtype());
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionParams ap{static_cast<int>(c.num_heads), static_cast<int>(c.num_kv_heads),
                           static_cast<int>(c.head_dim), 1.f / std::sqrt(static_cast<float>(c.head_dim))};
  std::vector<LayerProfile> out;
  for (const ProfileShape& s : shapes) {
    ASSIGN_OR_RETURN(LayerBuffers b, make_buffers(c, be, s));
    std::vector<int32_t> past(s.batch, s.past);
    const BatchLayout layout{s.batch, s.tokens, past.data()};
    const int64_t rows = static_cast<int64_t>(s.batch) * s.tokens;
    const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
    const double act_row = static_cast<double>(rows) * act;
    const double keys = static_cast<double>(s.tokens) * s.past + static_cast<double>(s.tokens) * (s.tokens + 1) / 2.0;
    LayerProfile p;
    p.phase = s.tokens > 1 ? fmt::format("prefill B={} T={}", s.batch, s.tokens) : fmt::format("decode B={}", s.batch);
    p.batch = s.batch;
    p.tokens = s.tokens;
    p.past = s.past;
    const View qkv_out[] = {b.q, b.k, b.v}, gu_out[] = {b.gate, b.up};
    const LinearWeight* qkv[] = {&w.q, &w.k, &w.v};
    const LinearWeight* gu[] = {&w.gate, &w.up};
    const double qkv_params = params(w.q) + params(w.k) + params(w.v);
    const double qkv_bytes = weight_bytes(w.q) + weight_bytes(w.k) + weight_bytes(w.v);
    const double kv_row = static_cast<double>(c.num_kv_heads * c.head_dim) * act;
    struct Op {
      const char* name;
      std::function<void()> fn;
      double bytes, flops;
    };
    const Op ops[] = {
        {"norm+qkv gemm", [&] { be.rms_norm_matmul_group(qkv_out, b.x, w.attn_norm, eps, qkv, 3, b.h); },
         qkv_bytes + act_row * (2 * d + static_cast<double>(b.q.view().cols() + 2 * b.k.view().cols())),
         2 * qkv_params * rows},
        {"rope+kv append",
         [&] { be.rope_kv_store(b.q, b.k, b.v, b.k_cache, b.v_cache, ap.heads, ap.kv_heads, ap.head_dim, inv_freq.data(), layout); },
         act_row * static_cast<double>(2 * b.q.view().cols() + 4 * b.k.view().cols()), 0},
        {"attention", [&] { be.attention(b.attn, b.q, b.k_cache, b.v_cache, ap, layout); },
         2 * act_row * static_cast<double>(b.q.view().cols()) + s.batch * (s.past + s.tokens) * 2 * kv_row,
         4.0 * c.head_dim * c.num_heads * keys * s.batch},
        {"o gemm+residual", [&] { be.matmul_add(b.x, b.attn, w.o, b.proj); }, matmul_bytes(w.o, rows, act) + act_row * d,
         2.0 * params(w.o) * rows},
        {"norm+gate/up gemm", [&] { be.rms_norm_matmul_group(gu_out, b.x, w.mlp_norm, eps, gu, 2, b.h); },
         weight_bytes(w.gate) + weight_bytes(w.up) + act_row * (2 * d + 2 * f),
         2.0 * (params(w.gate) + params(w.up)) * rows},
        {"swiglu+down+residual", [&] { be.swiglu_matmul_add(b.x, b.gate, b.up, w.down, b.act, b.proj); },
         matmul_bytes(w.down, rows, act) + act_row * (f + 2 * d), 2.0 * params(w.down) * rows},
        {"lm head (per step)", [&] { be.matmul(b.logits, b.last, model.weights().lm_head); },
         matmul_bytes(model.weights().lm_head, s.batch, act),
         2.0 * params(model.weights().lm_head) * s.batch},
    };
    for (const Op& op : ops) {
      ASSIGN_OR_RETURN(double us, time_op(be, op.fn));
      p.ops.push_back(OpTiming{op.name, us, op.bytes, op.flops});
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
