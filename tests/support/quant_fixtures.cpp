// Round-to-nearest test quantizer; see quant_fixtures.h.
#include "support/quant_fixtures.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace compactor::test {

QuantizedLinear random_quantized_linear(int bits, int group, bool sym, bool act_order, int64_t n, int64_t k,
                                        uint32_t seed, float max_scale) {
  std::mt19937 rng(seed);
  QuantizedLinear q;
  q.spec = QuantSpec{bits, group, sym};
  q.out_features = n;
  q.in_features = k;
  const int levels = 1 << bits;
  std::uniform_int_distribution<int> code(0, levels - 1);
  std::uniform_real_distribution<float> scale(1e-3f, max_scale);
  q.codes.resize(n * k);
  for (auto& c : q.codes) c = static_cast<uint8_t>(code(rng));
  const int64_t g = q.groups();
  q.scales.resize(n * g);
  q.zeros.resize(n * g);
  for (int64_t i = 0; i < n * g; ++i) {
    q.scales[i] = f16_to_f32(f32_to_f16(scale(rng)));
    q.zeros[i] = sym ? static_cast<float>(levels / 2) : static_cast<float>(code(rng));
  }
  if (act_order) {
    q.g_idx.resize(k);
    for (int64_t i = 0; i < k; ++i) q.g_idx[i] = static_cast<int32_t>(i / group);
    std::shuffle(q.g_idx.begin(), q.g_idx.end(), rng);
  }
  return q;
}

namespace {

std::vector<int32_t> shuffled_groups(int64_t k, int group_size, uint32_t seed) {
  std::vector<int32_t> g_idx(k);
  for (int64_t i = 0; i < k; ++i) g_idx[i] = static_cast<int32_t>(i / group_size);
  std::shuffle(g_idx.begin(), g_idx.end(), std::mt19937(seed));
  return g_idx;
}

// scale and zero of one group with range [lo, hi] (lo <= 0 <= hi).
std::pair<float, float> group_params(float lo, float hi, const QuantSpec& spec) {
  const float maxq = static_cast<float>((1 << spec.bits) - 1);
  if (spec.symmetric) {
    const float amax = std::max(-lo, hi);
    const float scale = f16_to_f32(f32_to_f16(amax > 0 ? 2 * amax / maxq : 1.f));
    return {scale, static_cast<float>(1 << (spec.bits - 1))};
  }
  const float scale = f16_to_f32(f32_to_f16(hi > lo ? (hi - lo) / maxq : 1.f));
  return {scale, std::clamp(std::round(-lo / scale), 0.f, maxq)};
}

std::vector<float> dense_f32(const Model& m, const std::string& tensor) {
  const TensorEntry* e = m.files().find(tensor);
  COMPACTOR_ASSERT(e != nullptr, "rtn_quantize_model: tensor {} missing", tensor);
  std::vector<float> out(e->view().numel());
  convert_to_f32(e->view().data, e->view().dtype, e->view().numel(), out.data());
  return out;
}

}  // namespace

QuantizedLinear rtn_quantize(const std::vector<float>& w, int64_t n, int64_t k, const RtnSpec& r, uint32_t seed) {
  QuantizedLinear q;
  q.spec = r.spec;
  q.out_features = n;
  q.in_features = k;
  if (r.act_order) q.g_idx = shuffled_groups(k, r.spec.group_size, seed);
  const int64_t g = q.groups();
  const float maxq = static_cast<float>((1 << r.spec.bits) - 1);
  q.codes.resize(n * k);
  q.scales.resize(n * g);
  q.zeros.resize(n * g);
  for (int64_t row = 0; row < n; ++row) {
    std::vector<float> lo(g, 0.f), hi(g, 0.f);
    for (int64_t col = 0; col < k; ++col) {
      const int grp = q.group_of(col);
      lo[grp] = std::min(lo[grp], w[row * k + col]);
      hi[grp] = std::max(hi[grp], w[row * k + col]);
    }
    for (int64_t grp = 0; grp < g; ++grp)
      std::tie(q.scales[row * g + grp], q.zeros[row * g + grp]) = group_params(lo[grp], hi[grp], r.spec);
    for (int64_t col = 0; col < k; ++col) {
      const int64_t grp = q.group_of(col);
      const float c = std::round(w[row * k + col] / q.scales[row * g + grp]) + q.zeros[row * g + grp];
      q.codes[row * k + col] = static_cast<uint8_t>(std::clamp(c, 0.f, maxq));
    }
  }
  return q;
}

std::map<std::string, QuantizedLinear> rtn_quantize_model(const Model& m,
                                                          const std::function<RtnSpec(const std::string&)>& choose,
                                                          bool lm_head) {
  std::map<std::string, QuantizedLinear> out;
  uint32_t seed = 1;
  for (const auto& [name, lw] : m.named_linears()) {
    const std::vector<float> w = dense_f32(m, name + ".weight");
    out.emplace(name, rtn_quantize(w, lw->out_features, lw->in_features, choose(name), seed++));
  }
  if (lm_head && !out.count("lm_head")) {  // tied: quantize the embedding table as the head
    const std::vector<float> w = dense_f32(m, m.arch().names.embed);
    out.emplace("lm_head", rtn_quantize(w, m.config().vocab_size, m.config().hidden_size, choose("lm_head"), seed));
  }
  return out;
}

}  // namespace compactor::test
