// tokenizer.json parsing and validation for byte-level BPE (see bpe_tokenizer.h). Every field
// is checked before use so a truncated or corrupted file gives an error naming the file and
// the field, never a crash; nlohmann exceptions are caught here and become Status.
#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/json_fields.h"

namespace compactor {

namespace {

using nlohmann::json;
namespace jf = json_fields;

// Token ids must stay below 2 * entries + this slack: a corrupted id such as 2^31 must not make
// the reader allocate a table that large (real files are dense: ids 0..entries-1).
constexpr int64_t kIdSlack = 1024;

Result<int32_t> parse_id(const json& v, int64_t max_id, const std::string& where) {
  if (!v.is_number_integer()) return corrupt("{}: expected a token id (integer), got {}", where, v.type_name());
  const int64_t id = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
                                            : v.get<int64_t>();
  if (id < 0 || id > max_id) return corrupt("{}: token id {} is out of range [0, {}]", where, id, max_id);
  return static_cast<int32_t>(id);
}

Status check_model_options(const json& model, const std::string& where) {
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* v = jf::find(model, key);
    if (v && !(v->is_string() && v->get<std::string>().empty()))
      return unsupported("{}.{} is set; only plain byte-level BPE is supported", where, key);
  }
  ASSIGN_OR_RETURN(bool byte_fallback, jf::get_bool(model, "byte_fallback", false, where));
  if (byte_fallback) return unsupported("{}.byte_fallback is true: a SentencePiece-style BPE, not byte-level", where);
  const json* dropout = jf::find(model, "dropout");
  if (dropout && (!dropout->is_number() || dropout->get<double>() != 0.0))
    return unsupported("{}.dropout is set; BPE dropout (a training-time option) is not supported", where);
  return Status::ok();
}

Status parse_added_tokens(const json& doc, int64_t max_id, const std::string& source, BpeModelData* d) {
  const json* list = jf::find(doc, "added_tokens");
  if (!list) return Status::ok();
  if (!list->is_array()) return corrupt("{}: added_tokens must be an array, got {}", source, list->type_name());
  for (size_t i = 0; i < list->size(); ++i) {
    const json& t = (*list)[i];
    const std::string where = fmt::format("{}: added_tokens[{}]", source, i);
    if (!t.is_object()) return corrupt("{}: expected an object, got {}", where, t.type_name());
    BpeAddedToken a;
    const json* id = jf::find(t, "id");
    if (!id) return corrupt("{}: field 'id' is missing", where);
    ASSIGN_OR_RETURN(a.id, parse_id(*id, max_id, where + ".id"));
    ASSIGN_OR_RETURN(a.content, jf::get_string(t, "content", where));
    ASSIGN_OR_RETURN(a.special, jf::get_bool(t, "special", false, where));
    ASSIGN_OR_RETURN(a.lstrip, jf::get_bool(t, "lstrip", false, where));
    ASSIGN_OR_RETURN(a.rstrip, jf::get_bool(t, "rstrip", false, where));
    ASSIGN_OR_RETURN(a.single_word, jf::get_bool(t, "single_word", false, where));
    if (!a.content.empty()) d->added.push_back(std::move(a));  // tokenizers ignores empty ones
  }
  return Status::ok();
}

Status parse_vocab(const json& vocab, int64_t max_id, const std::string& where, BpeModelData* d) {
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    ASSIGN_OR_RETURN(int32_t id, parse_id(it.value(), max_id, fmt::format("{}['{}']", where, it.key())));
    d->vocab.emplace(it.key(), id);
  }
  return Status::ok();
}

// Fills id_to_token from the vocab and the added tokens; two vocab entries may not share an id.
Status build_id_table(const std::string& where, BpeModelData* d) {
  int64_t max_id = -1;
  for (const auto& [tok, id] : d->vocab) max_id = std::max<int64_t>(max_id, id);
  for (const auto& a : d->added) max_id = std::max<int64_t>(max_id, a.id);
  d->id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  std::vector<uint8_t> taken(d->id_to_token.size(), 0);
  for (const auto& [tok, id] : d->vocab) {
    if (taken[id]) return corrupt("{}: id {} is given to both '{}' and '{}'", where, id, d->id_to_token[id], tok);
    taken[id] = 1;
    d->id_to_token[id] = tok;
  }
  for (const auto& a : d->added) d->id_to_token[a.id] = a.content;
  return Status::ok();
}

