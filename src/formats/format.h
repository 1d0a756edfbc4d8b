// The one table of weight storage formats (ggml type_traits style). Row i describes Format i;
// backends keep their own compute traits keyed by this enum. Quantized rows are added by the
// PTQ work; the dense rows are what Hugging Face checkpoints store.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace compactor {

enum class Format : uint8_t { kF32, kF16, kBF16 };

enum class ScaleType : uint8_t { kNone, kF16, kBF16, kF32 };

struct FormatInfo {
  Format format;
  std::string_view name;
  int bits;           // bits per weight element, excluding scales
  int block_elems;    // elements per block (1 for dense)
  int block_bytes;    // bytes per block
  bool has_zero;      // asymmetric zero point
  ScaleType scale_type;
};

inline constexpr FormatInfo kFormatTable[] = {
    {Format::kF32, "f32", 32, 1, 4, false, ScaleType::kNone},
    {Format::kF16, "f16", 16, 1, 2, false, ScaleType::kNone},
    {Format::kBF16, "bf16", 16, 1, 2, false, ScaleType::kNone},
};
static_assert([] {
  for (int i = 0; i < static_cast<int>(std::size(kFormatTable)); ++i)
    if (static_cast<int>(kFormatTable[i].format) != i) return false;
  return true;
}(), "kFormatTable row i must describe Format i");

constexpr const FormatInfo& format_info(Format f) { return kFormatTable[static_cast<int>(f)]; }
constexpr std::string_view format_name(Format f) { return format_info(f).name; }
constexpr bool format_is_dense(Format f) { return f == Format::kF32 || f == Format::kF16 || f == Format::kBF16; }

// Dense formats correspond one to one with float dtypes.
inline bool format_from_dtype(DType d, Format* out) {
  switch (d) {
    case DType::kF32: *out = Format::kF32; return true;
    case DType::kF16: *out = Format::kF16; return true;
    case DType::kBF16: *out = Format::kBF16; return true;
    default: return false;
  }
}

}  // namespace compactor
