// The headline figures of a benchmark, one machine-readable line each, for
// bench/run.sh's table (beside each benchmark's own human-readable output):
//
//   FIGURE<TAB>name<TAB>value<TAB>unit<TAB>ceiling<TAB>goal
//
// `ceiling`: the same work done by raw PostgreSQL or raw SQLite in the same
// run, in the same unit (0 = none measured). `goal`: issue 7's target as
// ">=N" or "<=N" in the same unit ("" = none). Never asserted.
#ifndef PULSESYNC_BENCH_FIGURES_H_
#define PULSESYNC_BENCH_FIGURES_H_

#include <cstdio>
#include <string>

namespace pulsesync::bench {

inline void PrintFigure(const std::string& name, double value, const std::string& unit,
                        double ceiling, const std::string& goal) {
  std::printf("FIGURE\t%s\t%.6g\t%s\t%.6g\t%s\n", name.c_str(), value, unit.c_str(), ceiling,
              goal.c_str());
  std::fflush(stdout);
}

}  // namespace pulsesync::bench

#endif  // PULSESYNC_BENCH_FIGURES_H_
