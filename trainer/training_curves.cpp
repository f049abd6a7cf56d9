#include "trainer/training_curves.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "core/file_util.h"

namespace ptrain {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- reading metrics.jsonl

// "ORIGIN:LINE", the place every message about a record names.
struct Place {
  const std::string& origin;
  int64_t line;
};

double value_of(const nlohmann::json& record, const char* key, const Place& at) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return kNaN;
  PTRAIN_CHECK(it->is_number(), "{}:{}: \"{}\" must be a number or null, got {}", at.origin,
               at.line, key, it->dump());
  return it->get<double>();
}

int64_t step_of(const nlohmann::json& record, const char* key, const Place& at) {
  const auto it = record.find(key);
  PTRAIN_CHECK(it != record.end() && it->is_number_integer(),
               "{}:{}: a \"{}\" record needs an integer \"{}\"", at.origin, at.line,
               record["type"].get<std::string>(), key);
  return it->get<int64_t>();
}

nlohmann::json parse_record(const std::string& line, const Place& at) {
  std::string error;
  nlohmann::json record;
  try {
    record = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    error = e.what();
  }
  PTRAIN_CHECK(error.empty(), "{}:{}: not valid JSON: {}", at.origin, at.line, error);
  PTRAIN_CHECK(record.is_object() && record.contains("type") && record["type"].is_string(),
               "{}:{}: expected a JSON object with a \"type\" (a metrics.jsonl record)", at.origin,
               at.line);
  return record;
}

// ---------------------------------------------------------------- drawing

// The document: a 2x2 grid of panels, each with its plot area inside these margins.
constexpr double kPanelWidth = 500, kPanelHeight = 360;
constexpr double kLeft = 78, kRight = 24, kTop = 34, kBottom = 50;
// Values whose magnitude lies outside [kSmallest, kLargest] (zero aside) would overflow or
// underflow an axis's arithmetic; they are left out like NaN.
constexpr double kLargest = 1e280, kSmallest = 1e-280;

bool drawable(double value) {
  const double magnitude = std::abs(value);
  return std::isfinite(value) && magnitude <= kLargest && (value == 0 || magnitude >= kSmallest);
}

struct Series {
  const char* name;    // legend text
  const char* kind;    // the class of its elements
  const char* colour;  // stroke and fill
  bool markers;        // a circle at every point (else only when there is a single point)
  std::vector<std::pair<double, double>> points;  // (step, value), drawable values only
};

struct Panel {
  const char* id;
  const char* title;
  const char* y_title;
  bool legend;
  std::vector<Series> series;
};

// Maps data coordinates into a panel's plot area.
struct Frame {
  double x, y, width, height;  // the plot area
  Axis horizontal, vertical;

  double px(double step) const {
    return x + (step - horizontal.lo) / (horizontal.hi - horizontal.lo) * width;
  }
  double py(double value) const {
    return y + height - (value - vertical.lo) / (vertical.hi - vertical.lo) * height;
  }
};

std::string tidy_exponent(std::string text) {
  const size_t e = text.find('e');
  if (e == std::string::npos) return text;
  std::string digits = text.substr(e + 2);
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
  return text.substr(0, e + 1) + (text[e + 1] == '-' ? "-" : "") + digits;
}

