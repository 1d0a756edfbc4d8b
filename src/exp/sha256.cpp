// SHA-256 via OpenSSL EVP (see sha256.h).
#include "exp/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace compactor {
namespace {

constexpr size_t kChunkBytes = size_t{4} << 20;

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

EvpCtx new_sha256_ctx() {
  EvpCtx ctx(EVP_MD_CTX_new());
  COMPACTOR_ASSERT(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, "OpenSSL SHA-256 init failed");
  return ctx;
}

std::string finish_hex(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  COMPACTOR_ASSERT(EVP_DigestFinal_ex(ctx, digest, &len) == 1, "OpenSSL SHA-256 final failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xF]);
  }
  return hex;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  EvpCtx ctx = new_sha256_ctx();
  COMPACTOR_ASSERT(EVP_DigestUpdate(ctx.get(), data.data(), data.size()) == 1, "OpenSSL SHA-256 update failed");
  return finish_hex(ctx.get());
}

Result<std::string> sha256_file_hex(const std::filesystem::path& file) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(file.c_str(), "rb"));
  if (!f) return io_error("cannot open {} for hashing: {}", file.string(), std::strerror(errno));
  EvpCtx ctx = new_sha256_ctx();
  std::vector<char> buf(kChunkBytes);
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    COMPACTOR_ASSERT(EVP_DigestUpdate(ctx.get(), buf.data(), n) == 1, "OpenSSL SHA-256 update failed");
  }
  if (std::ferror(f.get())) return io_error("read error while hashing {}", file.string());
  return finish_hex(ctx.get());
}

}  // namespace compactor
