// config.json parsing: the fixture models' configs, crafted Mistral/Qwen2/Llama-3.1 configs in the
// shapes their public checkpoints use, transformers-5 `rope_parameters`, and unsupported/invalid ones.
// Run: build-*/tests/test_hf_config
#include <gtest/gtest.h>

#include <fstream>

#include "io/hf_config.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Result<ModelConfig> parse(const json& j) { return parse_model_config(j, "crafted/config.json"); }

void expect_error(const json& j, StatusCode code, std::initializer_list<const char*> words) {
  auto r = parse(j);
  ASSERT_FALSE(r.is_ok()) << j.dump();
  EXPECT_EQ(r.status().code(), code) << r.status().message();
  EXPECT_NE(r.status().message().find("crafted/config.json"), std::string::npos) << r.status().message();
  for (const char* w : words)
    EXPECT_NE(r.status().message().find(w), std::string::npos) << "'" << w << "' not in: " << r.status().message();
}

// Llama-3.1-8B's config.json (transformers 4.x keys).
json llama31() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

// Mistral-7B-v0.1's config.json.
json mistral() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "sliding_window": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 32000})");
}

// Qwen2.5-0.5B's config.json.
json qwen2() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": true,
    "use_sliding_window": false, "vocab_size": 151936})");
}

TEST(HfConfigFixtures, FixtureLlamaSp) {
  auto c = load_model_config(test::model_dir("fixture-llama-sp"));
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->hidden_size, 384);
  EXPECT_EQ(c->intermediate_size, 1024);
  EXPECT_EQ(c->num_layers, 8);
  EXPECT_EQ(c->num_heads, 6);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e4);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->raw["transformers_version"], "5.17.0");
}

TEST(HfConfigFixtures, FixtureLlamaBpe) {
  auto c = load_model_config(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->num_layers, 6);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e5);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{0});
}

TEST(HfConfigFixtures, Stories260K) {
  auto c = load_model_config(test::model_dir("stories260K") / "config.json");  // a file path works too
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->max_position_embeddings, 512);
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);  // "rope_scaling": null
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, "float32");
}

TEST(HfConfigCrafted, Llama31RopeScaling) {
  auto c = parse(llama31());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->head_dim, 128);  // defaulted: 4096 / 32
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->max_position_embeddings, 131072);
}

TEST(HfConfigCrafted, TransformersFiveRopeParameters) {
  json j = llama31();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);

  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 1e6}};
  c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
}

TEST(HfConfigCrafted, LinearScalingOldStyleAndBiases) {
  json j = llama31();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  j["eos_token_id"] = 2;
  auto c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 4.0);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->mlp_bias);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{2});
  j["rope_scaling"] = {{"rope_type", "default"}};
  c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->rope_scaling.type, RopeType::kDefault);
}

TEST(HfConfigCrafted, Mistral) {
  auto c = parse(mistral());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_EQ(c->model_type, "mistral");
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->qkv_bias);
  json j = mistral();
  j["sliding_window"] = nullptr;  // Mistral-7B-v0.2 and later
  j["head_dim"] = nullptr;
  c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->head_dim, 128);
  j.erase("sliding_window");  // MistralConfig's default
  EXPECT_EQ(parse(j)->sliding_window, 4096);
}

TEST(HfConfigCrafted, Qwen2) {
  auto c = parse(qwen2());
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->model_type, "qwen2");
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->sliding_window, 0);  // use_sliding_window: false
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  json j = qwen2();
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 0;  // every layer windowed
  c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->sliding_window, 32768);
  j["max_window_layers"] = 12;
  expect_error(j, StatusCode::kUnsupported, {"sliding window", "max_window_layers"});
}

TEST(HfConfigCrafted, Defaults) {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"vocab_size", 100},
            {"hidden_size", 64},
            {"intermediate_size", 128},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4}};
  auto c = parse(j);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->hidden_act, "silu");
  // model_type alone names the architecture too.
  json k = j;
  k.erase("architectures");
  k["model_type"] = "qwen2";
  c = parse(k);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->qkv_bias);
}

TEST(HfConfigErrors, Unsupported) {
  json j = llama31();
  j["architectures"] = {"GemmaForCausalLM"};
  j["model_type"] = "gemma";
  expect_error(j, StatusCode::kUnsupported,
               {"GemmaForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"});
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    j = llama31();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    expect_error(j, StatusCode::kUnsupported, {type, "rope_scaling"});
  }
  j = llama31();
  j["hidden_act"] = "gelu";
  expect_error(j, StatusCode::kUnsupported, {"hidden_act", "gelu"});
}

TEST(HfConfigErrors, Invalid) {
  json j = llama31();
  j["num_key_value_heads"] = 5;
  expect_error(j, StatusCode::kInvalidArgument, {"num_key_value_heads", "32"});
  j = llama31();
  j["head_dim"] = 63;
  expect_error(j, StatusCode::kInvalidArgument, {"head_dim", "even"});
  j = llama31();
  j["hidden_size"] = -4096;
  expect_error(j, StatusCode::kInvalidArgument, {"hidden_size"});
  j = llama31();
  j["num_hidden_layers"] = 0;
  expect_error(j, StatusCode::kInvalidArgument, {"num_hidden_layers", "positive"});
  j = llama31();
  j.erase("vocab_size");
  expect_error(j, StatusCode::kInvalidArgument, {"vocab_size", "missing"});
  j = llama31();
  j["intermediate_size"] = "big";
  expect_error(j, StatusCode::kInvalidArgument, {"intermediate_size", "\"big\"", "integer"});
  j = llama31();
  j["model_type"] = "mistral";
  expect_error(j, StatusCode::kInvalidArgument, {"LlamaForCausalLM", "mistral"});
  j = llama31();
  j["rope_scaling"].erase("low_freq_factor");
  expect_error(j, StatusCode::kInvalidArgument, {"low_freq_factor"});
  j = llama31();
  j["rope_scaling"] = "llama3";
  expect_error(j, StatusCode::kInvalidArgument, {"rope_scaling"});
  j = llama31();
  j["eos_token_id"] = {1, "x"};
  expect_error(j, StatusCode::kInvalidArgument, {"eos_token_id"});
  j = llama31();
  j["hidden_size"] = 4000;
  j["num_attention_heads"] = 48;
  j["num_key_value_heads"] = 8;
  expect_error(j, StatusCode::kInvalidArgument, {"not divisible"});
  EXPECT_FALSE(parse(json::array()).is_ok());
}

TEST(HfConfigErrors, Files) {
  fs::path dir = test::make_temp_dir("compactor-cfg");
  auto r = load_model_config(dir);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find((dir / "config.json").string()), std::string::npos) << r.status().message();
  { std::ofstream(dir / "config.json"); }
  r = load_model_config(dir);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("is empty"), std::string::npos) << r.status().message();
  { std::ofstream(dir / "config.json") << "{\"architectures\": [\"LlamaForCausalLM\"],"; }
  r = load_model_config(dir);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("config.json"), std::string::npos);
  { std::ofstream(dir / "config.json") << mistral().dump(); }
  r = load_model_config(dir);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->raw, mistral());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compactor
