// load_tokenizer (implementation choice and BOS/EOS resolution) and StreamDecoder; see tokenizer.h.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <functional>
#include <optional>

#include <nlohmann/json.hpp>

#include "io/text_file.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/utf8.h"

namespace compactor {

// ---------------------------------------------------------------- StreamDecoder

std::string StreamDecoder::decode_range(size_t begin, size_t end) const {
  return tokenizer_.decode(std::vector<int32_t>(ids_.begin() + begin, ids_.begin() + end), skip_special_);
}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string prefix = decode_range(prefix_offset_, read_offset_);
  const std::string full = decode_range(prefix_offset_, ids_.size());
  // Text ending in U+FFFD is a character whose remaining bytes come with the next ids.
  if (full.size() <= prefix.size() || utf8::ends_with_replacement(full)) return std::string();
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return full.substr(prefix.size());
}

std::string StreamDecoder::flush() {
  const std::string prefix = decode_range(prefix_offset_, read_offset_);
  const std::string full = decode_range(prefix_offset_, ids_.size());
  prefix_offset_ = read_offset_ = ids_.size();
  return full.size() > prefix.size() ? full.substr(prefix.size()) : std::string();
}

void StreamDecoder::reset() {
  ids_.clear();
  prefix_offset_ = read_offset_ = 0;
}

// ---------------------------------------------------------------- special tokens

namespace {

namespace jf = json_fields;

// What a model directory's JSON files say about BOS/EOS.
struct SpecialTokenInfo {
  std::optional<bool> add_bos;              // tokenizer_config.json add_bos_token
  std::string bos_token, eos_token;         // tokenizer_config.json, "" when absent
  std::optional<int64_t> bos_id;            // config.json bos_token_id
  std::vector<int64_t> eos_ids;             // config.json eos_token_id (int or list)
};

struct SpecialTokens {
  int32_t bos = -1;
  std::vector<int32_t> eos;
  bool add_bos = false;
};

Result<nlohmann::json> read_json_if_present(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return nlohmann::json();
  ASSIGN_OR_RETURN(std::string text, read_text_file(file));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return corrupt("{}: not valid JSON: {}", file.string(), e.what());
  }
}

// tokenizer_config.json writes tokens as "<s>" or as {"content": "<s>", ...} (AddedToken).
std::string token_content(const nlohmann::json& cfg, std::string_view key) {
  const nlohmann::json* v = jf::find(cfg, key);
  if (!v) return {};
  if (v->is_string()) return v->get<std::string>();
  const nlohmann::json* content = jf::find(*v, "content");
  return content && content->is_string() ? content->get<std::string>() : std::string();
}

Status read_config_ids(const nlohmann::json& cfg, const std::string& where, SpecialTokenInfo* info) {
  if (const nlohmann::json* bos = jf::find(cfg, "bos_token_id")) {
    if (!bos->is_number_integer()) return corrupt("{}: bos_token_id must be an integer, got {}", where, bos->dump());
    info->bos_id = bos->get<int64_t>();
  }
  if (const nlohmann::json* eos = jf::find(cfg, "eos_token_id")) {
    const nlohmann::json list = eos->is_array() ? *eos : nlohmann::json::array({*eos});
    for (const auto& e : list) {
      if (!e.is_number_integer())
        return corrupt("{}: eos_token_id must be an integer or a list of integers, got {}", where, eos->dump());
      info->eos_ids.push_back(e.get<int64_t>());
    }
  }
  return Status::ok();
}

Result<SpecialTokenInfo> read_special_token_info(const std::filesystem::path& dir) {
  SpecialTokenInfo info;
  const auto tc_path = dir / "tokenizer_config.json";
  ASSIGN_OR_RETURN(nlohmann::json tc, read_json_if_present(tc_path));
  ASSIGN_OR_RETURN(bool add_bos, jf::get_bool(tc, "add_bos_token", false, tc_path.string()));
  if (jf::find(tc, "add_bos_token")) info.add_bos = add_bos;
  info.bos_token = token_content(tc, "bos_token");
  info.eos_token = token_content(tc, "eos_token");
  const auto cfg_path = dir / "config.json";
  ASSIGN_OR_RETURN(nlohmann::json cfg, read_json_if_present(cfg_path));
  RETURN_IF_ERROR(read_config_ids(cfg, cfg_path.string(), &info));
  return info;
}

