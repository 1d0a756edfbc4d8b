// Whole fixture models on the CUDA backend against the CPU backend (f32): logits and next-token
// NLL on the reference prompts (../shared/reference/*/prompts_logits.json), and incremental
// decoding through the KV cache (T = 1 steps, the split-key attention path) against one prefill.
// bf16 and f16 activations. Skips (GTEST_SKIP) only when no GPU is present.
// The fixtures are found under $COMPACTOR_SHARED_DIR when set (a device machine with its own
// copy), else the build's ../shared.
// Run (GPU machine): build-cuda/tests/test_cuda_model   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

// Tolerances. Logits: ‖gpu − cpu‖ / ‖cpu‖ per prompt, after every layer's activations were
// rounded to the activation dtype. NLL: |mean gpu − mean cpu| in nats over a prompt's
// predictions (0.005 nats is 0.5% in perplexity, the whole-model bound of VERIFY.md).
double logits_tol(DType d) { return d == DType::kBF16 ? 5e-2 : 1e-2; }
double nll_tol(DType d) { return d == DType::kBF16 ? 2e-2 : 5e-3; }
double decode_tol(DType d) { return d == DType::kBF16 ? 3e-2 : 6e-3; }

std::filesystem::path shared_root() {
  const char* env = std::getenv("COMPACTOR_SHARED_DIR");
  return env != nullptr && *env != '\0' ? std::filesystem::path(env) : test::shared_dir();
}

bool gpu_present() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err == cudaSuccess && count > 0;
}

std::vector<std::vector<int32_t>> reference_prompts(const std::string& model) {
  std::ifstream in(shared_root() / "reference" / model / "prompts_logits.json");
  EXPECT_TRUE(in.good()) << "missing " << (shared_root() / "reference" / model / "prompts_logits.json");
  std::vector<std::vector<int32_t>> out;
  if (!in.good()) return out;
  for (const auto& p : nlohmann::json::parse(in)) out.push_back(p["input_ids"].get<std::vector<int32_t>>());
  return out;
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

struct PromptRun {
  std::vector<float> logits;  // [T, V] f32
  double mean_nll = 0;        // over the T-1 next-token predictions
};

// One prefill of `ids` with all logits, and the mean NLL of ids[1..] through the backend's op.
PromptRun run_prompt(Model& model, const std::vector<int32_t>& ids) {
  PromptRun r;
  const int t = static_cast<int>(ids.size());
  KvCache cache = model.make_kv_cache(1, t);
  auto out = model.forward({ids.data(), BatchLayout{1, t}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  if (!out.is_ok()) return r;
  r.logits.resize(out->numel());
  copy_to_host_f32(model.backend(), *out, r.logits.data());
  std::vector<float> nll(t - 1);
  model.backend().cross_entropy(nll.data(), out->row_slice(0, t - 1), ids.data() + 1);
  for (float x : nll) r.mean_nll += x / (t - 1);
  return r;
}

class CudaModel : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine: GPU model tests skipped";
    CudaBackendOptions o;
    o.activation_dtype = dtype();
    auto be = CudaBackend::create(o);
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    gpu_be_ = std::move(be).value();
    cpu_be_ = std::move(make_backend(BackendKind::kCpu)).value();
    const auto dir = shared_root() / "models" / name();
    auto g = Model::load(dir, *gpu_be_);
    ASSERT_TRUE(g.is_ok()) << g.status().message();
    gpu_ = std::move(g).value();
    auto c = Model::load(dir, *cpu_be_);
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    cpu_ = std::move(c).value();
  }
  const std::string& name() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }

  std::unique_ptr<CudaBackend> gpu_be_;
  std::unique_ptr<Backend> cpu_be_;
  std::unique_ptr<Model> gpu_, cpu_;
};

TEST_P(CudaModel, LogitsAndNllMatchCpu) {
  for (const auto& ids : reference_prompts(name())) {
    const PromptRun g = run_prompt(*gpu_, ids), c = run_prompt(*cpu_, ids);
    ASSERT_EQ(g.logits.size(), c.logits.size());
    const double err = rel_error(g.logits, c.logits);
    EXPECT_LE(err, logits_tol(dtype())) << name() << " T=" << ids.size();
    EXPECT_NEAR(g.mean_nll, c.mean_nll, nll_tol(dtype())) << name() << " T=" << ids.size();
    std::printf("  %s %s T=%zu: logits rel err %.3e, mean NLL gpu %.5f cpu %.5f\n", name().c_str(),
                std::string(dtype_name(dtype())).c_str(), ids.size(), err, g.mean_nll, c.mean_nll);
  }
}

// Prefill n-k tokens, then k single-token steps: each step's logits match the row of one full
// prefill (both on the GPU), so KV append, per-position RoPE and decode attention agree.
TEST_P(CudaModel, IncrementalDecodeMatchesPrefill) {
  const auto prompts = reference_prompts(name());
  ASSERT_FALSE(prompts.empty());
  const std::vector<int32_t>& ids = prompts.back();
  const int n = static_cast<int>(ids.size()), k = std::min(8, n - 1);
  const int64_t vocab = gpu_->config().vocab_size;
  const PromptRun full = run_prompt(*gpu_, ids);

  KvCache cache = gpu_->make_kv_cache(1, n);
  auto pre = gpu_->forward({ids.data(), BatchLayout{1, n - k}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(pre.is_ok()) << pre.status().message();
  for (int step = 0; step < k; ++step) {
    const int pos = n - k + step;
    auto out = gpu_->forward({ids.data() + pos, BatchLayout{1, 1}, LogitsMode::kAll}, cache);
    ASSERT_TRUE(out.is_ok()) << out.status().message();
    std::vector<float> got(vocab);
    copy_to_host_f32(*gpu_be_, *out, got.data());
    const std::vector<float> want(full.logits.begin() + pos * vocab, full.logits.begin() + (pos + 1) * vocab);
    const double err = rel_error(got, want);
    EXPECT_LE(err, decode_tol(dtype())) << name() << " position " << pos;
    if (step == k - 1) std::printf("  %s decode at position %d: rel err %.3e vs prefill\n", name().c_str(), pos, err);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModel,
                         ::testing::Combine(::testing::Values("stories260K", "fixture-llama-sp", "fixture-llama-bpe"),
                                            ::testing::Values(DType::kBF16, DType::kF16)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::string(dtype_name(std::get<1>(info.param)));
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace compactor
