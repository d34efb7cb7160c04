// What a benchmark reads about a process from /proc: its CPU time, and a
// wait until it is quiet (so that a figure does not include work left over
// from the setup, e.g. pulsesyncd's feed hub reading the rows the setup
// just wrote).
#ifndef PULSESYNC_BENCH_PROCESS_H_
#define PULSESYNC_BENCH_PROCESS_H_

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pulsesync::bench {

// CPU seconds (user + system) of a process; 0 if it cannot be read.
inline double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> f = absl::StrSplit(text.substr(paren + 2), ' ', absl::SkipEmpty());
  if (f.size() < 13) return 0;
  return (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / ::sysconf(_SC_CLK_TCK);
}

// Waits until `pid` used under `busy` of a core in each of two windows of
// `window` in a row, or `deadline` passed. Returns the seconds waited, or
// -1 if it never became quiet.
inline double WaitUntilQuiet(pid_t pid, double busy = 0.05,
                             std::chrono::milliseconds window = std::chrono::milliseconds(250),
                             std::chrono::seconds deadline = std::chrono::seconds(60)) {
  const auto start = std::chrono::steady_clock::now();
  int quiet = 0;
  double before = ProcessCpuSeconds(pid);
  while (quiet < 2) {
    if (std::chrono::steady_clock::now() - start > deadline) return -1;
    std::this_thread::sleep_for(window);
    const double now = ProcessCpuSeconds(pid);
    const double used = (now - before) / std::chrono::duration<double>(window).count();
    before = now;
    quiet = used < busy ? quiet + 1 : 0;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace pulsesync::bench

#endif  // PULSESYNC_BENCH_PROCESS_H_
