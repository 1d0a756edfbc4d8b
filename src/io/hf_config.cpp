// Hugging Face config.json -> ModelConfig for LlamaForCausalLM, MistralForCausalLM and
// Qwen2ForCausalLM, following the defaults of transformers' LlamaConfig/MistralConfig/Qwen2Config
// (both the 4.x `rope_theta`/`rope_scaling` keys and the 5.x `rope_parameters` block).
// Test: build-*/tests/test_hf_config.
#include "io/hf_config.h"

#include <cmath>
#include <optional>

#include "io/text_file.h"

namespace compactor {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct ArchRow {
  const char* architecture;
  const char* model_type;
  int64_t default_max_positions;  // the transformers config class default
};
constexpr ArchRow kArchs[] = {
    {"LlamaForCausalLM", "llama", 2048},
    {"MistralForCausalLM", "mistral", 4096 * 32},
    {"Qwen2ForCausalLM", "qwen2", 32768},
};
constexpr int64_t kMistralDefaultWindow = 4096;

std::string supported_list() {
  std::string s;
  for (const auto& a : kArchs) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", a.architecture, a.model_type);
  return s;
}

// Typed access to one JSON object; a null value counts as absent (HF writes `"key": null`).
class Fields {
 public:
  Fields(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  bool present(const char* key) const { return j_.contains(key); }
  const json* get(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  Result<int64_t> integer(const char* key, std::optional<int64_t> def = std::nullopt) const {
    const json* v = get(key);
    if (v == nullptr) return def ? Result<int64_t>(*def) : missing(key, "an integer");
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() && std::abs(v->get<double>()) < 9e15)
      return static_cast<int64_t>(v->get<double>());
    return wrong(key, "an integer", *v);
  }
  Result<double> number(const char* key, std::optional<double> def = std::nullopt) const {
    const json* v = get(key);
    if (v == nullptr) return def ? Result<double>(*def) : missing(key, "a number");
    if (v->is_number()) return v->get<double>();
    return wrong(key, "a number", *v);
  }
  Result<bool> boolean(const char* key, bool def) const {
    const json* v = get(key);
    if (v == nullptr) return def;
    if (v->is_boolean()) return v->get<bool>();
    return wrong(key, "true or false", *v);
  }
  Result<std::string> string(const char* key, std::optional<std::string> def = std::nullopt) const {
    const json* v = get(key);
    if (v == nullptr) return def ? Result<std::string>(*def) : missing(key, "a string");
    if (v->is_string()) return v->get<std::string>();
    return wrong(key, "a string", *v);
  }
  const std::string& where() const { return where_; }

 private:
  Status missing(const char* key, const char* what) const {
    return invalid_argument("{}: '{}' is missing; expected {}", where_, key, what);
  }
  Status wrong(const char* key, const char* what, const json& v) const {
    return invalid_argument("{}: '{}' is {}; expected {}", where_, key, v.dump(), what);
  }
  const json& j_;
  std::string where_;
};

Status parse_architecture(const json& j, const std::string& src, ModelConfig* c) {
  Fields f(j, src);
  ASSIGN_OR_RETURN(c->model_type, f.string("model_type", ""));
  const json* archs = f.get("architectures");
  if (archs != nullptr) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string())
      return invalid_argument("{}: 'architectures' is {}; expected a list of class names", src, archs->dump());
    c->architecture = (*archs)[0].get<std::string>();
  }
  for (const ArchRow& a : kArchs) {
    bool arch_match = c->architecture == a.architecture;
    bool type_match = c->model_type == a.model_type;
    if (!arch_match && !(c->architecture.empty() && type_match)) continue;
    if (!c->model_type.empty() && !type_match)
      return invalid_argument("{}: architecture {} does not go with model_type '{}'; expected '{}'", src,
                              a.architecture, c->model_type, a.model_type);
    c->architecture = a.architecture;
    c->model_type = a.model_type;
    return Status::ok();
  }
  return unsupported("{}: architecture '{}' (model_type '{}') is not supported; supported: {}", src,
                     c->architecture.empty() ? "<none>" : c->architecture, c->model_type, supported_list());
}

const ArchRow& arch_row(const ModelConfig& c) {
  for (const ArchRow& a : kArchs)
    if (c.architecture == a.architecture) return a;
  COMPACTOR_ASSERT(false, "architecture {} was not validated", c.architecture);
}