void draw_axes(std::string& out, const Frame& f) {
  out += fmt::format(
      "<rect class=\"plot-area\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" height=\"{:.2f}\" "
      "fill=\"#ffffff\" stroke=\"#444444\"/>\n",
      f.x, f.y, f.width, f.height);
  for (double t : f.horizontal.ticks) {
    const double x = f.px(t);
    out += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{2:.2f}\" stroke=\"#e4e4e4\"/>\n"
        "<line x1=\"{0:.2f}\" y1=\"{2:.2f}\" x2=\"{0:.2f}\" y2=\"{3:.2f}\" stroke=\"#444444\"/>\n"
        "<text class=\"tick-label x\" x=\"{0:.2f}\" y=\"{4:.2f}\" "
        "text-anchor=\"middle\">{5}</text>\n",
        x, f.y, f.y + f.height, f.y + f.height + 5, f.y + f.height + 18,
        tick_label(t, f.horizontal));
  }
  for (double t : f.vertical.ticks) {
    const double y = f.py(t);
    out += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{2:.2f}\" y2=\"{1:.2f}\" stroke=\"#e4e4e4\"/>\n"
        "<line x1=\"{3:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{1:.2f}\" stroke=\"#444444\"/>\n"
        "<text class=\"tick-label y\" x=\"{4:.2f}\" y=\"{5:.2f}\" "
        "text-anchor=\"end\">{6}</text>\n",
        f.x, y, f.x + f.width, f.x - 5, f.x - 8, y + 4, tick_label(t, f.vertical));
  }
}

void draw_series(std::string& out, const Frame& f, const Series& s) {
  if (s.points.size() >= 2) {
    std::string points;
    for (const auto& [step, value] : s.points)
      points += fmt::format("{}{:.2f},{:.2f}", points.empty() ? "" : " ", f.px(step), f.py(value));
    out += fmt::format(
        "<polyline class=\"series {}\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"1.5\" stroke-linejoin=\"round\"/>\n",
        s.kind, points, s.colour);
  }
  if (!s.markers && s.points.size() != 1) return;
  for (const auto& [step, value] : s.points)
    out += fmt::format(
        "<circle class=\"point {}\" cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", s.kind,
        f.px(step), f.py(value), s.colour);
}

void draw_legend(std::string& out, const Frame& f, const std::vector<Series>& series) {
  const double x = f.x + f.width - 90, y = f.y + 8;
  out += fmt::format(
      "<rect class=\"legend\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"82\" height=\"{:.2f}\" "
      "fill=\"#ffffff\" fill-opacity=\"0.85\" stroke=\"#bbbbbb\"/>\n",
      x, y, 8 + 18.0 * static_cast<double>(series.size()));
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const double row = y + 16 + 18.0 * static_cast<double>(i);
    out += fmt::format(
        "<line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"{}\" "
        "stroke-width=\"2\"/>\n",
        x + 8, row - 4, x + 30, row - 4, s.colour);
    if (s.markers)
      out += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", x + 19,
                         row - 4, s.colour);
    out += fmt::format("<text class=\"legend-label\" x=\"{:.2f}\" y=\"{:.2f}\">{}</text>\n", x + 36,
                       row, s.name);
  }
}

void draw_panel(std::string& out, const Panel& panel, const Axis& steps, double left, double top) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const Series& s : panel.series)
    for (const auto& point : s.points) {
      lo = std::min(lo, point.second);
      hi = std::max(hi, point.second);
    }
  const bool empty = lo > hi;
  const Frame f{left + kLeft,
                top + kTop,
                kPanelWidth - kLeft - kRight,
                kPanelHeight - kTop - kBottom,
                steps,
                empty ? nice_axis(0, 1, false) : nice_axis(lo, hi, false)};
  out += fmt::format("<g class=\"panel\" id=\"panel-{}\">\n", panel.id);
  out += fmt::format(
      "<text class=\"panel-title\" x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\" "
      "font-size=\"15\" font-weight=\"bold\">{}</text>\n",
      f.x + f.width / 2, top + 22, panel.title);
  draw_axes(out, f);
  out += fmt::format(
      "<text class=\"axis-title x\" x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\">optimizer "
      "step</text>\n",
      f.x + f.width / 2, f.y + f.height + 38);
  const double title_x = left + 16, title_y = f.y + f.height / 2;
  out += fmt::format(
      "<text class=\"axis-title y\" x=\"{0:.2f}\" y=\"{1:.2f}\" text-anchor=\"middle\" "
      "transform=\"rotate(-90 {0:.2f} {1:.2f})\">{2}</text>\n",
      title_x, title_y, panel.y_title);
  if (empty)
    out += fmt::format(
        "<text class=\"no-data\" x=\"{:.2f}\" y=\"{:.2f}\" text-anchor=\"middle\" "
        "fill=\"#888888\">no data</text>\n",
        f.x + f.width / 2, f.y + f.height / 2);
  for (const Series& s : panel.series) draw_series(out, f, s);
  if (panel.legend) draw_legend(out, f, panel.series);
  out += "</g>\n";
}

}  // namespace

