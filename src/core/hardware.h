// Host description for run records (CPU model, cores, memory, OS, GPUs) and process memory use.
// Linux only: reads /proc/cpuinfo, /proc/driver/nvidia/gpus/*/information (present when the NVIDIA
// driver is loaded, so no CUDA dependency here), sysconf, uname, getrusage, /proc/self/statm.
// Tested in tests/unit/test_run_store.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace compactor {

struct HardwareInfo {
  std::string cpu_model;          // "model name" of the first processor, or "unknown"
  int cores = 0;                  // online logical processors
  int64_t memory_bytes = 0;       // physical memory
  std::string os;                 // "Linux 6.1.0-18-amd64 x86_64"
  std::vector<std::string> gpus;  // one entry per NVIDIA GPU the driver reports, e.g. "NVIDIA H100 80GB HBM3"
};

HardwareInfo detect_hardware();
nlohmann::json to_json(const HardwareInfo& hw);

int64_t peak_rss_bytes();     // high-water resident set (getrusage ru_maxrss, at least current_rss_bytes())
int64_t current_rss_bytes();  // resident set now (/proc/self/statm); 0 if unreadable

}  // namespace compactor
