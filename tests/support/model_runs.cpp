#include "support/model_runs.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"

namespace compactor::test {

LoadedModel load_cpu_model(const std::filesystem::path& dir) {
  LoadedModel l;
  l.backend = std::make_unique<CpuBackend>();
  auto m = Model::load(dir, *l.backend);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  if (m.is_ok()) l.model = std::move(m).value();
  return l;
}

std::vector<float> prompt_logits(Model& model, const std::vector<int32_t>& ids) {
  KvCache cache = model.make_kv_cache(1, static_cast<int>(ids.size()));
  auto out = model.forward({ids.data(), BatchLayout{1, static_cast<int>(ids.size())}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  if (!out.is_ok()) return {};
  std::vector<float> v(out->numel());
  copy_to_host_f32(model.backend(), *out, v.data());
  return v;
}

void replace_with_dense(Model& model, const std::string& name, std::vector<float> w, int64_t n, int64_t k,
                        std::vector<std::vector<float>>& storage) {
  ModelWeights& mw = model.mutable_weights();
  LinearWeight* lw = name == "lm_head" ? &mw.lm_head : nullptr;
  for (const auto& [n2, p] : model.named_linears())
    if (n2 == name) lw = const_cast<LinearWeight*>(p);
  ASSERT_NE(lw, nullptr) << name;
  storage.push_back(std::move(w));
  const View bias = lw->bias;
  *lw = LinearWeight{};
  lw->format = Format::kF32;
  lw->out_features = n;
  lw->in_features = k;
  lw->weight = View{storage.back().data(), Shape{n, k}, DType::kF32, Device::kCpu};
  lw->bias = bias;
}

}  // namespace compactor::test
