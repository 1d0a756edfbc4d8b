// Tensor (owning) and View (non-owning): pointer, shape, dtype, device. Row-major and contiguous
// unless a View says otherwise through `row_stride` (elements between rows of a 2-D view).
// Matmul convention used everywhere: Y[T,N] = X[T,K] · W[K,N] in math; W is stored [N,K] (HF).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace compactor {

enum class Device : uint8_t { kCpu, kCuda };
inline const char* device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> dims{};
  int ndim = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) {
    COMPACTOR_ASSERT(d.size() <= kMaxDims, "shape has {} dims, at most {} supported", d.size(), kMaxDims);
    for (int64_t v : d) dims[ndim++] = v;
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (ndim != o.ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (dims[i] != o.dims[i]) return false;
    return true;
  }
  std::string str() const;  // "[2, 384]"
};

struct View {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;

  int64_t numel() const { return shape.numel(); }
  int64_t bytes() const { return numel() * dtype_size(dtype); }
  int64_t rows() const { return shape.ndim == 0 ? 1 : numel() / shape[shape.ndim - 1]; }
  int64_t cols() const { return shape.ndim == 0 ? 1 : shape[shape.ndim - 1]; }
  template <typename T> T* as() const { return static_cast<T*>(data); }
  // Rows [begin, begin+count) of a view seen as [rows, cols].
  View row_slice(int64_t begin, int64_t count) const;
  // Same data, new shape with the same element count.
  View reshaped(Shape s) const;
};

// Owning storage. CPU memory is 64-byte aligned; CUDA memory comes from the device allocator
// registered by the CUDA backend (so core does not depend on CUDA).
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype, Device device = Device::kCpu);
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::kCpu);

  View view() const { return view_; }
  operator View() const { return view_; }  // NOLINT: a Tensor is usable wherever a View is
  void* data() const { return view_.data; }
  const Shape& shape() const { return view_.shape; }
  DType dtype() const { return view_.dtype; }
  Device device() const { return view_.device; }
  int64_t numel() const { return view_.numel(); }
  int64_t bytes() const { return view_.bytes(); }
  bool defined() const { return storage_ != nullptr; }
  template <typename T> T* as() const { return view_.as<T>(); }

 private:
  std::shared_ptr<void> storage_;
  View view_;
};

// Device memory hooks: the CUDA backend installs these at start-up.
struct DeviceAllocator {
  void* (*alloc)(size_t bytes) = nullptr;
  void (*free)(void* ptr) = nullptr;
  void (*memset_zero)(void* ptr, size_t bytes) = nullptr;
};
void set_device_allocator(Device device, DeviceAllocator allocator);

}  // namespace compactor
