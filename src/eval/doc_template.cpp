#include "eval/doc_template.h"

#include <algorithm>
#include <cctype>

namespace compactor {

namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> segs;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const size_t end = dot == std::string_view::npos ? path.size() : dot;
    segs.emplace_back(path.substr(start, end - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return segs;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

Result<Doc> lookup_from(const Doc& cur, const std::vector<std::string>& segs, size_t i, std::string_view path) {
  if (i == segs.size()) return cur;
  const std::string& seg = segs[i];
  if (seg == "*") {
    if (!cur.is_array()) return invalid_argument("field '{}': '*' needs a list, found {}", path, cur.type_name());
    Doc out = Doc::array();
    for (const Doc& el : cur) {
      ASSIGN_OR_RETURN(Doc v, lookup_from(el, segs, i + 1, path));
      out.push_back(std::move(v));
    }
    return out;
  }
  if (seg == "@keys" || seg == "@values") {
    if (!cur.is_object()) return invalid_argument("field '{}': '{}' needs an object, found {}", path, seg, cur.type_name());
    Doc out = Doc::array();
    for (auto it = cur.begin(); it != cur.end(); ++it) out.push_back(seg == "@keys" ? Doc(it.key()) : it.value());
    return lookup_from(out, segs, i + 1, path);
  }
  if (cur.is_array() && all_digits(seg)) {
    const size_t idx = std::stoul(seg);
    if (idx >= cur.size()) return invalid_argument("field '{}': index {} beyond the list's {} entries", path, idx, cur.size());
    return lookup_from(cur[idx], segs, i + 1, path);
  }
  if (!cur.is_object()) return invalid_argument("field '{}': '{}' needs an object, found {}", path, seg, cur.type_name());
  auto it = cur.find(seg);
  if (it == cur.end()) return invalid_argument("missing field '{}'", path);
  return lookup_from(*it, segs, i + 1, path);
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string lstrip(std::string s) {
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  return s.substr(i);
}
std::string rstrip(std::string s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
  return s;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos);
  return out;
}

// Python's re.sub(r"\[.*?\]", "", s): '.' does not match a newline.
std::string drop_bracketed(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '[') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != ']' && s[j] != '\n') ++j;
      if (j < s.size() && s[j] == ']') {
        i = j + 1;
        continue;
      }
    }
    out += s[i++];
  }
  return out;
}

// Parses a quoted filter argument starting at text[i] (a quote); advances i past it.
Result<std::string> parse_quoted(std::string_view text, size_t& i) {
  const char quote = text[i++];
  std::string out;
  while (i < text.size() && text[i] != quote) {
    char c = text[i++];
    if (c == '\\' && i < text.size()) {
      const char e = text[i++];
      c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
    }
    out += c;
  }
  if (i >= text.size()) return invalid_argument("unterminated quoted argument");
  ++i;
  return out;
}

void skip_spaces(std::string_view text, size_t& i) {
  while (i < text.size() && text[i] == ' ') ++i;
}

// Parses "name" or "name(arg, ...)" at text[i]; stops at '|' or '}'.
Result<TemplateFilter> parse_filter(std::string_view text, size_t& i) {
  TemplateFilter f;
  skip_spaces(text, i);
  while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) f.name += text[i++];
  if (f.name.empty()) return invalid_argument("expected a filter name at column {}", i + 1);
  skip_spaces(text, i);
  if (i < text.size() && text[i] == '(') {
    ++i;
    for (;;) {
      skip_spaces(text, i);
      if (i < text.size() && text[i] == ')') break;
      if (i >= text.size() || (text[i] != '"' && text[i] != '\''))
        return invalid_argument("filter '{}': expected a quoted argument at column {}", f.name, i + 1);
      ASSIGN_OR_RETURN(std::string arg, parse_quoted(text, i));
      f.args.push_back(std::move(arg));
      skip_spaces(text, i);
      if (i < text.size() && text[i] == ',') ++i;
    }
    ++i;
  }
  RETURN_IF_ERROR(apply_filter(f, "").status());  // validates the name and arity once, at parse time
  return f;
}

}  // namespace

Result<Doc> lookup_path(const Doc& doc, std::string_view path) {
  if (path.empty()) return invalid_argument("empty field path");
  return lookup_from(doc, split_path(path), 0, path);
}

Result<std::string> scalar_text(const Doc& value, std::string_view path) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer() || value.is_boolean()) return value.dump();
  if (value.is_number_float()) return value.dump();
  return invalid_argument("field '{}' is a {}, expected text or a number", path, value.type_name());
}

