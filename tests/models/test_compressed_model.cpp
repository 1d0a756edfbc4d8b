// Compressed model directories (compress/compressed_model.h, model/quant_config.h): quantize
// stories260K and fixture-llama-sp with a trivial in-test RTN (mixed formats per module, act-order,
// quantized lm_head of a tied model), save, reload, and compare logits with the base model whose
// linears are replaced by the dequantized values; `compactor info` / `compactor eval` on the
// output; an interrupted save leaves nothing; corrupted tensors and inconsistent configs give
// named errors.
// Run: build-*/tests/test_compressed_model
#include <sys/wait.h>

#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "compress/compressed_model.h"
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

using test::RtnSpec;

std::map<std::string, QuantizedLinear> quantize_model(const Model& m,
                                                      const std::function<RtnSpec(const std::string&)>& choose,
                                                      bool lm_head) {
  return test::rtn_quantize_model(m, choose, lm_head);
}

Status load_status(const fs::path& dir) {
  CpuBackend backend;
  auto m = Model::load(dir, backend);
  return m.is_ok() ? Status::ok() : m.status();
}

// The base model with every quantized linear replaced by its dequantized f32 weight.
void make_reference(test::DenseReference& ref, const fs::path& base_dir,
                    const std::map<std::string, QuantizedLinear>& quantized) {
  ref.base = test::load_cpu_model(base_dir);
  for (const auto& [name, q] : quantized) {
    auto packed = pack_linear(q);
    ASSERT_TRUE(packed.is_ok()) << packed.status().message();
    std::vector<float> w(q.out_features * q.in_features);
    dequantize_ref(packed->ref(), w.data());
    ref.replace(name, std::move(w), q.out_features, q.in_features);
  }
}

class CompressedModel : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-compressed"); }
  void TearDown() override { fs::remove_all(tmp_); }
  fs::path tmp_;
};

// A mixed-precision stories260K: every format, per-channel, act-order, partial last groups
// (down_proj K = 172), and the tied lm_head quantized on its own.
RtnSpec stories_spec(const std::string& name) {
  if (name.ends_with("q_proj") || name.ends_with("k_proj") || name.ends_with("v_proj")) return {{4, 32, false}, false};
  if (name.ends_with("o_proj")) return {{8, 0, true}, false};
  if (name.ends_with("gate_proj") || name.ends_with("up_proj")) return {{3, 16, false}, true};
  if (name.ends_with("down_proj")) return {{2, 32, true}, false};
  return {{4, 64, false}, false};  // lm_head
}

TEST_F(CompressedModel, Stories260KMixedFormatsReloadWithDequantizedLogits) {
  const fs::path base_dir = test::model_dir("stories260K");
  test::LoadedModel base = test::load_cpu_model(base_dir);
  ASSERT_TRUE(base.model);
  const auto quantized = quantize_model(*base.model, stories_spec, /*lm_head=*/true);
  ASSERT_EQ(quantized.size(), 5u * 7 + 1);
  const fs::path out = tmp_ / "stories-q";
  Status s = save_compressed_model(*base.model, quantized, {{"recipe", "test-rtn"}}, out);
  ASSERT_TRUE(s.is_ok()) << s.message();
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "compactor.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;

  test::LoadedModel q = test::load_cpu_model(out);
  ASSERT_TRUE(q.model);
  ASSERT_NE(q.model->quantization(), nullptr);
  EXPECT_EQ(q.model->quantization()->modules.size(), quantized.size());
  EXPECT_EQ(q.model->quantization()->default_module.format, Format::kInt4);  // q/k/v: the most common
  const ModelWeights& w = q.model->weights();
  EXPECT_EQ(w.layers[0].q.format, Format::kInt4);
  EXPECT_EQ(w.layers[0].o.format, Format::kInt8);
  EXPECT_EQ(w.layers[0].o.group_size, 0);
  EXPECT_EQ(w.layers[2].gate.format, Format::kInt3);
  EXPECT_NE(w.layers[2].gate.g_idx.data, nullptr);
  EXPECT_EQ(w.layers[4].down.format, Format::kInt2);
  EXPECT_EQ(w.lm_head.format, Format::kInt4);
  EXPECT_EQ(q.model->parameter_count(), base.model->parameter_count() + 512 * 64);  // + the untied head

  test::DenseReference ref;
  make_reference(ref, base_dir, quantized);
  const std::vector<int32_t> ids = {1, 403, 261, 378, 300, 16, 85, 423, 270, 9, 33, 5};
  const std::vector<float> got = test::prompt_logits(*q.model, ids), want = test::prompt_logits(*ref.base.model, ids);
  EXPECT_LT(test::max_rel_diff(got, want), 1e-5);
  EXPECT_GT(test::max_rel_diff(got, test::prompt_logits(*base.model, ids)), 1e-3);  // quantization did change the model

  std::ifstream in(out / "compactor.json");
  const auto record = nlohmann::json::parse(in);
  EXPECT_EQ(record["provenance"]["recipe"], "test-rtn");
  const WeightBits bits = q.model->weight_bits();
  EXPECT_EQ(record["weights"]["bytes"].get<int64_t>(), bits.bytes);
  EXPECT_EQ(record["weights"]["parameters"].get<int64_t>(), bits.params);
  EXPECT_EQ(record["weights"]["quantized_parameters"].get<int64_t>(), bits.quantized_params);
  EXPECT_GT(bits.quantized_bits_per_weight(), 2.0);
  EXPECT_LT(bits.quantized_bits_per_weight(), 8.5);
}

