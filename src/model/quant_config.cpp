// quantization_config of compressed directories: parsing with named errors, writing, and the
// choice of the default spec; format in quant_config.h.
// Test: build-*/tests/test_compressed_model.
#include "model/quant_config.h"

namespace compactor {

namespace {

constexpr int kFormatVersion = 1;

nlohmann::json module_json(const ModuleQuantization& m) {
  return {{"format", std::string(format_name(m.format))},
          {"bits", m.spec.bits},
          {"group_size", m.spec.group_size == 0 ? -1 : m.spec.group_size},
          {"sym", m.spec.symmetric},
          {"desc_act", m.act_order}};
}

// NF4 (formats/nf4.h): "format": "nf4", "bits": 4, "group_size" = the NF4 block size (> 0).
Result<ModuleQuantization> parse_nf4_module(const nlohmann::json& j, const std::string& where) {
  ModuleQuantization m;
  m.format = Format::kNF4;
  if (j.contains("bits") && (!j["bits"].is_number_integer() || j["bits"].get<int>() != 4))
    return corrupt("{}: format \"nf4\" has 4 bits, not {}", where, j["bits"].dump());
  if (!j.contains("group_size") || !j["group_size"].is_number_integer() || j["group_size"].get<int>() <= 0)
    return corrupt("{}: format \"nf4\" needs a positive integer \"group_size\" (the block size), got {}", where,
                   j.value("group_size", nlohmann::json()).dump());
  m.spec = QuantSpec{4, j["group_size"].get<int>(), false};
  if (j.value("sym", false) || j.value("desc_act", false))
    return corrupt("{}: format \"nf4\" has no sym/desc_act variants", where);
  return m;
}

// One module's (or the default's) fields; `where` names it in errors.
Result<ModuleQuantization> parse_module(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) return corrupt("{}: expected an object, got {}", where, j.dump());
  if (j.contains("format") && j["format"] == "nf4") return parse_nf4_module(j, where);
  ModuleQuantization m;
  if (!j.contains("bits") || !j["bits"].is_number_integer()) return corrupt("{}: missing integer \"bits\"", where);
  m.spec.bits = j["bits"].get<int>();
  if (!format_from_bits(m.spec.bits, &m.format))
    return unsupported("{}: bits {} (supported: 2, 3, 4, 8)", where, m.spec.bits);
  if (j.contains("format")) {
    Format named;
    if (!j["format"].is_string() || !format_from_name(j["format"].get<std::string>(), &named) || named != m.format)
      return corrupt("{}: format {} contradicts bits {} (expected \"{}\")", where, j["format"].dump(), m.spec.bits,
                     format_name(m.format));
  }
  if (!j.contains("group_size") || !j["group_size"].is_number_integer())
    return corrupt("{}: missing integer \"group_size\"", where);
  const int group = j["group_size"].get<int>();
  if (group == 0 || group < -1) return corrupt("{}: group_size {} (expected -1 for per-channel or > 0)", where, group);
  m.spec.group_size = group == -1 ? 0 : group;
  m.spec.symmetric = j.value("sym", false);
  m.act_order = j.value("desc_act", false);
  if (m.act_order && m.spec.group_size == 0) return corrupt("{}: desc_act with per-channel group_size -1", where);
  return m;
}

Result<QuantizationConfig> parse_block(const nlohmann::json& q, const std::string& where) {
  if (!q.is_object()) return corrupt("{}: expected an object", where);
  const std::string method = q.value("quant_method", std::string());
  if (method != "compactor")
    return unsupported("{}: quant_method \"{}\" (only \"compactor\" directories load; GPTQ/AWQ checkpoints of other "
                       "tools are not supported yet)",
                       where, method);
  const int version = q.value("format_version", 0);
  if (version != kFormatVersion)
    return unsupported("{}: format_version {} (this build reads version {})", where, version, kFormatVersion);
  if (q.value("zero_point", std::string("true")) != "true" || q.value("packing", std::string("gptq")) != "gptq")
    return unsupported("{}: zero_point {} / packing {} (expected \"true\" / \"gptq\")", where,
                       q.value("zero_point", nlohmann::json()).dump(), q.value("packing", nlohmann::json()).dump());
  QuantizationConfig out;
  ASSIGN_OR_RETURN(out.default_module, parse_module(q, where));
  if (!q.contains("modules") || !q["modules"].is_object())
    return corrupt("{}: missing object \"modules\" (module name -> spec)", where);
  for (const auto& [name, spec] : q["modules"].items()) {
    ASSIGN_OR_RETURN(ModuleQuantization m, parse_module(spec, where + ".modules." + name));
    out.modules.emplace(name, m);
  }
  return out;
}

}  // namespace

const ModuleQuantization* QuantizationConfig::find(std::string_view module) const {
  auto it = modules.find(std::string(module));
  return it == modules.end() ? nullptr : &it->second;
}

Result<std::optional<QuantizationConfig>> parse_quantization_config(const nlohmann::json& config,
                                                                    const std::string& source) {
  if (!config.is_object() || !config.contains("quantization_config")) return std::optional<QuantizationConfig>();
  try {
    ASSIGN_OR_RETURN(QuantizationConfig q, parse_block(config["quantization_config"], source + ": quantization_config"));
    return std::optional<QuantizationConfig>(std::move(q));
  } catch (const nlohmann::json::exception& e) {
    return corrupt("{}: quantization_config: {}", source, e.what());
  }
}

nlohmann::json quantization_config_json(const QuantizationConfig& q) {
  nlohmann::json j = module_json(q.default_module);
  j["quant_method"] = "compactor";
  j["format_version"] = kFormatVersion;
  j["packing"] = "gptq";
  j["zero_point"] = "true";
  nlohmann::json modules = nlohmann::json::object();
  for (const auto& [name, m] : q.modules) modules[name] = module_json(m);
  j["modules"] = std::move(modules);
  return j;
}

QuantizationConfig make_quantization_config(const std::map<std::string, ModuleQuantization>& modules) {
  QuantizationConfig q;
  q.modules = modules;
  std::map<std::string, int> counts;  // keyed by the module JSON: a total order without operator<
  int best = 0;
  for (const auto& [name, m] : modules) {
    const int c = ++counts[module_json(m).dump()];
    if (c > best) {
      best = c;
      q.default_module = m;
    }
  }
  return q;
}

}  // namespace compactor
