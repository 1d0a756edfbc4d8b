// Saving a PTQ result as a compressed model directory: save_compressed_model (compressed_model.h)
// packs the quantized linears and copies the base's other tensors; when the compressor also
// changed dense tensors (AWQ folds its scales into RMSNorm weights, or into linears kept in 16
// bits), those are written from the model's current values instead, in f32 (the folded values are
// not rounded back to the checkpoint's bf16). The whole directory is still built atomically:
// nothing appears at `out` unless everything was written.
// Test: build-comp/tests/test_ptq_driver (save, reload, same perplexity).
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "compress/ptq.h"
#include "io/atomic_file.h"

namespace compactor {

Status save_quantized_model(const Model& model, const PtqResult& result, const nlohmann::json& provenance,
                            const std::filesystem::path& out, Overwrite overwrite = Overwrite::kNo);

}  // namespace compactor
