// Training curves: the run's metrics.jsonl (metrics_log.h) drawn as one SVG, four panels in a 2x2
// grid against the optimizer step: loss (train line, eval points joined by a line), learning rate,
// gradient norm and tokens per second. Plain SVG 1.1 with a viewBox: no scripts, no external
// resources, so any browser shows it from disk.
//
// Reading metrics.jsonl: "step" and "eval" lines are the points; a "start" line whose first_step
// is F > 0 (a resumed run) drops the earlier records after step F, and a later record of a step
// replaces an earlier one, so every step shows its latest value from the run that survived.
// Values written as null (nlohmann writes a non-finite double as null) or missing leave that point
// out of its panel. "end" lines and lines of other types are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ptrain {

// One "step" line. NaN where the line held null or no value.
struct StepPoint {
  int64_t step = 0;  // optimizer steps completed (1 after the first)
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0;
};

// One "eval" line. NaN where the line held null or no value.
struct EvalPoint {
  int64_t step = 0;  // optimizer steps completed when it ran (0: before the first)
  double loss = 0;
};

// What the curves draw: the latest record per step, in step order.
struct TrainingCurves {
  std::vector<StepPoint> steps;
  std::vector<EvalPoint> evals;
};

// An axis over [lo, hi] with its tick values: lo and hi are ticks, `step` apart.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> ticks;
};

// The text of metrics.jsonl, parsed. UserError "ORIGIN:LINE: ..." for a line that is not a JSON
// object with a "type", or a step/eval line whose "step" is not an integer or whose value is
// neither a number nor null. Blank lines are skipped.
TrainingCurves parse_metrics_jsonl(const std::string& text, const std::string& origin);

// A loose axis of "nice" ticks (1, 2 or 5 times a power of ten, about five of them) covering
// [min, max]; a zero range (one point, a constant series) is widened around the value.
// `whole`: ticks are integers (optimizer steps).
Axis nice_axis(double min, double max, bool whole);

// A tick's label, %g-style with as many significant digits as the axis's step needs ("0.5",
// "1e-5", "1.25e6"); whole numbers below a million in full ("12000").
std::string tick_label(double value, const Axis& axis);

// The SVG document (a pure function of `curves`).
std::string render_training_curves_svg(const TrainingCurves& curves);

// Reads <output_dir>/metrics.jsonl and writes <output_dir>/training_curves.svg atomically;
// returns the path written. UserError naming the file when metrics.jsonl is missing or has a
// malformed line.
std::string write_training_curves(const std::string& output_dir);

}  // namespace ptrain
