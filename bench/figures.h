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

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace pulsesync::bench {

// The median of `v` (the upper one of an even count; 0 when empty): what
// the benchmarks report of repeated measurements, so that one sample that
// met a checkpoint or a neighbour's burst does not stand for all.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

inline void PrintFigure(const std::string& name, double value, const std::string& unit,
                        double ceiling, const std::string& goal) {
  std::printf("FIGURE\t%s\t%.6g\t%s\t%.6g\t%s\n", name.c_str(), value, unit.c_str(), ceiling,
              goal.c_str());
  std::fflush(stdout);
}

// Growth figures (issue 7): the same work at a size of data and at 10x it.
// Each prints a line and a FIGURE whose value is the cost at the larger
// size and whose "ceiling" is the cost at the smaller one, so that the
// table's ratio is the growth (1 = none); Worst adds the largest ratio as a
// figure of its own, against the goal.
class GrowthFigures {
 public:
  void Add(const std::string& what, double small_ms, const std::string& small_size,
           double big_ms, const std::string& big_size) {
    const double ratio = small_ms > 0 ? big_ms / small_ms : 0;
    std::printf("  %-52s %9.2f ms at %-12s %9.2f ms at %-12s x%.2f\n", what.c_str(), small_ms,
                small_size.c_str(), big_ms, big_size.c_str(), ratio);
    PrintFigure("growth: " + what + " at " + big_size + " (vs at " + small_size + ")", big_ms,
                "ms", small_ms, "");
    worst_ = std::max(worst_, ratio);
  }
  void Worst(const std::string& name) const {
    std::printf("  worst growth x%.2f (1 = none: the cost follows the changes, not the data)\n",
                worst_);
    PrintFigure(name, worst_, "x", 0, "<=1.5");
  }

 private:
  double worst_ = 0;
};

}  // namespace pulsesync::bench

#endif  // PULSESYNC_BENCH_FIGURES_H_