TEST_F(CompressedModel, FixtureLlamaSpInt4G128ReloadWithDequantizedLogits) {
  const fs::path base_dir = test::model_dir("fixture-llama-sp");
  test::LoadedModel base = test::load_cpu_model(base_dir);
  ASSERT_TRUE(base.model);
  const auto quantized = quantize_model(*base.model, [](const std::string&) { return RtnSpec{{4, 128, false}, false}; }, false);
  const fs::path out = tmp_ / "sp-w4g128";
  Status s = save_compressed_model(*base.model, quantized, {{"recipe", "rtn-w4g128"}}, out);
  ASSERT_TRUE(s.is_ok()) << s.message();
  test::LoadedModel q = test::load_cpu_model(out);
  ASSERT_TRUE(q.model);
  EXPECT_EQ(q.model->parameter_count(), 24877440);
  const WeightBits bits = q.model->weight_bits();
  EXPECT_NEAR(bits.quantized_bits_per_weight(), 4.0 + 16.0 / 128 + 4.0 / 128, 1e-9);
  EXPECT_LT(bits.bytes, fs::file_size(base_dir / "model.safetensors"));

  test::DenseReference ref;
  make_reference(ref, base_dir, quantized);
  const std::vector<int32_t> ids = {1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889};
  EXPECT_LT(test::max_rel_diff(test::prompt_logits(*q.model, ids), test::prompt_logits(*ref.base.model, ids)), 1e-5);
}

struct CliRun {
  int exit_code = -1;
  std::string out;
};

CliRun run_cli(const std::string& args) {
  const std::string cmd = test::binary_path().string() + " " + args + " 2>&1";
  CliRun r;
  FILE* pipe = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A w4g32 stories260K directory for the remaining tests.
fs::path save_stories_w4(const fs::path& tmp, const std::string& name) {
  test::LoadedModel base = test::load_cpu_model(test::model_dir("stories260K"));
  const auto quantized = quantize_model(*base.model, [](const std::string&) { return RtnSpec{{4, 32, false}, false}; }, false);
  const fs::path out = tmp / name;
  Status s = save_compressed_model(*base.model, quantized, {{"recipe", "rtn"}}, out);
  EXPECT_TRUE(s.is_ok()) << s.message();
  return out;
}

TEST_F(CompressedModel, CliInfoAndEvalWorkOnTheOutput) {
  const fs::path out = save_stories_w4(tmp_, "cli");
  CliRun info = run_cli("info " + out.string() + " --json");
  ASSERT_EQ(info.exit_code, 0) << info.out;
  const auto j = nlohmann::json::parse(info.out.substr(info.out.find('{')));
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["parameters"], 260032);
  ASSERT_TRUE(j.contains("quantization")) << info.out;
  EXPECT_EQ(j["quantization"]["format"], "int4");
  EXPECT_EQ(j["quantization"]["group_size"], 32);
  // 4 + 16/32 + 4/32 bits where K is a multiple of 32; down_proj (K = 172) pays for its partial group.
  test::LoadedModel loaded = test::load_cpu_model(out);
  ASSERT_TRUE(loaded.model);
  double bytes = 0, params = 0;
  for (const auto& [name, lw] : loaded.model->named_linears()) {
    bytes += static_cast<double>(quant_packed_bytes(QuantSpec{4, 32, false}, lw->out_features, lw->in_features, false));
    params += static_cast<double>(lw->out_features * lw->in_features);
  }
  EXPECT_NEAR(j["quantization"]["packed_bits_per_weight"].get<double>(), 8 * bytes / params, 1e-9);
  EXPECT_GT(j["quantization"]["packed_bits_per_weight"].get<double>(), 4.625);
  CliRun table = run_cli("info " + out.string());
  EXPECT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("35 modules packed, default int4 group 32"), std::string::npos) << table.out;
  CliRun eval = run_cli("eval " + out.string() + " --tasks ppl --limit-windows 2 --no-record");
  EXPECT_EQ(eval.exit_code, 0) << eval.out;
  EXPECT_NE(eval.out.find("ppl"), std::string::npos) << eval.out;
}