// ---------------------------------------------------------------- parsing

TrainingCurves parse_metrics_jsonl(const std::string& text, const std::string& origin) {
  std::map<int64_t, StepPoint> steps;
  std::map<int64_t, EvalPoint> evals;
  int64_t number = 1;
  for (size_t begin = 0; begin < text.size(); ++number) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Place at{origin, number};
    const nlohmann::json record = parse_record(line, at);
    const std::string type = record["type"].get<std::string>();
    if (type == "start") {
      // A resumed run continues after step F: what the earlier attempt logged past F never
      // happened in the run that survived.
      const int64_t first = record.contains("first_step") ? step_of(record, "first_step", at) : 0;
      steps.erase(steps.upper_bound(first), steps.end());
      evals.erase(evals.upper_bound(first), evals.end());
    } else if (type == "step") {
      const int64_t step = step_of(record, "step", at);
      steps[step] =
          StepPoint{step, value_of(record, "loss", at), value_of(record, "lr", at),
                    value_of(record, "grad_norm", at), value_of(record, "tokens_per_s", at)};
    } else if (type == "eval") {
      const int64_t step = step_of(record, "step", at);
      evals[step] = EvalPoint{step, value_of(record, "eval_loss", at)};
    }
  }
  TrainingCurves curves;
  for (const auto& entry : steps) curves.steps.push_back(entry.second);
  for (const auto& entry : evals) curves.evals.push_back(entry.second);
  return curves;
}

// ---------------------------------------------------------------- axes

Axis nice_axis(double min, double max, bool whole) {
  PTRAIN_ASSERT(drawable(min) && drawable(max) && min <= max, "an axis over [{}, {}]", min, max);
  const double span = max - min;
  if (span <= 1e-9 * std::max(std::abs(min), std::abs(max)) || span < kSmallest) {
    const double pad = whole || min == 0 ? 1 : 0.1 * std::abs(min);
    max = min + pad;
    min = whole && min >= 0 ? std::max(0.0, min - pad) : min - pad;
  }
  // About five ticks: the step is the 1, 2 or 5 times 10^exponent nearest a quarter of the range,
  // at least 1 for whole numbers.
  const double raw = (max - min) / 4;
  int exponent = static_cast<int>(std::floor(std::log10(raw)));
  const double fraction = raw / std::pow(10.0, exponent);
  int mantissa = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  if (mantissa == 10) mantissa = 1, ++exponent;
  if (whole && exponent < 0) mantissa = 1, exponent = 0;
  // i * mantissa / 10^k rather than i * step: the ticks come out as the decimals they print as.
  auto tick = [&](double i) {
    return exponent >= 0 ? i * mantissa * std::pow(10.0, exponent)
                         : i * mantissa / std::pow(10.0, -exponent);
  };
  const double step = tick(1);
  const double first = std::floor(min / step + 1e-9), last = std::ceil(max / step - 1e-9);
  Axis axis;
  axis.step = step;
  for (double i = first; i <= last; ++i) axis.ticks.push_back(tick(i));
  PTRAIN_ASSERT(axis.ticks.size() >= 2 && axis.ticks.size() <= 12, "{} ticks over [{}, {}]",
                axis.ticks.size(), min, max);
  axis.lo = axis.ticks.front();
  axis.hi = axis.ticks.back();
  return axis;
}

