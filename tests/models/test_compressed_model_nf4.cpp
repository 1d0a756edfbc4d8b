// Compressed model directories with NF4 modules (formats/nf4.h, compress/compressed_model.h,
// model/quant_config.h): fixture-llama-sp all-NF4 and a mixed intN/NF4 stories260K (partial last
// block in down_proj K = 172, the tied lm_head quantized on its own) are saved, reloaded, and their
// logits compared with the base model whose linears are replaced by dequantize_nf4_ref's weights;
// bits per weight; corrupted NF4 tensors and configs give errors naming the tensor or key.
// Run: build-*/tests/test_compressed_model_nf4
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "compress/compressed_model.h"
#include "formats/nf4.h"
#include "formats/quant_pack.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "support/compare.h"
#include "support/model_runs.h"
#include "support/fixtures.h"
#include "support/quant_fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

std::vector<float> dense_f32(const Model& m, const std::string& tensor) {
  const View v = m.files().find(tensor)->view();
  std::vector<float> out(v.numel());
  convert_to_f32(v.data, v.dtype, v.numel(), out.data());
  return out;
}

// NF4 of every linear `pick` accepts (plus the tied embedding as "lm_head" when `lm_head`).
std::map<std::string, NF4Linear> nf4_model(const Model& m, const std::function<bool(const std::string&)>& pick,
                                           bool lm_head, int block = kNF4DefaultBlock) {
  std::map<std::string, NF4Linear> out;
  for (const auto& [name, lw] : m.named_linears()) {
    if (!pick(name)) continue;
    const std::vector<float> w = dense_f32(m, name + ".weight");
    out.emplace(name, quantize_nf4(w.data(), lw->out_features, lw->in_features, block));
  }
  if (lm_head) {
    const std::vector<float> w = dense_f32(m, m.arch().names.embed);
    out.emplace("lm_head", quantize_nf4(w.data(), m.config().vocab_size, m.config().hidden_size, block));
  }
  return out;
}

// The base model with the given linears replaced by dense f32 weights.
void make_reference(test::DenseReference& ref, const fs::path& base_dir, const std::map<std::string, NF4Linear>& nf4,
                    const std::map<std::string, QuantizedLinear>& intn = {}) {
  ref.base = test::load_cpu_model(base_dir);
  for (const auto& [name, q] : nf4) {
    auto packed = pack_nf4(q);
    ASSERT_TRUE(packed.is_ok()) << packed.status().message();
    std::vector<float> w(q.out_features * q.in_features);
    dequantize_nf4_ref(packed->ref(), w.data());
    ref.replace(name, std::move(w), q.out_features, q.in_features);
  }
  for (const auto& [name, q] : intn) {
    std::vector<float> w(q.out_features * q.in_features);
    dequantize_ref(q, w.data());
    ref.replace(name, std::move(w), q.out_features, q.in_features);
  }
}

class CompressedModelNF4 : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-nf4"); }
  void TearDown() override { fs::remove_all(tmp_); }
  fs::path tmp_;
};

TEST_F(CompressedModelNF4, FixtureLlamaSpReloadsWithDequantizedLogits) {
  const fs::path base_dir = test::model_dir("fixture-llama-sp");
  test::LoadedModel base = test::load_cpu_model(base_dir);
  ASSERT_TRUE(base.model);
  const auto nf4 = nf4_model(*base.model, [](const std::string&) { return true; }, false);
  const fs::path out = tmp_ / "sp-nf4";
  Status s = save_compressed_model(*base.model, {}, nf4, {{"recipe", "nf4"}}, out);
  ASSERT_TRUE(s.is_ok()) << s.message();
  test::LoadedModel q = test::load_cpu_model(out);
  ASSERT_TRUE(q.model);
  ASSERT_NE(q.model->quantization(), nullptr);
  EXPECT_EQ(q.model->quantization()->default_module.format, Format::kNF4);
  EXPECT_EQ(q.model->quantization()->default_module.spec.group_size, 64);
  const ModelWeights& w = q.model->weights();
  EXPECT_EQ(w.layers[0].q.format, Format::kNF4);
  EXPECT_EQ(w.layers[0].q.group_size, 64);
  EXPECT_NE(w.layers[0].down.nested_scales.data, nullptr);
  EXPECT_EQ(q.model->parameter_count(), 24877440);
  const WeightBits bits = q.model->weight_bits();
  std::printf("fixture-llama-sp nf4: quantized bits per weight %.4f, all weights %.4f\n",
              bits.quantized_bits_per_weight(), bits.bits_per_weight());
  EXPECT_NEAR(bits.quantized_bits_per_weight(), 4.127, 0.002);
  std::ifstream in(out / "compactor.json");
  const auto record = nlohmann::json::parse(in);
  EXPECT_EQ(record["weights"]["quantized_bytes"].get<int64_t>(), bits.quantized_bytes);

  test::DenseReference ref;
  make_reference(ref, base_dir, nf4);
  const std::vector<int32_t> ids = {1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889};
  const std::vector<float> got = test::prompt_logits(*q.model, ids);
  EXPECT_LT(test::max_rel_diff(got, test::prompt_logits(*ref.base.model, ids)), 1e-5);
  EXPECT_GT(test::max_rel_diff(got, test::prompt_logits(*base.model, ids)), 1e-4);  // quantization did change the model
}

