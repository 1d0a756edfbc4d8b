// The layer-by-layer calibration machinery on real fixture models: forward_block/embed reproduce
// forward(), replace_linear with the same weights changes nothing, AWQ's folds (norm → q/k/v and
// gate/up, v → o on an MHA model, up → down) leave float outputs unchanged, calibration sets
// (sampling, seeds, too little data), and quantized models saved and reloaded give the logits of
// the in-memory quantized model.
// Run: build-comp/tests/test_ptq_driver
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

#include "compress/calibration.h"
#include "compress/ptq.h"
#include "compress/ptq_save.h"
#include "io/hf_config.h"
#include "model/synthetic.h"
#include "support/fixtures.h"
#include "tokenizer/tokenizer.h"

namespace compactor {
namespace {

struct Loaded {
  std::unique_ptr<Backend> backend = std::move(make_backend(BackendKind::kCpu)).value();
  std::unique_ptr<Model> model;
  explicit Loaded(const std::filesystem::path& dir) {
    auto m = Model::load(dir, *backend);
    COMPACTOR_ASSERT(m.is_ok(), "{}", m.status().message());
    model = std::move(m).value();
  }
};

std::vector<int32_t> some_ids(int64_t n, int64_t vocab, int seed) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + seed * 104729 + 13) % vocab);
  return ids;
}

std::vector<float> logits(Model& m, const std::vector<int32_t>& ids, int batch) {
  const int t = static_cast<int>(ids.size()) / batch;
  KvCache cache = m.make_kv_cache(batch, t);
  auto r = m.forward({ids.data(), BatchLayout{batch, t}, LogitsMode::kAll, nullptr}, cache);
  COMPACTOR_ASSERT(r.is_ok(), "{}", r.status().message());
  std::vector<float> out(r->numel());
  copy_to_host_f32(m.backend(), *r, out.data());
  return out;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(a[i])));
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
  }
  return diff / scale;
}

