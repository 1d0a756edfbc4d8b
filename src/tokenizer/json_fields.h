// Typed access to optional fields of a parsed JSON object with errors that name the file and
// the field (tokenizer.json, tokenizer_config.json, config.json readers).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace compactor::json_fields {

// The field, or null when `obj` is not an object or lacks it (JSON null counts as absent).
inline const nlohmann::json* find(const nlohmann::json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

inline Result<bool> get_bool(const nlohmann::json& obj, std::string_view key, bool fallback, std::string_view where) {
  const nlohmann::json* v = find(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) return corrupt("{}.{}: expected true/false, got {}", where, key, v->type_name());
  return v->get<bool>();
}

inline Result<std::string> get_string(const nlohmann::json& obj, std::string_view key, std::string_view where) {
  const nlohmann::json* v = find(obj, key);
  if (!v) return corrupt("{}: field '{}' is missing", where, key);
  if (!v->is_string()) return corrupt("{}.{}: expected a string, got {}", where, key, v->type_name());
  return v->get<std::string>();
}

}  // namespace compactor::json_fields