// Token strings from tokenizer_config.json win, then config.json ids, then the tokenizer's
// own defaults; EOS collects all of them (Llama-3-Instruct lists several in config.json).
Result<SpecialTokens> resolve_special_tokens(const SpecialTokenInfo& info,
                                             const std::function<int32_t(std::string_view)>& lookup,
                                             const SpecialTokens& defaults, int64_t vocab_size,
                                             const std::filesystem::path& dir) {
  auto check = [&](int64_t id, const char* key) -> Result<int32_t> {
    if (id < 0 || id >= vocab_size)
      return invalid_argument("{}: {} {} is outside the tokenizer's {} tokens", (dir / "config.json").string(), key,
                              id, vocab_size);
    return static_cast<int32_t>(id);
  };
  SpecialTokens out;
  out.bos = info.bos_token.empty() ? -1 : lookup(info.bos_token);
  if (out.bos < 0 && info.bos_id) {
    ASSIGN_OR_RETURN(out.bos, check(*info.bos_id, "bos_token_id"));
  }
  if (out.bos < 0) out.bos = defaults.bos;
  auto add_eos = [&](int32_t id) {
    if (id >= 0 && std::find(out.eos.begin(), out.eos.end(), id) == out.eos.end()) out.eos.push_back(id);
  };
  if (!info.eos_token.empty()) add_eos(lookup(info.eos_token));
  for (int64_t id : info.eos_ids) {
    ASSIGN_OR_RETURN(int32_t checked, check(id, "eos_token_id"));
    add_eos(checked);
  }
  if (out.eos.empty())
    for (int32_t id : defaults.eos) add_eos(id);
  out.add_bos = info.add_bos.value_or(defaults.add_bos) && out.bos >= 0;
  return out;
}

Result<std::unique_ptr<Tokenizer>> load_sentencepiece(const std::filesystem::path& dir, const SpecialTokenInfo& info) {
  ASSIGN_OR_RETURN(auto sp, SentencePieceTokenizer::load(dir / "tokenizer.model"));
  SpecialTokens defaults;
  defaults.bos = sp->model_bos_id();
  if (sp->model_eos_id() >= 0) defaults.eos = {sp->model_eos_id()};
  defaults.add_bos = true;  // LlamaTokenizer's default when tokenizer_config.json does not say
  auto lookup = [&](std::string_view t) { return sp->piece_to_id(t); };
  ASSIGN_OR_RETURN(SpecialTokens s, resolve_special_tokens(info, lookup, defaults, sp->vocab_size(), dir));
  sp->set_special_tokens(s.bos, std::move(s.eos), s.add_bos);
  return std::unique_ptr<Tokenizer>(std::move(sp));
}

Result<std::unique_ptr<Tokenizer>> load_bpe(const std::filesystem::path& dir, const SpecialTokenInfo& info) {
  ASSIGN_OR_RETURN(auto bpe, BpeTokenizer::load(dir / "tokenizer.json"));
  SpecialTokens defaults;
  defaults.bos = bpe->template_bos_id();
  defaults.add_bos = bpe->template_bos_id() >= 0;  // the post_processor decides when the config does not
  auto lookup = [&](std::string_view t) { return bpe->token_to_id(t); };
  ASSIGN_OR_RETURN(SpecialTokens s, resolve_special_tokens(info, lookup, defaults, bpe->vocab_size(), dir));
  bpe->set_special_tokens(s.bos, std::move(s.eos), s.add_bos);
  return std::unique_ptr<Tokenizer>(std::move(bpe));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return not_found("tokenizer directory {} does not exist", dir.string());
  if (!std::filesystem::is_directory(dir, ec)) return invalid_argument("{} is not a directory", dir.string());
  ASSIGN_OR_RETURN(SpecialTokenInfo info, read_special_token_info(dir));
  if (std::filesystem::exists(dir / "tokenizer.model", ec)) return load_sentencepiece(dir, info);
  if (std::filesystem::exists(dir / "tokenizer.json", ec)) return load_bpe(dir, info);
  return not_found("{}: no tokenizer.model or tokenizer.json", dir.string());
}

}  // namespace compactor