Status parse_sizes(const Fields& f, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->vocab_size, f.integer("vocab_size"));
  ASSIGN_OR_RETURN(c->hidden_size, f.integer("hidden_size"));
  ASSIGN_OR_RETURN(c->intermediate_size, f.integer("intermediate_size"));
  ASSIGN_OR_RETURN(c->num_layers, f.integer("num_hidden_layers"));
  ASSIGN_OR_RETURN(c->num_heads, f.integer("num_attention_heads"));
  ASSIGN_OR_RETURN(c->num_kv_heads, f.integer("num_key_value_heads", c->num_heads));
  if (c->num_heads > 0 && f.get("head_dim") == nullptr && c->hidden_size % c->num_heads != 0)
    return invalid_argument("{}: hidden_size {} is not divisible by num_attention_heads {} (and no head_dim is given)",
                            f.where(), c->hidden_size, c->num_heads);
  ASSIGN_OR_RETURN(c->head_dim, f.integer("head_dim", c->num_heads > 0 ? c->hidden_size / c->num_heads : 0));
  ASSIGN_OR_RETURN(c->max_position_embeddings,
                   f.integer("max_position_embeddings", arch_row(*c).default_max_positions));
  ASSIGN_OR_RETURN(c->rms_norm_eps, f.number("rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c->tie_word_embeddings, f.boolean("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(c->hidden_act, f.string("hidden_act", "silu"));
  ASSIGN_OR_RETURN(c->torch_dtype, f.string("torch_dtype", ""));
  if (c->torch_dtype.empty()) {
    ASSIGN_OR_RETURN(c->torch_dtype, f.string("dtype", ""));
  }
  return Status::ok();
}

Status parse_llama3_rope(const Fields& r, RopeScaling* s) {
  ASSIGN_OR_RETURN(s->factor, r.number("factor"));
  ASSIGN_OR_RETURN(s->low_freq_factor, r.number("low_freq_factor"));
  ASSIGN_OR_RETURN(s->high_freq_factor, r.number("high_freq_factor"));
  ASSIGN_OR_RETURN(s->original_max_position_embeddings, r.integer("original_max_position_embeddings"));
  if (!(s->low_freq_factor > 0 && s->high_freq_factor > s->low_freq_factor))
    return invalid_argument("{}: llama3 rope needs 0 < low_freq_factor < high_freq_factor, got {} and {}", r.where(),
                            s->low_freq_factor, s->high_freq_factor);
  if (s->original_max_position_embeddings <= 0)
    return invalid_argument("{}: original_max_position_embeddings must be positive, got {}", r.where(),
                            s->original_max_position_embeddings);
  return Status::ok();
}

// rope_theta and the scaling block: transformers 5 `rope_parameters`, else 4.x `rope_scaling`.
Status parse_rope(const json& j, const std::string& src, ModelConfig* c) {
  Fields top(j, src);
  const json* block = top.get("rope_parameters");
  const char* block_key = "rope_parameters";
  if (block == nullptr) {
    block = top.get("rope_scaling");
    block_key = "rope_scaling";
  }
  if (block != nullptr && !block->is_object())
    return invalid_argument("{}: '{}' is {}; expected an object or null", src, block_key, block->dump());
  ASSIGN_OR_RETURN(c->rope_theta, top.number("rope_theta", 10000.0));
  if (block == nullptr) return Status::ok();
  Fields r(*block, fmt::format("{}: {}", src, block_key));
  if (r.get("rope_theta") != nullptr) {
    ASSIGN_OR_RETURN(c->rope_theta, r.number("rope_theta"));
  }
  ASSIGN_OR_RETURN(std::string type, r.string("rope_type", ""));
  if (type.empty()) {
    ASSIGN_OR_RETURN(type, r.string("type", "default"));
  }
  RopeScaling& s = c->rope_scaling;
  if (type == "default") {
    s = RopeScaling{};
  } else if (type == "linear") {
    s.type = RopeType::kLinear;
    ASSIGN_OR_RETURN(s.factor, r.number("factor"));
  } else if (type == "llama3") {
    s.type = RopeType::kLlama3;
    RETURN_IF_ERROR(parse_llama3_rope(r, &s));
  } else {
    return unsupported("{}: rope type '{}' is not supported; expected default, linear or llama3", r.where(), type);
  }
  if (!(s.factor > 0)) return invalid_argument("{}: rope factor must be positive, got {}", r.where(), s.factor);
  return Status::ok();
}

// Qwen2 applies the window only to layers >= max_window_layers when use_sliding_window is set.
Status parse_qwen2_window(const Fields& f, ModelConfig* c) {
  ASSIGN_OR_RETURN(bool use, f.boolean("use_sliding_window", false));
  if (!use) return Status::ok();
  ASSIGN_OR_RETURN(int64_t window, f.integer("sliding_window", 4096));
  ASSIGN_OR_RETURN(int64_t first, f.integer("max_window_layers", 28));
  if (first >= c->num_layers) return Status::ok();
  if (first > 0)
    return unsupported(
        "{}: sliding window on layers {}..{} only (max_window_layers {}) is not supported; "
        "expected it on all layers or none",
        f.where(), first, c->num_layers - 1, first);
  c->sliding_window = window;
  return Status::ok();
}

Status parse_arch_specifics(const Fields& f, ModelConfig* c) {
  if (c->model_type == "llama") {
    ASSIGN_OR_RETURN(c->attention_bias, f.boolean("attention_bias", false));
    ASSIGN_OR_RETURN(c->mlp_bias, f.boolean("mlp_bias", false));
  } else if (c->model_type == "mistral") {
    // A missing key means MistralConfig's default window; an explicit null means none.
    int64_t def = f.present("sliding_window") ? 0 : kMistralDefaultWindow;
    ASSIGN_OR_RETURN(c->sliding_window, f.integer("sliding_window", def));
  } else if (c->model_type == "qwen2") {
    c->qkv_bias = true;
    RETURN_IF_ERROR(parse_qwen2_window(f, c));
  }
  return Status::ok();
}

Status parse_token_ids(const Fields& f, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->bos_token_id, f.integer("bos_token_id", -1));
  c->eos_token_ids.clear();
  const json* eos = f.get("eos_token_id");
  if (eos == nullptr) return Status::ok();
  if (eos->is_number_integer()) {
    c->eos_token_ids.push_back(eos->get<int64_t>());
    return Status::ok();
  }
  if (eos->is_array()) {
    for (const json& e : *eos) {
      if (!e.is_number_integer())
        return invalid_argument("{}: 'eos_token_id' is {}; expected an integer or a list of integers", f.where(),
                                eos->dump());
      c->eos_token_ids.push_back(e.get<int64_t>());
    }
    return Status::ok();
  }
  return invalid_argument("{}: 'eos_token_id' is {}; expected an integer or a list of integers", f.where(),
                          eos->dump());
}