Result<std::pair<std::string, std::string>> merge_pair(const json& m, const std::string& where) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == s.size() || s.find(' ', space + 1) != std::string::npos)
      return corrupt("{}: '{}' is not two tokens separated by one space", where, s);
    return std::make_pair(s.substr(0, space), s.substr(space + 1));
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return std::make_pair(m[0].get<std::string>(), m[1].get<std::string>());
  return corrupt("{}: expected \"a b\" or [\"a\", \"b\"], got {}", where, m.dump().substr(0, 80));
}

Status parse_merges(const json& merges, const std::string& where, BpeModelData* d) {
  if (!merges.is_array()) return corrupt("{}: expected an array, got {}", where, merges.type_name());
  d->merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string item = fmt::format("{}[{}]", where, i);
    ASSIGN_OR_RETURN(auto pair, merge_pair(merges[i], item));
    auto left = d->vocab.find(pair.first), right = d->vocab.find(pair.second);
    auto merged = d->vocab.find(pair.first + pair.second);
    if (left == d->vocab.end()) return corrupt("{}: token '{}' is not in the vocab", item, pair.first);
    if (right == d->vocab.end()) return corrupt("{}: token '{}' is not in the vocab", item, pair.second);
    if (merged == d->vocab.end())
      return corrupt("{}: the merged token '{}{}' is not in the vocab", item, pair.first, pair.second);
    const uint64_t key = (static_cast<uint64_t>(left->second) << 32) | static_cast<uint32_t>(right->second);
    d->merges[key] = BpeMerge{static_cast<int32_t>(i), merged->second};  // a later duplicate wins, as in tokenizers
  }
  return Status::ok();
}

Status check_decoder(const json& doc, const std::string& source) {
  const json* dec = jf::find(doc, "decoder");
  if (!dec) return Status::ok();
  const std::string where = source + ": decoder";
  ASSIGN_OR_RETURN(std::string type, jf::get_string(*dec, "type", where));
  if (type == "ByteLevel") return Status::ok();
  if (type == "Sequence") {
    const json* list = jf::find(*dec, "decoders");
    if (list && list->is_array() && std::all_of(list->begin(), list->end(), [](const json& x) {
          return x.is_object() && x.value("type", json()).is_string() && x["type"].get<std::string>() == "ByteLevel";
        }))
      return Status::ok();
  }
  return unsupported("{}: decoder '{}' is not supported (byte-level BPE needs the ByteLevel decoder)", where, type);
}

// The id of the special token a TemplateProcessing "single" template starts with, or -1.
Result<int32_t> template_first_special(const json& pp, const std::string& where, const BpeModelData& d) {
  const json* single = jf::find(pp, "single");
  if (!single || !single->is_array() || single->empty()) return -1;
  const json& first = (*single)[0];
  const json* special = jf::find(first, "SpecialToken");
  if (!special) return -1;
  ASSIGN_OR_RETURN(std::string name, jf::get_string(*special, "id", where + ".single[0].SpecialToken"));
  const json* table = jf::find(pp, "special_tokens");
  const json* entry = table ? jf::find(*table, name) : nullptr;
  const json* ids = entry ? jf::find(*entry, "ids") : nullptr;
  if (ids && ids->is_array() && !ids->empty())
    return parse_id((*ids)[0], static_cast<int64_t>(d.id_to_token.size()) - 1, where + ".special_tokens." + name);
  for (const auto& a : d.added)
    if (a.content == name) return a.id;
  auto it = d.vocab.find(name);
  if (it == d.vocab.end()) return corrupt("{}: template token '{}' is not in the vocabulary", where, name);
  return it->second;
}

