// compactor info MODEL [--json]: architecture, shapes, parameter count, dtypes and bytes.
#include <cstdio>
#include <map>

#include "common.h"

namespace compactor::cli {

namespace {

struct InfoOptions {
  std::string model;
  CommonOptions common;
};

nlohmann::json describe(const Model& model, const Tokenizer& tok) {
  const ModelConfig& c = model.config();
  std::map<std::string, int64_t> dtype_params, dtype_bytes;
  int64_t total_bytes = 0;
  for (const std::string& name : model.files().names()) {
    View v = model.files().find(name)->view();
    dtype_params[std::string(dtype_name(v.dtype))] += v.numel();
    dtype_bytes[std::string(dtype_name(v.dtype))] += v.bytes();
    total_bytes += v.bytes();
  }
  nlohmann::json j = {
      {"path", model.dir().string()}, {"architecture", c.architecture}, {"model_type", c.model_type},
      {"parameters", model.parameter_count()}, {"bytes", total_bytes}, {"layers", c.num_layers},
      {"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size}, {"heads", c.num_heads},
      {"kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings}, {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings}, {"rms_norm_eps", c.rms_norm_eps},
      {"dtype_parameters", dtype_params}, {"dtype_bytes", dtype_bytes},
      {"tokenizer", {{"kind", tok.kind()}, {"vocab_size", tok.vocab_size()}, {"bos_id", tok.bos_id()},
                     {"eos_ids", tok.eos_ids()}, {"add_bos", tok.add_bos_by_default()}}}};
  const WeightBits bits = model.weight_bits();
  j["bits_per_weight"] = bits.bits_per_weight();
  if (model.quantization() != nullptr) {
    j["quantization"] = quantization_config_json(*model.quantization());
    j["quantization"]["packed_parameters"] = bits.quantized_params;
    j["quantization"]["packed_bits_per_weight"] = bits.quantized_bits_per_weight();
  }
  return j;
}

void print_table(const nlohmann::json& j) {
  auto row = [](const char* k, const std::string& v) { std::printf("%-24s %s\n", k, v.c_str()); };
  row("path", j["path"].get<std::string>());
  row("architecture", j["architecture"].get<std::string>());
  row("parameters", fmt::format("{} ({:.2f} M)", j["parameters"].get<int64_t>(), j["parameters"].get<int64_t>() / 1e6));
  row("bytes", fmt::format("{} ({:.1f} MB)", j["bytes"].get<int64_t>(), j["bytes"].get<int64_t>() / 1e6));
  row("layers", j["layers"].dump());
  row("hidden / ffn", fmt::format("{} / {}", j["hidden_size"].get<int64_t>(), j["intermediate_size"].get<int64_t>()));
  row("heads / kv heads / dim", fmt::format("{} / {} / {}", j["heads"].get<int64_t>(), j["kv_heads"].get<int64_t>(),
                                            j["head_dim"].get<int64_t>()));
  row("vocab", j["vocab_size"].dump());
  row("max positions", j["max_position_embeddings"].dump());
  row("rope theta", j["rope_theta"].dump());
  row("tied embeddings", j["tie_word_embeddings"].dump());
  row("bits per weight", fmt::format("{:.3f}", j["bits_per_weight"].get<double>()));
  if (j.contains("quantization")) {
    const auto& q = j["quantization"];
    row("quantization", fmt::format("{} modules packed, default {} group {}{}; {:.3f} bits per packed weight",
                                    q["modules"].size(), q["format"].get<std::string>(), q["group_size"].get<int>(),
                                    q["sym"].get<bool>() ? " sym" : "", q["packed_bits_per_weight"].get<double>()));
  }
  for (auto& [dt, n] : j["dtype_parameters"].items())
    row(("dtype " + dt).c_str(), fmt::format("{} parameters, {} bytes", n.get<int64_t>(), j["dtype_bytes"][dt].get<int64_t>()));
  const auto& t = j["tokenizer"];
  row("tokenizer", fmt::format("{} ({} tokens, bos {}, eos {}, add_bos {})", t["kind"].get<std::string>(),
                               t["vocab_size"].get<int64_t>(), t["bos_id"].get<int>(), t["eos_ids"].dump(),
                               t["add_bos"].get<bool>()));
}

}  // namespace

Command make_info_command(CLI::App& root) {
  auto opts = std::make_shared<InfoOptions>();
  CLI::App* app = root.add_subcommand("info", "print a model's architecture, parameter count, dtypes and bytes");
  app->add_option("model", opts->model, "model directory (Hugging Face layout)")->required();
  add_output_options(app, opts->common);
  return {app, [opts]() {
            auto lm = load_model(opts->model, opts->common);
            if (!lm) return fail(lm.status());
            nlohmann::json j = describe(*lm->model, *lm->tokenizer);
            if (opts->common.json) {
              std::printf("%s\n", j.dump(2).c_str());
            } else {
              print_table(j);
            }
            return 0;
          }};
}

}  // namespace compactor::cli
