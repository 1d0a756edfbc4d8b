#include "compress/calibration.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "io/text_file.h"

namespace compactor {

namespace {

bool is_jsonl(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  return ext == ".jsonl" || ext == ".ndjson";
}

// Appends [BOS] + `count` tokens of `src` from `offset`.
void append_window(std::vector<int32_t>& out, const std::vector<int32_t>& src, int64_t offset, int64_t count,
                   int32_t bos) {
  if (bos >= 0) out.push_back(bos);
  out.insert(out.end(), src.begin() + offset, src.begin() + offset + count);
}

Status sample_text(CalibrationSet& set, const std::string& text, const Tokenizer& tok, const CalibrationOptions& o,
                   std::mt19937_64& rng) {
  const std::vector<int32_t> tokens = tok.encode(text, false);
  const int32_t bos = tok.bos_id();
  const int64_t chunk = o.seqlen - (bos >= 0 ? 1 : 0);
  set.source_tokens = static_cast<int64_t>(tokens.size());
  set.candidates = chunk > 0 ? set.source_tokens / chunk : 0;
  if (set.source_tokens < chunk)
    return invalid_argument("calibration file {} has {} tokens, shorter than one sequence of --calib-seqlen {}",
                            o.file.string(), set.source_tokens, o.seqlen);
  if (set.candidates < o.samples)
    return invalid_argument("calibration file {} is smaller than requested: {} tokens make {} windows of {} tokens, "
                            "but --calib-samples {} were asked for (lower --calib-samples or --calib-seqlen, or use "
                            "a larger file)", o.file.string(), set.source_tokens, set.candidates, o.seqlen, o.samples);
  std::vector<int64_t> order(set.candidates);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int i = 0; i < o.samples; ++i) append_window(set.ids, tokens, order[i] * chunk, chunk, bos);
  return Status::ok();
}

Status sample_jsonl(CalibrationSet& set, const Tokenizer& tok, const CalibrationOptions& o, std::mt19937_64& rng) {
  ASSIGN_OR_RETURN(std::vector<std::string> docs, read_jsonl_field(o.file, o.jsonl_field));
  const int32_t bos = tok.bos_id();
  const int64_t chunk = o.seqlen - (bos >= 0 ? 1 : 0);
  std::vector<std::vector<int32_t>> long_docs;
  for (const std::string& d : docs) {
    std::vector<int32_t> t = tok.encode(d, false);
    set.source_tokens += static_cast<int64_t>(t.size());
    if (static_cast<int64_t>(t.size()) >= chunk) long_docs.push_back(std::move(t));
  }
  set.candidates = static_cast<int64_t>(long_docs.size());
  if (set.candidates < o.samples)
    return invalid_argument("calibration file {}: only {} of its {} documents have at least {} tokens "
                            "(--calib-seqlen {}), but --calib-samples {} were asked for (sequences shorter than "
                            "--calib-seqlen are not padded; lower --calib-seqlen or --calib-samples)",
                            o.file.string(), set.candidates, docs.size(), chunk, o.seqlen, o.samples);
  std::vector<int64_t> order(set.candidates);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int i = 0; i < o.samples; ++i) {
    const std::vector<int32_t>& d = long_docs[order[i]];
    std::uniform_int_distribution<int64_t> start(0, static_cast<int64_t>(d.size()) - chunk);
    append_window(set.ids, d, start(rng), chunk, bos);
  }
  return Status::ok();
}

}  // namespace

Result<CalibrationSet> load_calibration(const CalibrationOptions& o, const Tokenizer& tokenizer) {
  if (o.samples <= 0) return invalid_argument("--calib-samples must be positive, got {}", o.samples);
  if (o.seqlen < 2) return invalid_argument("--calib-seqlen must be at least 2, got {}", o.seqlen);
  CalibrationSet set;
  set.samples = o.samples;
  set.seqlen = o.seqlen;
  set.source = o.file.string();
  set.seed = o.seed;
  ASSIGN_OR_RETURN(set.sha256, sha256_file(o.file));
  std::mt19937_64 rng(o.seed);
  set.ids.reserve(static_cast<int64_t>(o.samples) * o.seqlen);
  if (is_jsonl(o.file)) {
    set.mode = "jsonl";
    RETURN_IF_ERROR(sample_jsonl(set, tokenizer, o, rng));
  } else {
    set.mode = "text";
    ASSIGN_OR_RETURN(std::string text, read_text_file(o.file));
    RETURN_IF_ERROR(sample_text(set, text, tokenizer, o, rng));
  }
  COMPACTOR_ASSERT(static_cast<int64_t>(set.ids.size()) == static_cast<int64_t>(o.samples) * o.seqlen,
                   "calibration: {} ids for {} x {}", set.ids.size(), o.samples, o.seqlen);
  return set;
}

CalibrationSet calibration_from_ids(std::vector<int32_t> ids, int samples, int seqlen) {
  COMPACTOR_ASSERT(static_cast<int64_t>(ids.size()) == static_cast<int64_t>(samples) * seqlen,
                   "calibration_from_ids: {} ids for {} x {}", ids.size(), samples, seqlen);
  CalibrationSet set;
  set.samples = samples;
  set.seqlen = seqlen;
  set.ids = std::move(ids);
  set.source = "ids";
  set.mode = "ids";
  return set;
}

}  // namespace compactor