TEST(ForwardBlock, EmbedAndBlocksReproduceForward) {
  Loaded f(test::model_dir("stories260K"));
  const ModelConfig& c = f.model->config();
  const int batch = 2, t = 24;
  const std::vector<int32_t> ids = some_ids(batch * t, c.vocab_size, 1);
  std::vector<float> expected;
  TapFn tap = [&](std::string_view name, int layer, View v) {
    if (name == "final_norm") return;
    if (name == "ffn_out" && layer == c.num_layers - 1) expected.assign(v.as<float>(), v.as<float>() + v.numel());
  };
  KvCache cache = f.model->make_kv_cache(batch, t);
  ASSERT_TRUE(f.model->forward({ids.data(), BatchLayout{batch, t}, LogitsMode::kNone, &tap}, cache).is_ok());
  Tensor x = Tensor::empty(Shape{batch * t, c.hidden_size}, DType::kF32);
  ASSERT_TRUE(f.model->embed(x, ids.data()).is_ok());
  KvCache cache2 = f.model->make_kv_cache(batch, t);
  std::vector<float> ffn_out;
  TapFn tap2 = [&](std::string_view name, int layer, View v) {
    if (name == "ffn_out" && layer == c.num_layers - 1) ffn_out.assign(v.as<float>(), v.as<float>() + v.numel());
  };
  for (int l = 0; l < c.num_layers; ++l)
    ASSERT_TRUE(f.model->forward_block(l, x, BatchLayout{batch, t}, cache2, &tap2).is_ok());
  ASSERT_EQ(ffn_out.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(ffn_out[i], expected[i]) << i;
  // Bad arguments are errors, not crashes.
  EXPECT_FALSE(f.model->forward_block(c.num_layers, x, BatchLayout{batch, t}, cache2).is_ok());
  EXPECT_FALSE(f.model->forward_block(0, View(x).row_slice(0, 3), BatchLayout{batch, t}, cache2).is_ok());
  EXPECT_FALSE(f.model->forward_block(0, x, BatchLayout{batch, t + 1}, cache2).is_ok());
}

TEST(ReplaceLinear, SameWeightsInF32LeaveLogitsUnchangedAndBadNamesAreErrors) {
  Loaded f(test::model_dir("fixture-llama-sp"));
  const std::vector<int32_t> ids = some_ids(16, f.model->config().vocab_size, 2);
  const std::vector<float> before = logits(*f.model, ids, 1);
  const LinearWeight& q = f.model->weights().layers[3].q;
  Tensor w = Tensor::empty(Shape{q.out_features, q.in_features}, DType::kF32);
  copy_to_host_f32(*f.backend, q.weight, w.as<float>());
  ASSERT_TRUE(f.model->replace_linear(3, "q", w).is_ok());
  EXPECT_EQ(f.model->weights().layers[3].q.format, Format::kF32);
  EXPECT_LT(max_rel_diff(before, logits(*f.model, ids, 1)), 1e-6);
  EXPECT_FALSE(f.model->replace_linear(3, "qq", w).is_ok());
  EXPECT_FALSE(f.model->replace_linear(99, "q", w).is_ok());
  EXPECT_FALSE(f.model->replace_linear(3, "down", w).is_ok());  // wrong shape
  EXPECT_FALSE(f.model->replace_norm(0, "ffn_norm", Tensor::empty(Shape{384}, DType::kF32)).is_ok());
}

CalibrationSet small_calibration(const Model& m, int samples, int seqlen, int seed) {
  std::vector<int32_t> ids = some_ids(static_cast<int64_t>(samples) * seqlen, m.config().vocab_size, seed);
  return calibration_from_ids(std::move(ids), samples, seqlen);
}

// AWQ with fold_only: the scales are searched and folded, nothing is quantized, so the model must
// compute the same function. fixture-llama-bpe has MHA (v → o fold) and untied lm_head.
TEST(AwqFold, FoldsLeaveFloatOutputsUnchanged) {
  for (const char* name : {"fixture-llama-bpe", "fixture-llama-sp"}) {
    SCOPED_TRACE(name);
    Loaded f(test::model_dir(name));
    const std::vector<int32_t> ids = some_ids(2 * 32, f.model->config().vocab_size, 3);
    const std::vector<float> before = logits(*f.model, ids, 2);
    PtqOptions o;
    o.method = PtqMethod::kAwq;
    o.spec = QuantSpec{3, 128, false};
    o.awq_fold_only = true;
    o.awq.grid = 5;
    o.quiet = true;
    const CalibrationSet calib = small_calibration(*f.model, 4, 64, 4);
    auto r = quantize_model(*f.model, &calib, o);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_TRUE(r->quantized.empty());
    // Some scales were actually folded: norms and linears changed.
    ASSERT_FALSE(r->modified_dense.empty());
    bool o_changed = false;
    for (const auto& t : r->modified_dense) o_changed |= t.find("o_proj") != std::string::npos;
    EXPECT_EQ(o_changed, std::string(name) == "fixture-llama-bpe");  // v → o only when shapes allow (MHA)
    EXPECT_LT(max_rel_diff(before, logits(*f.model, ids, 2)), 1e-5);
  }
}

TEST(Calibration, TextWindowsAreSeededDrawsWithBos) {
  Loaded f(test::model_dir("fixture-llama-sp"));
  auto tok = std::move(load_tokenizer(test::model_dir("fixture-llama-sp"))).value();
  CalibrationOptions o;
  o.file = test::shared_dir() / "data/calibration/tiny.utf8";
  o.samples = 8;
  o.seqlen = 128;
  o.seed = 1;
  auto a = load_calibration(o, *tok);
  ASSERT_TRUE(a.is_ok()) << a.status().message();
  EXPECT_EQ(a->ids.size(), 8u * 128u);
  EXPECT_EQ(a->mode, "text");
  EXPECT_EQ(a->sha256.size(), 64u);
  for (int s = 0; s < 8; ++s) EXPECT_EQ(a->sample(s)[0], tok->bos_id());
  auto b = load_calibration(o, *tok);
  EXPECT_EQ(a->ids, b->ids);
  o.seed = 2;
  auto c = load_calibration(o, *tok);
  EXPECT_NE(a->ids, c->ids);
}

TEST(Calibration, JsonlDocumentsAndTooLittleDataAreNamedErrors) {
  auto tok = std::move(load_tokenizer(test::model_dir("fixture-llama-sp"))).value();
  CalibrationOptions o;
  o.file = test::shared_dir() / "data/calibration/c4_demo.jsonl";
  o.samples = 16;
  o.seqlen = 256;
  auto ok = load_calibration(o, *tok);
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(ok->mode, "jsonl");
  o.seqlen = 2048;  // few C4 documents are that long
  o.samples = 300;
  auto few = load_calibration(o, *tok);
  ASSERT_FALSE(few.is_ok());
  EXPECT_NE(few.status().message().find("c4_demo.jsonl"), std::string::npos) << few.status().message();
  EXPECT_NE(few.status().message().find("shorter than"), std::string::npos) << few.status().message();
  o.file = test::shared_dir() / "data/calibration/tiny.utf8";
  o.samples = 100000;
  o.seqlen = 128;
  auto small = load_calibration(o, *tok);
  ASSERT_FALSE(small.is_ok());
  EXPECT_NE(small.status().message().find("smaller than requested"), std::string::npos) << small.status().message();
  o.file = test::shared_dir() / "data/calibration/missing.txt";
  EXPECT_FALSE(load_calibration(o, *tok).is_ok());
}

TEST(Driver, SequencesLongerThanTheModelAreRejected) {
  Loaded f(test::model_dir("stories260K"));
  PtqOptions o;
  o.method = PtqMethod::kGptq;
  o.spec = QuantSpec{4, 0, false};
  o.quiet = true;
  const CalibrationSet calib = small_calibration(*f.model, 1, 600, 5);  // max 512 positions
  auto r = quantize_model(*f.model, &calib, o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("600"), std::string::npos) << r.status().message();
}

// One driver for every architecture: tiny random Llama (MHA, untied), Mistral (GQA) and Qwen2 (GQA,
// q/k/v biases) run GPTQ and AWQ without per-model code; AWQ's folds keep the float function.
TEST(Driver, EveryArchitectureWithoutPerModelCode) {
  struct Arch {
    const char* hf;
    const char* type;
    int kv_heads;
    bool tied;
  };
  for (const Arch& a : {Arch{"LlamaForCausalLM", "llama", 4, false}, Arch{"MistralForCausalLM", "mistral", 2, false},
                        Arch{"Qwen2ForCausalLM", "qwen2", 2, true}}) {
    SCOPED_TRACE(a.hf);
    const nlohmann::json j = {{"architectures", {a.hf}}, {"model_type", a.type}, {"hidden_size", 64},
                              {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                              {"num_key_value_heads", a.kv_heads}, {"vocab_size", 97}, {"max_position_embeddings", 256},
                              {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                              {"tie_word_embeddings", a.tied}, {"torch_dtype", "float32"}};
    auto cfg = parse_model_config(j, "tiny");
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
    for (PtqMethod method : {PtqMethod::kGptq, PtqMethod::kAwq}) {
      auto backend = std::move(make_backend(BackendKind::kCpu)).value();
      auto model = std::move(Model::allocate(*cfg, *backend)).value();
      fill_synthetic_weights(*model, 11, [&](View out, uint64_t stream, float mean, float sd) {
        // Norms around 1, everything else (biases included) N(0, 0.1²).
        fill_normal_host(*backend, out, stream, mean, mean == 1.f ? 0.2f : 0.1f);
      });
      const std::vector<int32_t> ids = some_ids(32, 97, 12);
      const std::vector<float> before = logits(*model, ids, 1);
      const CalibrationSet calib = small_calibration(*model, 4, 32, 13);
      PtqOptions o;
      o.method = method;
      o.spec = QuantSpec{4, 32, false};
      o.act_order = method == PtqMethod::kGptq;
      o.awq_fold_only = method == PtqMethod::kAwq;
      o.quiet = true;
      auto r = quantize_model(*model, &calib, o);
      ASSERT_TRUE(r.is_ok()) << r.status().message();
      const std::vector<float> after = logits(*model, ids, 1);
      if (method == PtqMethod::kAwq) {
        EXPECT_LT(max_rel_diff(before, after), 1e-5);
      } else {
        EXPECT_EQ(r->linears.size(), 2u * 7u);
        for (const LinearReport& l : r->linears) EXPECT_LE(l.rel_error, l.rtn_rel_error) << l.module;
        EXPECT_GT(max_rel_diff(before, after), 0.0);
      }
    }
  }
}

// Saved and reloaded (packed intN weights, AWQ's f32 norms) == the in-memory quantized model.
TEST(Save, ReloadedModelComputesTheQuantizedModel) {
  for (PtqMethod method : {PtqMethod::kGptq, PtqMethod::kAwq}) {
    SCOPED_TRACE(ptq_method_name(method));
    Loaded f(test::model_dir("stories260K"));
    const std::vector<int32_t> ids = some_ids(48, f.model->config().vocab_size, 6);
    PtqOptions o;
    o.method = method;
    o.spec = QuantSpec{4, 0, false};
    o.act_order = method == PtqMethod::kGptq;
    o.quiet = true;
    const CalibrationSet calib = small_calibration(*f.model, 4, 64, 7);
    auto r = quantize_model(*f.model, &calib, o);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(r->quantized.size(), 5u * 7u);
    const std::vector<float> in_memory = logits(*f.model, ids, 1);
    const auto dir = test::make_temp_dir("ptq-save");
    const auto out = dir / "model";
    ASSERT_TRUE(save_quantized_model(*f.model, *r, {{"test", true}}, out).is_ok());
    // An existing directory is not replaced without Overwrite::kYes.
    EXPECT_FALSE(save_quantized_model(*f.model, *r, {}, out).is_ok());
    Loaded g(out);
    EXPECT_LT(max_rel_diff(in_memory, logits(*g.model, ids, 1)), 1e-4);
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace compactor
