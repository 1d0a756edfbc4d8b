// Progress on stderr for long work: a bar with rate and ETA when stderr is a terminal, a plain
// line every few seconds otherwise (logs and CI), nothing when quiet.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace compactor {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool quiet = false);
  ~Progress();
  void update(int64_t done, const std::string& detail = "");
  void finish(const std::string& detail = "");

 private:
  void draw(const std::string& detail, bool final_line);
  std::string label_;
  int64_t total_, done_ = 0;
  bool quiet_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace compactor