Result<std::vector<std::string>> lookup_string_list(const Doc& doc, std::string_view path) {
  ASSIGN_OR_RETURN(Doc v, lookup_path(doc, path));
  if (!v.is_array()) return invalid_argument("field '{}' is a {}, expected a list", path, v.type_name());
  std::vector<std::string> out;
  for (const Doc& el : v) {
    ASSIGN_OR_RETURN(std::string s, scalar_text(el, path));
    out.push_back(std::move(s));
  }
  return out;
}

std::string hellaswag_preprocess(std::string text) {
  text = rstrip(lstrip(std::move(text)));
  text = replace_all(text, " [title]", ". ");
  text = drop_bracketed(text);
  return replace_all(text, "  ", " ");
}

Result<std::string> apply_filter(const TemplateFilter& f, std::string s) {
  auto arity = [&](size_t n) -> Status {
    if (f.args.size() != n) return invalid_argument("filter '{}' takes {} argument(s), got {}", f.name, n, f.args.size());
    return Status::ok();
  };
  if (f.name == "strip" || f.name == "lstrip" || f.name == "rstrip") {
    RETURN_IF_ERROR(arity(0));
    if (f.name != "rstrip") s = lstrip(std::move(s));
    if (f.name != "lstrip") s = rstrip(std::move(s));
    return s;
  }
  if (f.name == "lower" || f.name == "upper" || f.name == "capitalize") {
    RETURN_IF_ERROR(arity(0));
    for (size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      const bool up = f.name == "upper" || (f.name == "capitalize" && i == 0);
      s[i] = static_cast<char>(up ? std::toupper(c) : std::tolower(c));
    }
    return s;
  }
  if (f.name == "replace") {
    RETURN_IF_ERROR(arity(2));
    return replace_all(s, f.args[0], f.args[1]);
  }
  if (f.name == "strip_prefix") {
    RETURN_IF_ERROR(arity(1));
    return s.rfind(f.args[0], 0) == 0 ? s.substr(f.args[0].size()) : s;
  }
  if (f.name == "hellaswag") {
    RETURN_IF_ERROR(arity(0));
    return hellaswag_preprocess(std::move(s));
  }
  return invalid_argument("unknown filter '{}' (strip, lstrip, rstrip, lower, upper, capitalize, replace, "
                          "strip_prefix, hellaswag)", f.name);
}

Result<DocTemplate> DocTemplate::parse(std::string_view text) {
  DocTemplate t;
  t.source_ = std::string(text);
  std::string literal;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      literal += c;
      i += 2;
      continue;
    }
    if (c == '}') return invalid_argument("template \"{}\": unmatched '}}' at column {} (write '}}}}')", text, i + 1);
    if (c != '{') {
      literal += c;
      ++i;
      continue;
    }
    if (!literal.empty()) t.parts_.push_back({std::move(literal), "", {}});
    literal.clear();
    Part part;
    ++i;
    while (i < text.size() && text[i] != '|' && text[i] != '}') part.path += text[i++];
    part.path.erase(0, part.path.find_first_not_of(' '));
    part.path.erase(part.path.find_last_not_of(' ') + 1);
    if (part.path.empty()) return invalid_argument("template \"{}\": empty field at column {}", text, i + 1);
    while (i < text.size() && text[i] == '|') {
      ++i;
      auto f = parse_filter(text, i);
      if (!f) return f.status().with_context(fmt::format("template \"{}\"", text));
      part.filters.push_back(std::move(*f));
      skip_spaces(text, i);
    }
    if (i >= text.size() || text[i] != '}')
      return invalid_argument("template \"{}\": '{{{}' is not closed by '}}'", text, part.path);
    ++i;
    t.parts_.push_back(std::move(part));
  }
  if (!literal.empty()) t.parts_.push_back({std::move(literal), "", {}});
  return t;
}

Result<std::string> DocTemplate::render(const Doc& doc, const std::map<std::string, std::string>& vars) const {
  std::string out;
  for (const Part& p : parts_) {
    if (p.path.empty()) {
      out += p.literal;
      continue;
    }
    std::string value;
    if (auto it = vars.find(p.path); it != vars.end()) {
      value = it->second;
    } else {
      ASSIGN_OR_RETURN(Doc v, lookup_path(doc, p.path));
      ASSIGN_OR_RETURN(value, scalar_text(v, p.path));
    }
    for (const TemplateFilter& f : p.filters) {
      ASSIGN_OR_RETURN(value, apply_filter(f, std::move(value)));
    }
    out += value;
  }
  return out;
}

}  // namespace compactor
