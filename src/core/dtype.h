// Element types of plain tensors and scalar conversions (bf16/f16 <-> f32) shared by host code.
// Packed quantized weight formats live in src/formats/; this is only the dense element types.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace compactor {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kI8, kU8, kI16, kF64, kBool };

struct DTypeInfo {
  DType dtype;
  std::string_view name;        // our name: "f32"
  std::string_view safetensors; // safetensors header name: "F32"
  int bytes;
};

inline constexpr DTypeInfo kDTypeTable[] = {
    {DType::kF32, "f32", "F32", 4},  {DType::kF16, "f16", "F16", 2}, {DType::kBF16, "bf16", "BF16", 2},
    {DType::kI32, "i32", "I32", 4},  {DType::kI64, "i64", "I64", 8}, {DType::kI8, "i8", "I8", 1},
    {DType::kU8, "u8", "U8", 1},     {DType::kI16, "i16", "I16", 2}, {DType::kF64, "f64", "F64", 8},
    {DType::kBool, "bool", "BOOL", 1},
};
static_assert([] {
  for (int i = 0; i < static_cast<int>(std::size(kDTypeTable)); ++i)
    if (static_cast<int>(kDTypeTable[i].dtype) != i) return false;
  return true;
}(), "kDTypeTable row i must describe DType i");

constexpr const DTypeInfo& dtype_info(DType t) { return kDTypeTable[static_cast<int>(t)]; }
constexpr int dtype_size(DType t) { return dtype_info(t).bytes; }
constexpr std::string_view dtype_name(DType t) { return dtype_info(t).name; }

// Returns false when `name` is no safetensors dtype we know.
inline bool dtype_from_safetensors(std::string_view name, DType* out) {
  for (const auto& row : kDTypeTable)
    if (row.safetensors == name) { *out = row.dtype; return true; }
  return false;
}
inline bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& row : kDTypeTable)
    if (row.name == name) { *out = row.dtype; return true; }
  return false;
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round-to-nearest-even, NaN kept quiet (same as torch/ggml).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float f16_to_f32(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}
inline uint16_t f32_to_f16(float f) {
  _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

// Converts n elements of `src` (dtype f32/f16/bf16) to f32. Invariant: dtype is a float type.
void convert_to_f32(const void* src, DType dtype, int64_t n, float* dst);
void convert_from_f32(const float* src, int64_t n, DType dtype, void* dst);

}  // namespace compactor
