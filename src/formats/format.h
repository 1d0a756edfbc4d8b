// The one table of weight storage formats (ggml type_traits style). Row i describes Format i;
// backends keep their own compute traits keyed by this enum. The dense rows are what Hugging Face
// checkpoints store; the intN rows are the GPTQ-style packed integer weights whose bit layout is
// documented in formats/quant_pack.h (unsigned codes + integer zero points + f16 scales, so
// symmetric and asymmetric quantization share one storage). Group size is not part of the format:
// it is a per-linear parameter (LinearWeight::group_size, QuantSpec::group_size). The presets
// below name the usual (bits, group) pairs.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace compactor {

enum class Format : uint8_t { kF32, kF16, kBF16, kInt8, kInt4, kInt3, kInt2, kNF4 };

// kE4M3Nested: FP8 E4M3 scales, themselves scaled per 256 by f32 (NF4 double quantization).
enum class ScaleType : uint8_t { kNone, kF16, kBF16, kF32, kE4M3Nested };

struct FormatInfo {
  Format format;
  std::string_view name;
  int bits;           // bits per weight element, excluding scales
  int block_elems;    // elements per block (1 for dense; intN: 32 consecutive input rows)
  int block_bytes;    // bytes per block (intN: the `bits` int32 words holding 32 codes)
  bool has_zero;      // asymmetric zero point
  ScaleType scale_type;
};

inline constexpr FormatInfo kFormatTable[] = {
    {Format::kF32, "f32", 32, 1, 4, false, ScaleType::kNone},
    {Format::kF16, "f16", 16, 1, 2, false, ScaleType::kNone},
    {Format::kBF16, "bf16", 16, 1, 2, false, ScaleType::kNone},
    {Format::kInt8, "int8", 8, 32, 32, true, ScaleType::kF16},
    {Format::kInt4, "int4", 4, 32, 16, true, ScaleType::kF16},
    {Format::kInt3, "int3", 3, 32, 12, true, ScaleType::kF16},
    {Format::kInt2, "int2", 2, 32, 8, true, ScaleType::kF16},
    // NF4 (formats/nf4.h): 64 codes = 32 bytes + one E4M3 scale byte per block
    {Format::kNF4, "nf4", 4, 64, 33, false, ScaleType::kE4M3Nested},
};
static_assert([] {
  for (int i = 0; i < static_cast<int>(std::size(kFormatTable)); ++i)
    if (static_cast<int>(kFormatTable[i].format) != i) return false;
  return true;
}(), "kFormatTable row i must describe Format i");

constexpr const FormatInfo& format_info(Format f) { return kFormatTable[static_cast<int>(f)]; }
constexpr std::string_view format_name(Format f) { return format_info(f).name; }
constexpr bool format_is_dense(Format f) { return f == Format::kF32 || f == Format::kF16 || f == Format::kBF16; }
constexpr bool format_is_quantized(Format f) {
  return f == Format::kInt8 || f == Format::kInt4 || f == Format::kInt3 || f == Format::kInt2 || f == Format::kNF4;
}
// The intN formats (uniform grid, f16 scales, integer zero points: quant_pack.h); NF4 is quantized
// but not intN (codebook levels, double-quantized scales: nf4.h).
constexpr bool format_is_int(Format f) { return format_is_quantized(f) && f != Format::kNF4; }
constexpr int format_bits(Format f) { return format_info(f).bits; }

// The packed integer format of a bit width (2, 3, 4, 8); false for other widths.
constexpr bool format_from_bits(int bits, Format* out) {
  switch (bits) {
    case 8: *out = Format::kInt8; return true;
    case 4: *out = Format::kInt4; return true;
    case 3: *out = Format::kInt3; return true;
    case 2: *out = Format::kInt2; return true;
    default: return false;
  }
}

// Format names (format_name) back to formats; false for unknown names.
constexpr bool format_from_name(std::string_view name, Format* out) {
  for (const auto& row : kFormatTable)
    if (row.name == name) { *out = row.format; return true; }
  return false;
}

// Weight-only quantization presets (mlc-llm style): wB = B bits, gG = G input columns per scale
// group, no g = per-channel (one group per output row). Symmetry and act-order are orthogonal flags.
struct QuantPreset {
  std::string_view name;
  int bits;
  int group_size;  // 0 = per-channel
};

inline constexpr QuantPreset kQuantPresets[] = {
    {"w8", 8, 0},       {"w8g128", 8, 128}, {"w4", 4, 0},       {"w4g128", 4, 128}, {"w4g64", 4, 64},
    {"w4g32", 4, 32},   {"w3g128", 3, 128}, {"w3g64", 3, 64},   {"w3g32", 3, 32},   {"w2g128", 2, 128},
    {"w2g64", 2, 64},   {"w2g32", 2, 32},   {"w2g16", 2, 16},
};

// nullptr when `name` is no preset.
constexpr const QuantPreset* find_quant_preset(std::string_view name) {
  for (const auto& p : kQuantPresets)
    if (p.name == name) return &p;
  return nullptr;
}

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
