#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace compactor {

namespace {
DeviceAllocator g_cuda_allocator;

std::shared_ptr<void> allocate(size_t bytes, Device device) {
  if (device == Device::kCpu) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (p == nullptr) throw std::bad_alloc();
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
  COMPACTOR_ASSERT(g_cuda_allocator.alloc != nullptr, "CUDA tensor requested but no CUDA backend is initialised");
  void* p = g_cuda_allocator.alloc(bytes == 0 ? 1 : bytes);
  if (p == nullptr) throw std::bad_alloc();
  auto free_fn = g_cuda_allocator.free;
  return std::shared_ptr<void>(p, [free_fn](void* q) { free_fn(q); });
}
}  // namespace

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

View View::row_slice(int64_t begin, int64_t count) const {
  COMPACTOR_ASSERT(begin >= 0 && begin + count <= rows(), "row slice [{}, {}) of {} rows", begin, begin + count, rows());
  View v = *this;
  v.data = static_cast<char*>(data) + begin * cols() * dtype_size(dtype);
  if (shape.ndim <= 1) {
    v.shape = Shape{count};
  } else {
    v.shape = Shape{count, cols()};
  }
  return v;
}

View View::reshaped(Shape s) const {
  COMPACTOR_ASSERT(s.numel() == numel(), "reshape {} -> {} changes the element count", shape.str(), s.str());
  View v = *this;
  v.shape = s;
  return v;
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  Tensor t;
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  t.storage_ = allocate(bytes, device);
  t.view_ = View{t.storage_.get(), shape, dtype, device};
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device == Device::kCpu) {
    std::memset(t.data(), 0, t.bytes());
  } else {
    g_cuda_allocator.memset_zero(t.data(), t.bytes());
  }
  return t;
}

void set_device_allocator(Device device, DeviceAllocator allocator) {
  COMPACTOR_ASSERT(device == Device::kCuda, "only the CUDA allocator can be replaced");
  g_cuda_allocator = allocator;
}

}  // namespace compactor