std::string tick_label(double value, const Axis& axis) {
  if (std::abs(value) < 1e-6 * axis.step) value = 0;  // no "-0", no 1e-17 for zero
  // Steps of 1 or more are whole numbers: printed in full below a million ("12000", not "1.2e4"),
  // short enough to stay clear of the axis title.
  if (axis.step >= 1 && std::abs(value) < 1e6) return fmt::format("{:.0f}", value);
  const double largest = std::max(std::abs(axis.lo), std::abs(axis.hi));
  const int needed = static_cast<int>(std::floor(std::log10(largest) + 1e-9) -
                                      std::floor(std::log10(axis.step) + 1e-9)) +
                     1;
  return tidy_exponent(fmt::format("{:.{}g}", value, std::clamp(needed, 6, 15)));
}

// ---------------------------------------------------------------- the document

std::string render_training_curves_svg(const TrainingCurves& curves) {
  Panel loss{"loss", "Loss", "loss", true, {}};
  Panel lr{"lr", "Learning rate", "learning rate", false, {}};
  Panel grad{"grad-norm", "Gradient norm", "gradient norm", false, {}};
  Panel speed{"tokens-per-s", "Throughput", "tokens/s", false, {}};
  Series train_loss{"train", "train-loss", "#1f77b4", false, {}};
  Series eval_loss{"eval", "eval-loss", "#d62728", true, {}};
  Series rate{"lr", "lr", "#2ca02c", false, {}};
  Series norm{"grad norm", "grad-norm", "#9467bd", false, {}};
  Series tokens{"tokens/s", "tokens-per-s", "#ff7f0e", false, {}};
  double first = std::numeric_limits<double>::infinity(), last = -first;
  auto add = [&](Series& s, int64_t step, double value) {
    if (drawable(value)) s.points.emplace_back(static_cast<double>(step), value);
  };
  for (const StepPoint& p : curves.steps) {
    add(train_loss, p.step, p.loss);
    add(rate, p.step, p.lr);
    add(norm, p.step, p.grad_norm);
    add(tokens, p.step, p.tokens_per_s);
    first = std::min(first, static_cast<double>(p.step));
    last = std::max(last, static_cast<double>(p.step));
  }
  for (const EvalPoint& p : curves.evals) {
    add(eval_loss, p.step, p.loss);
    first = std::min(first, static_cast<double>(p.step));
    last = std::max(last, static_cast<double>(p.step));
  }
  loss.series.push_back(std::move(train_loss));
  if (!curves.evals.empty()) loss.series.push_back(std::move(eval_loss));
  lr.series.push_back(std::move(rate));
  grad.series.push_back(std::move(norm));
  speed.series.push_back(std::move(tokens));
  // One step axis for every panel, so the panels line up.
  const Axis steps = first > last ? nice_axis(0, 1, true) : nice_axis(first, last, true);

  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#222222\">\n"
      "<title>Training curves</title>\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n",
      2 * kPanelWidth, 2 * kPanelHeight);
  draw_panel(out, loss, steps, 0, 0);
  draw_panel(out, lr, steps, kPanelWidth, 0);
  draw_panel(out, grad, steps, 0, kPanelHeight);
  draw_panel(out, speed, steps, kPanelWidth, kPanelHeight);
  out += "</svg>\n";
  return out;
}

std::string write_training_curves(const std::string& output_dir) {
  namespace fs = std::filesystem;
  const std::string metrics = (fs::path(output_dir) / "metrics.jsonl").string();
  std::error_code ec;
  PTRAIN_CHECK(fs::exists(metrics, ec),
               "no metrics to plot: '{}' does not exist ('{}' is not the output_dir of a "
               "training run, or its run has not reached training)",
               metrics, output_dir);
  const TrainingCurves curves = parse_metrics_jsonl(read_text_file(metrics), metrics);
  const std::string svg = (fs::path(output_dir) / "training_curves.svg").string();
  write_file_atomic(svg, render_training_curves_svg(curves));
  return svg;
}

}  // namespace ptrain