Status parse_post_processor(const json& pp, const std::string& where, int depth, BpeModelData* d) {
  if (depth > 8) return corrupt("{}: Sequence nested too deeply", where);
  ASSIGN_OR_RETURN(std::string type, jf::get_string(pp, "type", where));
  if (type == "ByteLevel") return Status::ok();
  if (type == "TemplateProcessing") {
    ASSIGN_OR_RETURN(int32_t bos, template_first_special(pp, where, *d));
    if (bos >= 0) d->template_bos = bos;
    return Status::ok();
  }
  if (type == "Sequence") {
    const json* list = jf::find(pp, "processors");
    if (!list || !list->is_array()) return corrupt("{}: Sequence without a 'processors' array", where);
    for (const auto& p : *list) RETURN_IF_ERROR(parse_post_processor(p, where, depth + 1, d));
    return Status::ok();
  }
  return unsupported("{}: post_processor '{}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)",
                     where, type);
}

Status parse_model(const json& doc, const std::string& source, BpeModelData* d) {
  const json* model = jf::find(doc, "model");
  if (!model || !model->is_object()) return corrupt("{}: the 'model' object is missing", source);
  const std::string where = source + ": model";
  const json* type = jf::find(*model, "type");
  if (type && !(type->is_string() && type->get<std::string>() == "BPE"))
    return unsupported("{}.type is {}; only \"BPE\" (byte-level) is supported", where, type->dump());
  RETURN_IF_ERROR(check_model_options(*model, where));
  const json* vocab = jf::find(*model, "vocab");
  if (!vocab || !vocab->is_object()) return corrupt("{}.vocab is missing or not an object", where);
  const json* merges = jf::find(*model, "merges");
  if (!merges) return corrupt("{}.merges is missing", where);
  const json* added = jf::find(doc, "added_tokens");
  const int64_t entries = static_cast<int64_t>(vocab->size()) + (added && added->is_array() ? added->size() : 0);
  const int64_t max_id = std::min<int64_t>(2 * entries + kIdSlack, std::numeric_limits<int32_t>::max() - 1);
  RETURN_IF_ERROR(parse_vocab(*vocab, max_id, where + ".vocab", d));
  RETURN_IF_ERROR(parse_added_tokens(doc, max_id, source, d));
  if (d->vocab.empty() && d->added.empty()) return corrupt("{}.vocab is empty", where);
  RETURN_IF_ERROR(build_id_table(where + ".vocab", d));
  RETURN_IF_ERROR(parse_merges(*merges, where + ".merges", d));
  ASSIGN_OR_RETURN(d->ignore_merges, jf::get_bool(*model, "ignore_merges", false, where));
  if (const json* unk = jf::find(*model, "unk_token")) {
    if (!unk->is_string() || !d->vocab.count(unk->get<std::string>()))
      return corrupt("{}.unk_token {} is not a token of the vocab", where, unk->dump());
    d->unk_id = d->vocab.at(unk->get<std::string>());
  }
  return Status::ok();
}

Result<BpeModelData> parse_document(const json& doc, const std::string& source) {
  if (!doc.is_object()) return corrupt("{}: expected a JSON object at the top level, got {}", source, doc.type_name());
  BpeModelData d;
  RETURN_IF_ERROR(parse_model(doc, source, &d));
  const json null_value;
  const json* norm = jf::find(doc, "normalizer");
  ASSIGN_OR_RETURN(d.normalizer, Normalizer::from_json(norm ? *norm : null_value, source));
  const json* pre = jf::find(doc, "pre_tokenizer");
  ASSIGN_OR_RETURN(d.pre_tokenizer, PreTokenizer::from_json(pre ? *pre : null_value, source));
  if (!d.pre_tokenizer.has_byte_level())
    return unsupported("{}: pre_tokenizer has no ByteLevel step, so this is not a byte-level BPE "
                       "(SentencePiece models are read from tokenizer.model)", source);
  RETURN_IF_ERROR(check_decoder(doc, source));
  if (const json* pp = jf::find(doc, "post_processor"))
    RETURN_IF_ERROR(parse_post_processor(*pp, source + ": post_processor", 0, &d));
  return d;
}

}  // namespace

Result<BpeModelData> parse_tokenizer_json(std::string_view json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    return corrupt("{}: not valid JSON: {}", source, e.what());
  }
  try {
    return parse_document(doc, source);
  } catch (const json::exception& e) {
    return corrupt("{}: unexpected structure: {}", source, e.what());
  }
}

}  // namespace compactor
