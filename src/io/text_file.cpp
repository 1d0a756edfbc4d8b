// Text files, SHA-256 (OpenSSL EVP) and JSONL fields. See text_file.h.
#include "io/text_file.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

namespace compactor {

namespace fs = std::filesystem;

namespace {

Status open_error(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return not_found("'{}' does not exist", path.string());
  if (fs::is_directory(path, ec)) return invalid_argument("'{}' is a directory; expected a file", path.string());
  return io_error("cannot open '{}': {}", path.string(), std::strerror(errno));
}

using DigestCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

DigestCtx new_sha256() {
  DigestCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  COMPACTOR_ASSERT(ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
                   "OpenSSL cannot initialise SHA-256");
  return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  COMPACTOR_ASSERT(EVP_DigestFinal_ex(ctx, digest, &n) == 1, "OpenSSL SHA-256 finalisation failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace

Result<std::string> read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::error_code ec;
  if (!in || fs::is_directory(path, ec)) return open_error(path);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return io_error("reading '{}' failed", path.string());
  if (data.empty()) return invalid_argument("'{}' is empty", path.string());
  return data;
}

std::string sha256_hex(std::string_view bytes) {
  DigestCtx ctx = new_sha256();
  COMPACTOR_ASSERT(EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) == 1, "OpenSSL SHA-256 update failed");
  return finish_hex(ctx.get());
}

Result<std::string> sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::error_code ec;
  if (!in || fs::is_directory(path, ec)) return open_error(path);
  DigestCtx ctx = new_sha256();
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize got = in.gcount();
    if (got > 0) COMPACTOR_ASSERT(EVP_DigestUpdate(ctx.get(), buf.data(), got) == 1, "OpenSSL SHA-256 update failed");
  }
  if (in.bad()) return io_error("reading '{}' failed", path.string());
  return finish_hex(ctx.get());
}

Result<std::vector<std::string>> read_jsonl_field(const fs::path& path, const std::string& field) {
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  std::vector<std::string> out;
  size_t pos = 0;
  for (int64_t line_no = 1; pos < text.size(); ++line_no) {
    size_t nl = text.find('\n', pos);
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return corrupt("{}:{}: not valid JSON", path.string(), line_no);
    if (!j.is_object()) return corrupt("{}:{}: expected a JSON object, got {}", path.string(), line_no, j.type_name());
    auto it = j.find(field);
    if (it == j.end()) return not_found("{}:{}: no field '{}'", path.string(), line_no, field);
    if (!it->is_string())
      return invalid_argument("{}:{}: field '{}' must be a string, got {}", path.string(), line_no, field,
                              it->type_name());
    out.push_back(it->get<std::string>());
  }
  if (out.empty()) return invalid_argument("'{}' has no JSON lines", path.string());
  return out;
}

}  // namespace compactor
