// Loading errors of the model layer: an unsupported weight dtype, a missing tensor and a wrong
// shape each name the tensor and what was expected; sharded checkpoints load like single files.
#include <fstream>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

class ModelLoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::make_temp_dir("model-load");
    for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
      std::filesystem::copy(test::model_dir("stories260K") / f, dir_ / f);
    auto files = WeightFiles::open(test::model_dir("stories260K"));
    ASSERT_TRUE(files.is_ok());
    source_ = std::make_unique<WeightFiles>(std::move(files).value());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes the fixture's tensors, letting `edit` drop or replace entries.
  void write(const std::function<void(std::vector<NamedView>&)>& edit) {
    std::vector<NamedView> tensors;
    for (const std::string& name : source_->names()) tensors.push_back({name, source_->find(name)->view()});
    edit(tensors);
    ASSERT_TRUE(write_safetensors(dir_ / "model.safetensors", tensors, {}).is_ok());
  }

  Status load() {
    auto backend = std::move(make_backend(BackendKind::kCpu)).value();
    return Model::load(dir_, *backend).status();
  }

  std::filesystem::path dir_;
  std::unique_ptr<WeightFiles> source_;
  std::vector<int32_t> int_storage_;
};

TEST_F(ModelLoadErrors, IntegerWeightIsUnsupported) {
  write([&](std::vector<NamedView>& t) {
    for (auto& nv : t)
      if (nv.name == "model.layers.0.mlp.up_proj.weight") {
        int_storage_.assign(nv.view.numel(), 1);
        nv.view.data = int_storage_.data();
        nv.view.dtype = DType::kI32;
      }
  });
  Status s = load();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("i32"), std::string::npos) << s.message();
}

TEST_F(ModelLoadErrors, MissingTensorIsNamed) {
  write([](std::vector<NamedView>& t) {
    std::erase_if(t, [](const NamedView& nv) { return nv.name == "model.layers.3.self_attn.k_proj.weight"; });
  });
  Status s = load();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model.layers.3.self_attn.k_proj.weight"), std::string::npos) << s.message();
}

TEST_F(ModelLoadErrors, WrongShapeIsNamedWithBothShapes) {
  std::vector<float> small(64 * 10, 0.5f);
  write([&](std::vector<NamedView>& t) {
    for (auto& nv : t)
      if (nv.name == "model.layers.1.self_attn.o_proj.weight") nv.view = View{small.data(), Shape{10, 64}, DType::kF32};
  });
  Status s = load();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("o_proj.weight"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[10, 64]"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[64, 64]"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace compactor