TEST_F(CompressedModel, InterruptedSaveLeavesNothingBehind) {
  test::LoadedModel base = test::load_cpu_model(test::model_dir("stories260K"));
  const auto quantized = quantize_model(*base.model, [](const std::string&) { return RtnSpec{{4, 32, false}, false}; }, false);
  const fs::path out = tmp_ / "interrupted";
  // Invalid UTF-8 in the provenance fails the save after model.safetensors was written.
  Status s = save_compressed_model(*base.model, quantized, {{"note", std::string("\xff\xfe")}}, out);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("provenance"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(tmp_)) ADD_FAILURE() << "left behind: " << e.path();

  auto bad = quantized;
  bad.begin()->second.codes[0] = 200;  // not a 4-bit code: rejected before anything is written
  s = save_compressed_model(*base.model, bad, {}, out);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find(bad.begin()->first), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(out));

  auto unknown = quantized;
  unknown.emplace("model.layers.9.mlp.up_proj", quantized.begin()->second);
  s = save_compressed_model(*base.model, unknown, {}, out);
  EXPECT_NE(s.message().find("model.layers.9.mlp.up_proj"), std::string::npos) << s.message();

  ASSERT_TRUE(save_compressed_model(*base.model, quantized, {}, out).is_ok());
  s = save_compressed_model(*base.model, quantized, {}, out);  // exists: no overwrite by default
  EXPECT_FALSE(s.is_ok());
  EXPECT_TRUE(save_compressed_model(*base.model, quantized, {}, out, Overwrite::kYes).is_ok());
}

// A compressed base keeps its packed modules when more are quantized (here its tied lm_head).
TEST_F(CompressedModel, CompressedBaseKeepsItsPackedModules) {
  const fs::path first = save_stories_w4(tmp_, "first");
  test::LoadedModel base = test::load_cpu_model(first);
  ASSERT_TRUE(base.model);
  test::LoadedModel dense = test::load_cpu_model(test::model_dir("stories260K"));
  std::map<std::string, QuantizedLinear> head;
  head.emplace("lm_head", quantize_model(*dense.model, [](const std::string&) { return RtnSpec{{8, 0, true}, false}; },
                                         true).at("lm_head"));
  const fs::path second = tmp_ / "second";
  Status s = save_compressed_model(*base.model, head, {{"step", 2}}, second);
  ASSERT_TRUE(s.is_ok()) << s.message();
  test::LoadedModel q = test::load_cpu_model(second);
  ASSERT_TRUE(q.model);
  EXPECT_EQ(q.model->quantization()->modules.size(), 5u * 7 + 1);
  EXPECT_EQ(q.model->weights().lm_head.format, Format::kInt8);
  EXPECT_EQ(q.model->weights().layers[3].up.format, Format::kInt4);
  std::ifstream in(second / "compactor.json");
  const auto record = nlohmann::json::parse(in);
  const WeightBits bits = q.model->weight_bits();
  EXPECT_EQ(record["weights"]["parameters"].get<int64_t>(), bits.params);
  EXPECT_EQ(record["weights"]["quantized_parameters"].get<int64_t>(), bits.quantized_params);
  EXPECT_EQ(record["weights"]["quantized_bytes"].get<int64_t>(), bits.quantized_bytes);
  const std::vector<int32_t> ids = {1, 403, 261, 378};
  const std::vector<float> a = test::prompt_logits(*q.model, ids), b = test::prompt_logits(*base.model, ids);
  EXPECT_GT(test::max_rel_diff(a, b), 0.0);  // the int8 head replaced the f32 embeddings as the output layer
}

// Rewrites dir's config.json through `edit`.
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
void edit_tensors(const fs::path& dir, const std::function<void(std::vector<NamedView>&, std::vector<std::vector<uint8_t>>&)>& edit) {
  auto file = SafetensorsFile::open(dir / "model.safetensors");
  ASSERT_TRUE(file.is_ok());
  std::vector<std::vector<uint8_t>> storage;
  std::vector<NamedView> tensors;
  storage.reserve((*file)->tensors().size() + 1);
  for (const auto& e : (*file)->tensors()) {
    View v = e.view();
    storage.emplace_back(static_cast<const uint8_t*>(v.data), static_cast<const uint8_t*>(v.data) + v.bytes());
    v.data = storage.back().data();
    tensors.push_back({e.name, v});
  }
  edit(tensors, storage);
  file->reset();
  ASSERT_TRUE(write_safetensors(dir / "model.safetensors", tensors).is_ok());
}

