// Loads of f32/f16/bf16 elements as f32 for the fast CPU kernels: 16 lanes with AVX-512, 8 with
// AVX2+F16C, one element in the portable fallback. The build uses -march=native, so the widest
// instruction set of the build machine is chosen at compile time.
// Test: build/tests/test_cpu_ops (exercised through matmul and attention).
#pragma once

#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
// GCC 12's intrinsics read deliberately undefined registers (GCC bug 105593): silence its false
// -Wuninitialized reports, which are attributed to these header lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "core/dtype.h"

namespace compactor::simd {

// Element i of an array of dtype W, as f32.
template <DType W>
inline float load1(const void* p, int64_t i) {
  if constexpr (W == DType::kF32) return static_cast<const float*>(p)[i];
  if constexpr (W == DType::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (W == DType::kF16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

#if defined(__AVX512F__)
constexpr int kLanes = 16;
using Vec = __m512;
template <DType W>
inline Vec load(const void* p, int64_t i) {
  if constexpr (W == DType::kF32) return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  const auto* h = reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i);
  // bf16 is the high half of an f32: widen to 32 bits and shift into place.
  if constexpr (W == DType::kBF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(h)), 16));
  if constexpr (W == DType::kF16) return _mm512_cvtph_ps(_mm256_loadu_si256(h));
}
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float reduce_add(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
constexpr int kLanes = 8;
using Vec = __m256;
template <DType W>
inline Vec load(const void* p, int64_t i) {
  if constexpr (W == DType::kF32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  const auto* h = reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i);
  if constexpr (W == DType::kBF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(h)), 16));
  if constexpr (W == DType::kF16) return _mm256_cvtph_ps(_mm_loadu_si128(h));
}
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float reduce_add(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
constexpr int kLanes = 1;
using Vec = float;
template <DType W>
inline Vec load(const void* p, int64_t i) { return load1<W>(p, i); }
inline Vec zero() { return 0.f; }
inline Vec fmadd(Vec a, Vec b, Vec c) { return a * b + c; }
inline float reduce_add(Vec v) { return v; }
#endif

// Converts n elements of dtype W at src to f32 at dst: [n].
template <DType W>
inline void convert(const void* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(dst + i, load<W>(src, i));
#elif defined(__AVX2__)
  for (; i + kLanes <= n; i += kLanes) _mm256_storeu_ps(dst + i, load<W>(src, i));
#endif
  for (; i < n; ++i) dst[i] = load1<W>(src, i);
}

}  // namespace compactor::simd
