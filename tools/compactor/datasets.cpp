#include "datasets.h"

#include <cstdlib>
#include <map>

namespace compactor::cli {

std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("COMPACTOR_SHARED")) return env;
  if (std::filesystem::exists("../shared/data")) return "../shared";
  return COMPACTOR_DEFAULT_SHARED;
}

Result<std::filesystem::path> resolve_dataset(const std::string& name_or_path) {
  static const std::map<std::string, std::string> kNamed = {
      {"wikitext2", "data/wikitext2/wiki.test.raw"},
      {"wikitext2-joined", "data/wikitext2/wikitext2_test_hf_joined.txt"},
      {"fixture-val", "data/fixture-val/val.txt"},
      {"c4", "data/calibration/c4.utf8"},
      {"wiki", "data/calibration/wiki.utf8"},
      {"tiny", "data/calibration/tiny.utf8"},
  };
  std::filesystem::path path = name_or_path;
  if (auto it = kNamed.find(name_or_path); it != kNamed.end())
    path = std::filesystem::weakly_canonical(shared_dir() / it->second);
  if (!std::filesystem::exists(path))
    return not_found("--data: '{}' is neither a named dataset (wikitext2, fixture-val, c4, wiki, tiny) nor an "
                     "existing file (looked for {})", name_or_path, path.string());
  return path;
}

}  // namespace compactor::cli
