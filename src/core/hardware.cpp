// Host description and process memory use (see hardware.h).
#include "core/hardware.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace compactor {
namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

// Value of the first "key<spaces>: value" line in a /proc-style file, or "" if absent.
std::string proc_field(const std::filesystem::path& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) return trim(line.substr(colon + 1));
  }
  return {};
}

std::vector<std::string> nvidia_gpus() {
  std::vector<std::string> gpus;
  const std::filesystem::path root = "/proc/driver/nvidia/gpus";
  std::error_code ec;
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());  // PCI bus order, matching nvidia-smi's default
  for (const auto& dir : dirs) {
    std::string model = proc_field(dir / "information", "Model");
    if (!model.empty()) gpus.push_back(model);
  }
  return gpus;
}

std::string os_description() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

}  // namespace

HardwareInfo detect_hardware() {
  HardwareInfo hw;
  hw.cpu_model = proc_field("/proc/cpuinfo", "model name");
  if (hw.cpu_model.empty()) hw.cpu_model = "unknown";
  hw.cores = static_cast<int>(std::max(0L, sysconf(_SC_NPROCESSORS_ONLN)));
  long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  hw.memory_bytes = pages > 0 && page_size > 0 ? static_cast<int64_t>(pages) * page_size : 0;
  hw.os = os_description();
  hw.gpus = nvidia_gpus();
  return hw;
}

nlohmann::json to_json(const HardwareInfo& hw) {
  return {{"cpu_model", hw.cpu_model}, {"cores", hw.cores}, {"memory_bytes", hw.memory_bytes},
          {"os", hw.os}, {"gpus", hw.gpus}};
}

int64_t peak_rss_bytes() {
  rusage usage{};
  int64_t peak = getrusage(RUSAGE_SELF, &usage) == 0 ? static_cast<int64_t>(usage.ru_maxrss) * 1024 : 0;  // KiB
  // The kernel's high-water mark can trail statm by a few dozen pages (per-thread RSS counters are
  // folded in lazily), so never report a peak below the current value.
  return std::max(peak, current_rss_bytes());
}

int64_t current_rss_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t total_pages = 0, resident_pages = 0;
  if (!(in >> total_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGE_SIZE));
}

}  // namespace compactor