fs::path copy_dir(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

void expect_load_error(const fs::path& dir, const std::string& needle) {
  Status s = load_status(dir);
  ASSERT_FALSE(s.is_ok()) << "loading " << dir << " should fail with '" << needle << "'";
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST_F(CompressedModel, CorruptedTensorsAndInconsistentConfigGiveNamedErrors) {
  const fs::path good = save_stories_w4(tmp_, "good");
  const std::string q0 = "model.layers.0.self_attn.q_proj";

  const fs::path truncated = copy_dir(good, tmp_ / "truncated");
  fs::resize_file(truncated / "model.safetensors", fs::file_size(truncated / "model.safetensors") - 1000);
  expect_load_error(truncated, "model.safetensors");

  const fs::path short_qweight = copy_dir(good, tmp_ / "short-qweight");
  edit_tensors(short_qweight, [&](std::vector<NamedView>& t, auto&) {
    for (auto& nv : t)
      if (nv.name == q0 + ".qweight") nv.view.shape = Shape{nv.view.shape[0] - 1, nv.view.shape[1]};
  });
  expect_load_error(short_qweight, q0 + ".qweight");

  const fs::path scales_dtype = copy_dir(good, tmp_ / "scales-dtype");
  edit_tensors(scales_dtype, [&](std::vector<NamedView>& t, auto&) {
    for (auto& nv : t)
      if (nv.name == q0 + ".scales") nv.view = View{nv.view.data, Shape{nv.view.shape[0], nv.view.shape[1] / 2}, DType::kF32};
  });
  expect_load_error(scales_dtype, q0 + ".scales");

  const fs::path missing = copy_dir(good, tmp_ / "missing-qzeros");
  edit_tensors(missing, [&](std::vector<NamedView>& t, auto&) {
    std::erase_if(t, [&](const NamedView& nv) { return nv.name == q0 + ".qzeros"; });
  });
  expect_load_error(missing, q0 + ".qzeros");

  const fs::path bad_gidx = copy_dir(good, tmp_ / "bad-g-idx");
  edit_config(bad_gidx, [&](nlohmann::json& j) { j["quantization_config"]["modules"][q0]["desc_act"] = true; });
  expect_load_error(bad_gidx, "g_idx");
  edit_tensors(bad_gidx, [&](std::vector<NamedView>& t, std::vector<std::vector<uint8_t>>& storage) {
    storage.emplace_back(64 * 4, 0);
    reinterpret_cast<int32_t*>(storage.back().data())[5] = 7;  // only groups 0, 1 exist
    t.push_back({q0 + ".g_idx", View{storage.back().data(), Shape{64}, DType::kI32}});
  });
  expect_load_error(bad_gidx, q0 + ".g_idx' entry 5 is 7");

  const fs::path unlisted = copy_dir(good, tmp_ / "unlisted");
  edit_config(unlisted, [&](nlohmann::json& j) { j["quantization_config"]["modules"].erase(q0); });
  expect_load_error(unlisted, "not listed");

  const fs::path wrong_bits = copy_dir(good, tmp_ / "wrong-bits");
  edit_config(wrong_bits, [&](nlohmann::json& j) {
    j["quantization_config"]["modules"][q0]["bits"] = 3;
    j["quantization_config"]["modules"][q0]["format"] = "int3";
  });
  expect_load_error(wrong_bits, q0 + ".qweight");

  const fs::path contradiction = copy_dir(good, tmp_ / "contradiction");
  edit_config(contradiction, [&](nlohmann::json& j) { j["quantization_config"]["modules"][q0]["format"] = "int8"; });
  expect_load_error(contradiction, "contradicts bits 4");

  const fs::path foreign = copy_dir(good, tmp_ / "foreign");
  edit_config(foreign, [&](nlohmann::json& j) { j["quantization_config"]["quant_method"] = "gptq"; });
  expect_load_error(foreign, "quant_method \"gptq\"");

  const fs::path no_config = copy_dir(good, tmp_ / "no-config");
  edit_config(no_config, [&](nlohmann::json& j) { j.erase("quantization_config"); });
  expect_load_error(no_config, "not listed in config.json's quantization_config");

  EXPECT_TRUE(load_status(good).is_ok());
}

}  // namespace
}  // namespace compactor