Status validate(const ModelConfig& c, const std::string& src) {
  const std::pair<const char*, int64_t> positive[] = {{"vocab_size", c.vocab_size},
                                                      {"hidden_size", c.hidden_size},
                                                      {"intermediate_size", c.intermediate_size},
                                                      {"num_hidden_layers", c.num_layers},
                                                      {"num_attention_heads", c.num_heads},
                                                      {"num_key_value_heads", c.num_kv_heads},
                                                      {"head_dim", c.head_dim},
                                                      {"max_position_embeddings", c.max_position_embeddings}};
  for (const auto& [key, v] : positive)
    if (v <= 0) return invalid_argument("{}: '{}' must be positive, got {}", src, key, v);
  if (c.num_heads % c.num_kv_heads != 0)
    return invalid_argument("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", src, c.num_heads,
                            c.num_kv_heads);
  if (c.head_dim % 2 != 0)
    return invalid_argument("{}: head_dim {} must be even (RoPE rotates pairs)", src, c.head_dim);
  if (!(c.rms_norm_eps > 0))
    return invalid_argument("{}: 'rms_norm_eps' must be positive, got {}", src, c.rms_norm_eps);
  if (!(c.rope_theta > 0)) return invalid_argument("{}: 'rope_theta' must be positive, got {}", src, c.rope_theta);
  if (c.sliding_window < 0)
    return invalid_argument("{}: 'sliding_window' must be positive or null, got {}", src, c.sliding_window);
  if (c.hidden_act != "silu")
    return unsupported("{}: hidden_act '{}' is not supported; expected 'silu'", src, c.hidden_act);
  return Status::ok();
}

}  // namespace

Result<ModelConfig> parse_model_config(const json& j, const std::string& source_name) {
  if (!j.is_object()) return invalid_argument("{}: expected a JSON object, got {}", source_name, j.type_name());
  ModelConfig c;
  try {
    Fields f(j, source_name);
    RETURN_IF_ERROR(parse_architecture(j, source_name, &c));
    RETURN_IF_ERROR(parse_sizes(f, &c));
    RETURN_IF_ERROR(parse_rope(j, source_name, &c));
    RETURN_IF_ERROR(parse_arch_specifics(f, &c));
    RETURN_IF_ERROR(parse_token_ids(f, &c));
  } catch (const std::exception& ex) {
    return invalid_argument("{}: cannot read config: {}", source_name, ex.what());
  }
  RETURN_IF_ERROR(validate(c, source_name));
  c.raw = j;
  return c;
}

Result<ModelConfig> load_model_config(const fs::path& dir) {
  std::error_code ec;
  fs::path path = fs::is_directory(dir, ec) ? dir / "config.json" : dir;
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt("'{}' is not valid JSON", path.string());
  return parse_model_config(j, path.string());
}

}  // namespace compactor
