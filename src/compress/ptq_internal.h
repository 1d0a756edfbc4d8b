// Helpers shared by the PTQ block compressors (ptq.cpp: RTN/GPTQ, ptq_awq.cpp: AWQ). Internal to
// src/compress.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "compress/layerwise.h"
#include "compress/ptq.h"

namespace compactor::ptq_detail {

// The tap whose activations are the input of linear `name`.
std::string input_tap(const std::string& name);

// Host f32 copy of a linear's dense weights: [N, K].
std::vector<float> read_linear(Model& model, const LinearWeight& w);
// Host f32 copy of a norm weight: [D].
std::vector<float> read_vector(Model& model, View v);

Status replace_linear_f32(Model& model, int layer, const std::string& name, const std::vector<float>& w);
Status replace_norm_f32(Model& model, int layer, const std::string& name, const std::vector<float>& w);

// The effective spec of a linear (nullopt: kept unquantized), checked against its width.
Result<std::optional<QuantSpec>> linear_spec(const Model& model, const PtqOptions& o, int layer, const std::string& name);

// Fills a report's identity and storage fields.
LinearReport make_report(const Model& model, int layer, const std::string& name, const QuantSpec& spec, bool act_order);

// Records a quantized linear in the result (codes and report).
void record(PtqResult& r, LinearReport report, QuantizedLinear q);

void log_report(const LinearReport& r, bool quiet);

std::unique_ptr<BlockCompressor> make_awq_compressor(const PtqOptions& o, PtqResult& r);

// RTN or GPTQ of one linear on the GPU (ptq_cuda.cpp): st holds device statistics
// (st.on_device()); the model's weight is overwritten with the dequantized values.
Status quantize_linear_cuda(Model& m, const PtqOptions& o, PtqResult& r, int layer, const std::string& name,
                            const QuantSpec& spec, InputStats& st, CudaCompressContext& ctx);

}  // namespace compactor::ptq_detail
