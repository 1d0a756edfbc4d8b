// Calibration sets for post-training compression: N token windows of L tokens drawn with a seed
// from a text file or a JSONL file (field "text"), tokenized with the model's tokenizer.
//  - Text: the file is one token stream; it is cut into consecutive windows and N of them are
//    drawn without replacement (GPTQ's WikiText-2 sampling, minus overlap).
//  - JSONL: each record is a document; N documents with at least L tokens are drawn, and a random
//    window of each (GPTQ's C4 sampling).
// With a BOS token each window is [BOS] + L-1 text tokens, matching the perplexity convention
// (docs/VERIFY.md). Too little data is an error that says what was found and what was asked for.
// Test: build-comp/tests/test_ptq_driver (tests/models/test_ptq_driver.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace compactor {

struct CalibrationOptions {
  std::filesystem::path file;
  int samples = 128;       // N
  int seqlen = 2048;       // L, BOS included
  uint64_t seed = 0;
  std::string jsonl_field = "text";
};

struct CalibrationSet {
  int samples = 0, seqlen = 0;
  std::vector<int32_t> ids;     // [samples * seqlen]
  std::string source;           // file path
  std::string sha256;           // of the file's bytes
  std::string mode;             // "text" | "jsonl"
  int64_t source_tokens = 0;    // tokens in the file (text) or in its documents (jsonl)
  int64_t candidates = 0;       // windows (text) or long-enough documents (jsonl) to draw from
  uint64_t seed = 0;

  const int32_t* sample(int i) const { return ids.data() + static_cast<int64_t>(i) * seqlen; }
};

// Reads, tokenizes and samples. Errors: missing/empty file, N or L not positive, too few windows
// or long-enough documents (message: file, what it holds, N and L requested).
Result<CalibrationSet> load_calibration(const CalibrationOptions& opts, const Tokenizer& tokenizer);

// A calibration set made from given token ids (tests, synthetic use): [samples * seqlen].
CalibrationSet calibration_from_ids(std::vector<int32_t> ids, int samples, int seqlen);

}  // namespace compactor