TEST_F(CompressedModelNF4, MixedIntNAndNF4Stories260KWithTiedHead) {
  const fs::path base_dir = test::model_dir("stories260K");
  test::LoadedModel base = test::load_cpu_model(base_dir);
  ASSERT_TRUE(base.model);
  auto is_nf4 = [](const std::string& name) { return !name.ends_with("o_proj"); };
  const auto nf4 = nf4_model(*base.model, is_nf4, /*lm_head=*/true);
  auto intn = test::rtn_quantize_model(*base.model, [](const std::string&) { return test::RtnSpec{{4, 32, false}, false}; },
                                       false);
  std::erase_if(intn, [&](const auto& kv) { return is_nf4(kv.first); });
  ASSERT_EQ(intn.size(), 5u);
  const fs::path out = tmp_ / "stories-mixed";
  Status s = save_compressed_model(*base.model, intn, nf4, {{"recipe", "mixed"}}, out);
  ASSERT_TRUE(s.is_ok()) << s.message();
  test::LoadedModel q = test::load_cpu_model(out);
  ASSERT_TRUE(q.model);
  const ModelWeights& w = q.model->weights();
  EXPECT_EQ(w.layers[0].o.format, Format::kInt4);
  EXPECT_EQ(w.layers[1].down.format, Format::kNF4);
  EXPECT_EQ(w.layers[1].down.in_features, 172);  // partial last block
  EXPECT_EQ(w.lm_head.format, Format::kNF4);

  test::DenseReference ref;
  make_reference(ref, base_dir, nf4, intn);
  const std::vector<int32_t> ids = {1, 403, 261, 378, 300, 16, 85, 423, 270, 9, 33, 5};
  EXPECT_LT(test::max_rel_diff(test::prompt_logits(*q.model, ids), test::prompt_logits(*ref.base.model, ids)), 1e-5);

  // a module in both maps is refused
  const std::string down0 = "model.layers.0.mlp.down_proj";
  const NF4Linear& d = nf4.at(down0);
  std::map<std::string, QuantizedLinear> both = intn;
  both.emplace(down0, test::rtn_quantize(dense_f32(*base.model, down0 + ".weight"), d.out_features, d.in_features,
                                         {{4, 32, false}, false}, 1));
  s = save_compressed_model(*base.model, both, nf4, {}, tmp_ / "both");
  EXPECT_NE(s.message().find("both as intN and as nf4"), std::string::npos) << s.message();
}

Status load_status(const fs::path& dir) {
  CpuBackend backend;
  auto m = Model::load(dir, backend);
  return m.is_ok() ? Status::ok() : m.status();
}

void expect_load_error(const fs::path& dir, const std::string& needle) {
  Status s = load_status(dir);
  ASSERT_FALSE(s.is_ok()) << "loading " << dir << " should fail with '" << needle << "'";
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

void edit_config(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j;
  {
    std::ifstream in(dir / "config.json");
    j = nlohmann::json::parse(in);
  }
  edit(j);
  std::ofstream(dir / "config.json") << j.dump(2);
}

// Rewrites dir's model.safetensors with `edit` applied to a copy of its tensors.
void edit_tensors(const fs::path& dir, const std::function<void(std::vector<NamedView>&)>& edit) {
  auto file = SafetensorsFile::open(dir / "model.safetensors");
  ASSERT_TRUE(file.is_ok());
  std::vector<std::vector<uint8_t>> storage;
  std::vector<NamedView> tensors;
  storage.reserve((*file)->tensors().size());
  for (const auto& e : (*file)->tensors()) {
    View v = e.view();
    storage.emplace_back(static_cast<const uint8_t*>(v.data), static_cast<const uint8_t*>(v.data) + v.bytes());
    v.data = storage.back().data();
    tensors.push_back({e.name, v});
  }
  edit(tensors);
  file->reset();
  ASSERT_TRUE(write_safetensors(dir / "model.safetensors", tensors).is_ok());
}

fs::path copy_dir(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

TEST_F(CompressedModelNF4, CorruptedTensorsAndConfigsGiveNamedErrors) {
  test::LoadedModel base = test::load_cpu_model(test::model_dir("stories260K"));
  ASSERT_TRUE(base.model);
  const fs::path good = tmp_ / "good";
  ASSERT_TRUE(save_compressed_model(*base.model, {}, nf4_model(*base.model, [](auto&) { return true; }, false), {}, good)
                  .is_ok());
  ASSERT_TRUE(load_status(good).is_ok());
  const std::string q0 = "model.layers.0.self_attn.q_proj";

  const fs::path missing = copy_dir(good, tmp_ / "missing");
  edit_tensors(missing, [&](auto& t) { std::erase_if(t, [&](const NamedView& nv) { return nv.name == q0 + ".nested_offset"; }); });
  expect_load_error(missing, "tensor '" + q0 + ".nested_offset' is missing");

  const fs::path dtype = copy_dir(good, tmp_ / "dtype");
  edit_tensors(dtype, [&](auto& t) {
    for (auto& nv : t)
      if (nv.name == q0 + ".scales") nv.view = View{nv.view.data, Shape{nv.view.shape[0], nv.view.shape[1] / 2}, DType::kF16};
  });
  expect_load_error(dtype, "'" + q0 + ".scales' is f16");

  const fs::path block = copy_dir(good, tmp_ / "block");
  edit_config(block, [&](nlohmann::json& j) { j["quantization_config"]["modules"][q0]["group_size"] = 32; });
  expect_load_error(block, q0 + ".scales");

  const fs::path per_channel = copy_dir(good, tmp_ / "per-channel");
  edit_config(per_channel, [&](nlohmann::json& j) { j["quantization_config"]["modules"][q0]["group_size"] = -1; });
  expect_load_error(per_channel, "modules." + q0 + ": format \"nf4\" needs a positive integer \"group_size\"");

  const fs::path as_int4 = copy_dir(good, tmp_ / "as-int4");
  edit_config(as_int4, [&](nlohmann::json& j) { j["quantization_config"]["modules"][q0]["format"] = "int4"; });
  expect_load_error(as_int4, q0 + ".qzeros");
}

}  // namespace
}  // namespace compactor
