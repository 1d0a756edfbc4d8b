#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace compactor {

Progress::Progress(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)), total_(total), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && done_ > 0) finish();
}

void Progress::update(int64_t done, const std::string& detail) {
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (quiet_ || since < (tty_ ? 0.2 : 5.0)) return;
  last_draw_ = now;
  draw(detail, false);
}

void Progress::finish(const std::string& detail) {
  finished_ = true;
  if (quiet_) return;
  draw(detail, true);
}

void Progress::draw(const std::string& detail, bool final_line) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 0.0;
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0.0;
  std::string line = fmt::format("{} {}/{} ({:.0f}%) {:.1f}s elapsed, ETA {:.1f}s {}", label_, done_, total_,
                                 frac * 100, elapsed, eta, detail);
  if (tty_) {
    constexpr int kWidth = 24;
    int filled = static_cast<int>(frac * kWidth);
    std::string bar = "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] ";
    std::fprintf(stderr, "\r\033[K%s%s%s", bar.c_str(), line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace compactor
