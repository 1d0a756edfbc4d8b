// Helpers of the whole-model tests on the CPU backend: load a model directory, take every
// position's logits of one prompt, and swap a named linear for a dense f32 weight (the reference a
// compressed directory's reload is compared with).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace compactor::test {

struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;  // null (and a test failure recorded) when the load failed
};

// The model in `dir` on a fresh CPU backend.
LoadedModel load_cpu_model(const std::filesystem::path& dir);

// Logits [T, V] f32 of one prefill of `ids` (batch 1) in a fresh cache.
std::vector<float> prompt_logits(Model& model, const std::vector<int32_t>& ids);

// Replaces the linear named `name` (HF module name, or "lm_head") of `model` by the dense f32
// weight w: [n, k], which `storage` keeps alive; its bias stays. Fails the test for an unknown name.
void replace_with_dense(Model& model, const std::string& name, std::vector<float> w, int64_t n, int64_t k,
                        std::vector<std::vector<float>>& storage);

// A loaded model whose named linears are swapped for dense f32 weights kept alive here: the
// reference a compressed directory's reload is compared with.
struct DenseReference {
  LoadedModel base;
  std::vector<std::vector<float>> storage;

  void replace(const std::string& name, std::vector<float> w, int64_t n, int64_t k) {
    replace_with_dense(*base.model, name, std::move(w), n, k, storage);
  }
};

}  // namespace compactor::test
