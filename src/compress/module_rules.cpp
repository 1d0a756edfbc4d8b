#include "compress/module_rules.h"

#include <cctype>
#include <charconv>

namespace compactor {

namespace {

bool parse_int(std::string_view s, int* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Length of the integer at the start of s (0 when none).
size_t digits_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

Status parse_value(std::string_view v, ModuleRule& r) {
  if (v == "fp16" || v == "bf16" || v == "16" || v == "keep" || v == "none") {
    r.keep = true;
    return Status::ok();
  }
  auto dash = v.find('-');
  if (dash != std::string_view::npos) {
    const std::string_view sym = v.substr(dash + 1);
    if (sym != "sym" && sym != "asym") return invalid_argument("symmetry suffix '-{}' (expected -sym or -asym)", sym);
    r.symmetric = sym == "sym";
    v = v.substr(0, dash);
  }
  if (parse_int(v, &r.bits)) return Status::ok();
  if (v.empty() || v[0] != 'w') return invalid_argument("'{}' is not fp16/keep, wB, wBgG or a bit width", v);
  const size_t g = v.find('g');
  if (!parse_int(v.substr(1, g == std::string_view::npos ? std::string_view::npos : g - 1), &r.bits))
    return invalid_argument("'{}': no bit width after 'w'", v);
  int group = 0;
  if (g != std::string_view::npos && !parse_int(v.substr(g + 1), &group))
    return invalid_argument("'{}': no group size after 'g'", v);
  r.group = group;
  return Status::ok();
}

}  // namespace

Result<ModuleRule> parse_module_rule(const std::string& text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    return invalid_argument("--override '{}': expected PATTERN=VALUE (e.g. lm_head=fp16, "
                            "model.layers.{{0-1}}.mlp.down_proj=w8)", text);
  ModuleRule r;
  r.text = text;
  r.pattern = text.substr(0, eq);
  Status s = parse_value(std::string_view(text).substr(eq + 1), r);
  if (!s.is_ok()) return invalid_argument("--override '{}': {}", text, s.message());
  if (!r.keep && r.bits != 2 && r.bits != 3 && r.bits != 4 && r.bits != 8)
    return unsupported("--override '{}': {}-bit weights are not supported (2, 3, 4, 8, or fp16 to keep)", text, r.bits);
  return r;
}

bool module_pattern_matches(std::string_view p, std::string_view s) {
  if (p.empty()) return s.empty();
  if (p[0] == '*') {
    for (size_t i = 0; i <= s.size(); ++i)
      if (module_pattern_matches(p.substr(1), s.substr(i))) return true;
    return false;
  }
  if (p[0] == '{') {
    const size_t close = p.find('}'), dash = p.find('-');
    int lo = 0, hi = 0, value = 0;
    if (close != std::string_view::npos && dash < close && parse_int(p.substr(1, dash - 1), &lo) &&
        parse_int(p.substr(dash + 1, close - dash - 1), &hi)) {
      const size_t n = digits_at(s);
      return n > 0 && parse_int(s.substr(0, n), &value) && value >= lo && value <= hi &&
             module_pattern_matches(p.substr(close + 1), s.substr(n));
    }
  }
  if (s.empty()) return false;
  if (p[0] != '?' && p[0] != s[0]) return false;
  return module_pattern_matches(p.substr(1), s.substr(1));
}

std::optional<QuantSpec> spec_for_module(const std::string& module, const QuantSpec& def,
                                         const std::vector<ModuleRule>& rules, bool default_keep) {
  std::optional<QuantSpec> spec;
  if (!default_keep) spec = def;
  for (const ModuleRule& r : rules) {
    if (!module_pattern_matches(r.pattern, module)) continue;
    if (r.keep) {
      spec.reset();
      continue;
    }
    QuantSpec s = def;
    s.bits = r.bits;
    if (r.group) s.group_size = *r.group;
    if (r.symmetric) s.symmetric = *r.symmetric;
    spec = s;
  }
  return spec;
}

}  // namespace compactor
