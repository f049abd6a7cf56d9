// Training curves: metrics.jsonl records drawn as SVG. Points are checked against positions worked
// out by hand from the values and the axis range they must get, read back through a small XML
// parser that also checks the document is well formed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"
#include "trainer/training_curves.h"

namespace ptrain {
namespace {

using ::ptrain::testing::fresh_dir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------- a small XML reader

struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::string text;
  std::vector<std::unique_ptr<Element>> children;

  bool has_class(const std::string& word) const {
    auto it = attributes.find("class");
    if (it == attributes.end()) return false;
    std::istringstream words(it->second);
    for (std::string w; words >> w;)
      if (w == word) return true;
    return false;
  }
  double number(const std::string& key) const { return std::stod(attributes.at(key)); }
};

// Parses a whole document; throws std::runtime_error where it is not well
// formed (an unclosed or mismatched tag, an unquoted attribute, a stray '<' or '&').
class XmlReader {
 public:
  explicit XmlReader(std::string text) : s_(std::move(text)) {}

  std::unique_ptr<Element> document() {
    skip_space();
    if (s_.compare(pos_, 5, "<?xml") == 0) pos_ = must_find("?>") + 2;
    skip_space();
    auto root = element();
    skip_space();
    if (pos_ != s_.size()) fail("content after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(what + " at offset " + std::to_string(pos_));
  }
  size_t must_find(const std::string& token) const {
    const size_t at = s_.find(token, pos_);
    if (at == std::string::npos) fail("missing '" + token + "'");
    return at;
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  std::string name() {
    const size_t begin = pos_;
    while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) ||
                                s_[pos_] == '-' || s_[pos_] == '_' || s_[pos_] == ':'))
      ++pos_;
    if (pos_ == begin) fail("expected a name");
    return s_.substr(begin, pos_ - begin);
  }
  void check_entities(const std::string& text) const {
    for (size_t i = text.find('&'); i != std::string::npos; i = text.find('&', i + 1)) {
      const size_t end = text.find(';', i);
      const std::string entity = end == std::string::npos ? "" : text.substr(i, end - i + 1);
      if (entity != "&amp;" && entity != "&lt;" && entity != "&gt;" && entity != "&quot;" &&
          entity != "&apos;" && entity.rfind("&#", 0) != 0)
        fail("a bare '&'");
    }
  }
  std::unique_ptr<Element> element() {
    if (s_[pos_] != '<') fail("expected '<'");
    ++pos_;
    auto e = std::make_unique<Element>();
    e->name = name();
    for (;;) {
      skip_space();
      if (s_.compare(pos_, 2, "/>") == 0) {
        pos_ += 2;
        return e;
      }
      if (s_[pos_] == '>') break;
      const std::string key = name();
      skip_space();
      if (s_[pos_] != '=') fail("expected '=' after " + key);
      ++pos_;
      skip_space();
      if (s_[pos_] != '"') fail("attribute " + key + " is not quoted");
      const size_t end = s_.find('"', pos_ + 1);
      if (end == std::string::npos) fail("unterminated attribute");
      const std::string value = s_.substr(pos_ + 1, end - pos_ - 1);
      if (value.find('<') != std::string::npos) fail("'<' in an attribute");
      check_entities(value);
      if (!e->attributes.emplace(key, value).second) fail("attribute " + key + " twice");
      pos_ = end + 1;
    }
    ++pos_;
    for (;;) {
      const size_t next = must_find("<");
      const std::string text = s_.substr(pos_, next - pos_);
      check_entities(text);
      e->text += text;
      pos_ = next;
      if (s_.compare(pos_, 2, "</") == 0) {
        pos_ += 2;
        if (name() != e->name) fail("mismatched end tag of <" + e->name + ">");
        skip_space();
        if (s_[pos_] != '>') fail("expected '>'");
        ++pos_;
        return e;
      }
      e->children.push_back(element());
    }
  }

  std::string s_;
  size_t pos_ = 0;
};

void collect(const Element& e, const std::string& name, const std::string& cls,
             std::vector<const Element*>& out) {
  if (e.name == name && (cls.empty() || e.has_class(cls))) out.push_back(&e);
  for (const auto& child : e.children) collect(*child, name, cls, out);
}

std::vector<const Element*> find_all(const Element& root, const std::string& name,
                                     const std::string& cls = "") {
  std::vector<const Element*> out;
  collect(root, name, cls, out);
  return out;
}

const Element& panel(const Element& svg, const std::string& id) {
  for (const Element* g : find_all(svg, "g", "panel"))
    if (g->attributes.at("id") == "panel-" + id) return *g;
  throw std::runtime_error("no panel " + id);
}

std::vector<std::pair<double, double>> polyline_points(const Element& polyline) {
  std::vector<std::pair<double, double>> out;
  std::istringstream in(polyline.attributes.at("points"));
  for (std::string pair; in >> pair;) {
    const size_t comma = pair.find(',');
    out.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  return out;
}

std::vector<std::string> tick_labels(const Element& g, const std::string& axis) {
  std::vector<std::string> out;
  for (const Element* t : find_all(g, "text", "tick-label"))
    if (t->has_class(axis)) out.push_back(t->text);
  return out;
}

// The plot area of a panel, and where a (step, value) must land given the axis ranges.
struct Area {
  double x, y, w, h;
  double x_lo, x_hi, y_lo, y_hi;
  double px(double step) const { return x + (step - x_lo) / (x_hi - x_lo) * w; }
  double py(double value) const { return y + h - (value - y_lo) / (y_hi - y_lo) * h; }
};

Area area(const Element& g, double x_lo, double x_hi, double y_lo, double y_hi) {
  const auto rects = find_all(g, "rect", "plot-area");
  EXPECT_EQ(rects.size(), 1u);
  const Element& r = *rects.at(0);
  return {r.number("x"), r.number("y"), r.number("width"), r.number("height"), x_lo, x_hi,
          y_lo,          y_hi};
}

std::unique_ptr<Element> parse_svg(const std::string& svg) {
  std::unique_ptr<Element> root = XmlReader(svg).document();
  EXPECT_EQ(root->name, "svg");
  EXPECT_EQ(root->attributes["xmlns"], "http://www.w3.org/2000/svg");
  EXPECT_EQ(root->attributes["viewBox"], "0 0 1000 720");
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);  // no external resources
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
  return root;
}

// ---------------------------------------------------------------- a short run, by hand

// Train loss 4, 3, (null), 2 at steps 1-4 and eval loss 4, 3.5, 2.5 at steps 0, 2, 4: the loss
// axis must be exactly [2, 4] (ticks 2, 2.5, ..., 4) and the step axis [0, 4]. lr runs 0 .. 2e-5
// (ticks every 5e-6); grad norm has a null at step 2.
const char* kRun =
    R"({"type": "start", "total_steps": 4, "first_step": 0, "steps_per_epoch": 4, "world": 2, "shard_size": 2, "gemm_peak_gflops": 100.0}
{"type": "eval", "step": 0, "eval_loss": 4.0, "eval_perplexity": 54.6, "eval_accuracy": 0.1, "eval_tokens": 50}
{"type": "step", "step": 1, "total_steps": 4, "epoch": 0, "loss": 4.0, "lr": 0.0, "grad_norm": 3.0, "tokens": 100, "tokens_per_s": 1000.0, "mfu": 0.1, "exposed_comm_s": 0.0, "exposed_comm_fraction": 0.0, "peak_rss_bytes": 1000, "step_s": 0.1, "skipped_steps": 0, "applied": true}
{"type": "step", "step": 2, "total_steps": 4, "epoch": 0, "loss": 3.0, "lr": 2e-05, "grad_norm": null, "tokens": 100, "tokens_per_s": 1200.0, "applied": true}

{"type": "eval", "step": 2, "eval_loss": 3.5, "eval_perplexity": 33.1, "eval_accuracy": 0.2, "eval_tokens": 50}
{"type": "step", "step": 3, "total_steps": 4, "epoch": 0, "loss": null, "lr": 1.5e-05, "grad_norm": null, "tokens": 100, "tokens_per_s": 1100.0, "applied": false}
{"type": "step", "step": 4, "total_steps": 4, "epoch": 0, "loss": 2.0, "lr": 1e-05, "grad_norm": 1.0, "tokens": 100, "tokens_per_s": 1300.0, "applied": true}
{"type": "eval", "step": 4, "eval_loss": 2.5, "eval_perplexity": 12.2, "eval_accuracy": 0.4, "eval_tokens": 50}
{"type": "end", "steps": 4, "seconds": 1.5, "reason": "finished"}
)";

TEST(TrainingCurves, FourPanelsWithTitlesAxesAndALegend) {
  const std::string svg = render_training_curves_svg(parse_metrics_jsonl(kRun, "metrics.jsonl"));
  auto root = parse_svg(svg);
  std::vector<std::string> titles;
  for (const Element* t : find_all(*root, "text", "panel-title")) titles.push_back(t->text);
  EXPECT_THAT(titles, ElementsAre("Loss", "Learning rate", "Gradient norm", "Throughput"));
  for (const char* id : {"loss", "lr", "grad-norm", "tokens-per-s"}) {
    const Element& g = panel(*root, id);
    EXPECT_THAT(tick_labels(g, "x"), ElementsAre("0", "1", "2", "3", "4")) << id;
    std::vector<std::string> axis_titles;
    for (const Element* t : find_all(g, "text", "axis-title")) axis_titles.push_back(t->text);
    ASSERT_EQ(axis_titles.size(), 2u) << id;
    EXPECT_EQ(axis_titles[0], "optimizer step");
  }
  EXPECT_THAT(tick_labels(panel(*root, "loss"), "y"), ElementsAre("2", "2.5", "3", "3.5", "4"));
  EXPECT_THAT(tick_labels(panel(*root, "lr"), "y"),
              ElementsAre("0", "5e-6", "1e-5", "1.5e-5", "2e-5"));
  std::vector<std::string> legend;
  for (const Element* t : find_all(panel(*root, "loss"), "text", "legend-label"))
    legend.push_back(t->text);
  EXPECT_THAT(legend, ElementsAre("train", "eval"));
}

TEST(TrainingCurves, PointsMapThroughTheAxisRanges) {
  auto root = parse_svg(render_training_curves_svg(parse_metrics_jsonl(kRun, "metrics.jsonl")));
  const Element& loss = panel(*root, "loss");
  const Area a = area(loss, 0, 4, 2, 4);
  const auto train = find_all(loss, "polyline", "train-loss");
  ASSERT_EQ(train.size(), 1u);
  const auto points = polyline_points(*train[0]);
  // The null loss of step 3 is left out: three points.
  const std::vector<std::pair<double, double>> expected = {{1, 4.0}, {2, 3.0}, {4, 2.0}};
  ASSERT_EQ(points.size(), expected.size());
  for (size_t i = 0; i < points.size(); ++i) {
    EXPECT_NEAR(points[i].first, a.px(expected[i].first), 0.01) << i;
    EXPECT_NEAR(points[i].second, a.py(expected[i].second), 0.01) << i;
  }
  // The lowest loss sits on the bottom edge of the plot area, the highest on the top edge.
  EXPECT_NEAR(points[2].second, a.y + a.h, 0.01);
  EXPECT_NEAR(points[2].first, a.x + a.w, 0.01);
  EXPECT_NEAR(points[0].second, a.y, 0.01);

  const auto evals = find_all(loss, "circle", "eval-loss");
  ASSERT_EQ(evals.size(), 3u);
  const std::vector<std::pair<double, double>> eval_expected = {{0, 4.0}, {2, 3.5}, {4, 2.5}};
  for (size_t i = 0; i < evals.size(); ++i) {
    EXPECT_NEAR(evals[i]->number("cx"), a.px(eval_expected[i].first), 0.01) << i;
    EXPECT_NEAR(evals[i]->number("cy"), a.py(eval_expected[i].second), 0.01) << i;
  }
  EXPECT_NE(evals[0]->attributes.at("fill"), train[0]->attributes.at("stroke"));
  ASSERT_EQ(find_all(loss, "polyline", "eval-loss").size(), 1u);
  EXPECT_EQ(polyline_points(*find_all(loss, "polyline", "eval-loss")[0]).size(), 3u);

  // lr 0, 2e-5, 1.5e-5, 1e-5 on [0, 2e-5].
  const Element& lr = panel(*root, "lr");
  const Area l = area(lr, 0, 4, 0, 2e-5);
  const auto lr_points = polyline_points(*find_all(lr, "polyline", "lr").at(0));
  ASSERT_EQ(lr_points.size(), 4u);
  const double lrs[] = {0, 2e-5, 1.5e-5, 1e-5};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(lr_points[i].first, l.px(static_cast<double>(i + 1)), 0.01) << i;
    EXPECT_NEAR(lr_points[i].second, l.py(lrs[i]), 0.01) << i;
  }
  // grad norm: nulls at steps 2 and 3 leave steps 1 and 4.
  const Element& grad = panel(*root, "grad-norm");
  const auto grad_points = polyline_points(*find_all(grad, "polyline", "grad-norm").at(0));
  ASSERT_EQ(grad_points.size(), 2u);
  const Area gn = area(grad, 0, 4, 1, 3);  // 1 .. 3: ticks every 0.5
  EXPECT_NEAR(grad_points[0].first, gn.px(1), 0.01);
  EXPECT_NEAR(grad_points[0].second, gn.py(3), 0.01);
  EXPECT_NEAR(grad_points[1].second, gn.py(1), 0.01);
  // tokens/s 1000 .. 1300: ticks every 100.
  const Element& speed = panel(*root, "tokens-per-s");
  EXPECT_THAT(tick_labels(speed, "y"), ElementsAre("1000", "1100", "1200", "1300"));
  const Area sp = area(speed, 0, 4, 1000, 1300);
  const auto speed_points = polyline_points(*find_all(speed, "polyline", "tokens-per-s").at(0));
  ASSERT_EQ(speed_points.size(), 4u);
  EXPECT_NEAR(speed_points[1].second, sp.py(1200), 0.01);
}

// ---------------------------------------------------------------- edge cases

TEST(TrainingCurves, OnePointIsAMarkerInsideThePlotArea) {
  auto root = parse_svg(render_training_curves_svg(parse_metrics_jsonl(
      R"({"type": "step", "step": 1, "loss": 2.0, "lr": 1e-05, "grad_norm": 0.5, "tokens_per_s": 800.0})",
      "m")));
  const Element& loss = panel(*root, "loss");
  EXPECT_TRUE(find_all(loss, "polyline", "train-loss").empty());
  const auto marks = find_all(loss, "circle", "train-loss");
  ASSERT_EQ(marks.size(), 1u);
  const Area a = area(loss, 0, 1, 0, 1);
  EXPECT_GT(marks[0]->number("cy"), a.y + 1);
  EXPECT_LT(marks[0]->number("cy"), a.y + a.h - 1);
  EXPECT_GE(marks[0]->number("cx"), a.x);
  EXPECT_LE(marks[0]->number("cx"), a.x + a.w);
  EXPECT_TRUE(find_all(loss, "circle", "eval-loss").empty());  // no eval records
  std::vector<std::string> legend;
  for (const Element* t : find_all(loss, "text", "legend-label")) legend.push_back(t->text);
  EXPECT_THAT(legend, ElementsAre("train"));
  // The constant lr of 1e-5 still gets distinct ticks around it.
  const auto lr_ticks = tick_labels(panel(*root, "lr"), "y");
  EXPECT_GE(lr_ticks.size(), 3u);
  EXPECT_THAT(lr_ticks, ::testing::Contains("1e-5"));
}

TEST(TrainingCurves, AConstantSeriesIsAFlatLineInsideThePlotArea) {
  std::string text;
  for (int step = 1; step <= 5; ++step)
    text += "{\"type\": \"step\", \"step\": " + std::to_string(step) +
            ", \"loss\": 1.5, \"lr\": 0.0002, \"grad_norm\": 0.0, \"tokens_per_s\": 5.0}\n";
  auto root = parse_svg(render_training_curves_svg(parse_metrics_jsonl(text, "m")));
  for (const char* id : {"loss", "lr", "grad-norm", "tokens-per-s"}) {
    const Element& g = panel(*root, id);
    const auto lines = find_all(g, "polyline", "series");
    ASSERT_EQ(lines.size(), 1u) << id;
    const auto points = polyline_points(*lines[0]);
    ASSERT_EQ(points.size(), 5u) << id;
    const Area a = area(g, 0, 1, 0, 1);
    for (const auto& p : points) {
      EXPECT_NEAR(p.second, points[0].second, 1e-9) << id;
      EXPECT_GT(p.second, a.y + 1) << id;
      EXPECT_LT(p.second, a.y + a.h - 1) << id;
    }
  }
}

TEST(TrainingCurves, NoRecordsDrawsEmptyPanels) {
  auto root = parse_svg(render_training_curves_svg(parse_metrics_jsonl("", "m")));
  EXPECT_EQ(find_all(*root, "text", "no-data").size(), 4u);
  EXPECT_TRUE(find_all(*root, "polyline").empty());
}

TEST(TrainingCurves, NiceAxes) {
  Axis a = nice_axis(0.13, 0.97, false);
  ASSERT_EQ(a.ticks.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(a.ticks[i], 0.2 * static_cast<double>(i), 1e-12);
  EXPECT_EQ(tick_label(a.ticks[3], a), "0.6");  // not 0.6000000000000001

  a = nice_axis(1, 6, true);
  EXPECT_THAT(a.ticks, ElementsAre(1, 2, 3, 4, 5, 6));
  a = nice_axis(0, 1000, true);
  EXPECT_THAT(a.ticks, ElementsAre(0, 200, 400, 600, 800, 1000));
  a = nice_axis(7, 7, true);  // one step: whole steps around it
  EXPECT_LT(a.lo, 7);
  EXPECT_GT(a.hi, 7);
  for (double t : a.ticks) EXPECT_EQ(t, std::round(t));

  a = nice_axis(0, 0, false);
  EXPECT_LT(a.lo, 0);
  EXPECT_GT(a.hi, 0);
  a = nice_axis(-3.5, -3.5, false);
  EXPECT_LT(a.lo, -3.5);
  EXPECT_GT(a.hi, -3.5);

  a = nice_axis(3e-5, 3e-4, false);
  EXPECT_EQ(tick_label(5e-5 * 2, a), "0.0001");  // %g: fixed down to 1e-4
  a = nice_axis(1e-6, 9e-6, false);
  EXPECT_EQ(tick_label(2e-6, a), "2e-6");
  a = nice_axis(10100, 13900, false);
  EXPECT_THAT(a.ticks, ElementsAre(10000, 11000, 12000, 13000, 14000));
  EXPECT_EQ(tick_label(12000, a), "12000");
  a = nice_axis(1.1e6, 1.4e6, false);
  EXPECT_EQ(tick_label(1.25e6, a), "1.25e6");
  a = nice_axis(2e10, 9e10, false);
  EXPECT_EQ(tick_label(4e10, a), "4e10");
  a = nice_axis(-0.3, 0.3, false);
  EXPECT_EQ(tick_label(a.ticks[a.ticks.size() / 2], a), "0");  // not -0 or 1e-17
}

// ---------------------------------------------------------------- reading metrics.jsonl

TEST(TrainingCurves, AResumedRunSupersedesTheStepsItRedid) {
  // Steps 1-6 (loss 6 .. 1), then a resume from step 3 that reached step 5 (loss 10, 11): the
  // first attempt's steps 4-6 and its eval at 6 are gone; step 2 logged twice keeps the last.
  const std::string text = R"({"type": "start", "first_step": 0}
{"type": "step", "step": 1, "loss": 6}
{"type": "step", "step": 2, "loss": 5}
{"type": "step", "step": 2, "loss": 5.5}
{"type": "step", "step": 3, "loss": 4}
{"type": "eval", "step": 3, "eval_loss": 4.5}
{"type": "step", "step": 4, "loss": 3}
{"type": "step", "step": 5, "loss": 2}
{"type": "step", "step": 6, "loss": 1}
{"type": "eval", "step": 6, "eval_loss": 1.5}
{"type": "start", "first_step": 3}
{"type": "step", "step": 4, "loss": 10}
{"type": "step", "step": 5, "loss": 11}
)";
  const TrainingCurves curves = parse_metrics_jsonl(text, "m");
  std::vector<int64_t> steps;
  std::vector<double> losses;
  for (const StepPoint& p : curves.steps) {
    steps.push_back(p.step);
    losses.push_back(p.loss);
  }
  EXPECT_THAT(steps, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(losses, ElementsAre(6, 5.5, 4, 10, 11));
  ASSERT_EQ(curves.evals.size(), 1u);
  EXPECT_EQ(curves.evals[0].step, 3);
  EXPECT_TRUE(std::isnan(curves.steps[0].lr));  // missing: no point

  auto root = parse_svg(render_training_curves_svg(curves));
  const auto lines = find_all(panel(*root, "loss"), "polyline", "train-loss");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(polyline_points(*lines[0]).size(), 5u);
  EXPECT_TRUE(find_all(panel(*root, "lr"), "polyline").empty());
}

std::string error_of(const std::string& text) {
  try {
    parse_metrics_jsonl(text, "run/metrics.jsonl");
  } catch (const UserError& e) {
    return e.what();
  }
  return "no error";
}

TEST(TrainingCurves, AMalformedLineIsAnErrorNamingFileAndLine) {
  const std::string good = "{\"type\": \"step\", \"step\": 1, \"loss\": 1}\n";
  EXPECT_THAT(error_of(good + "\n{\"type\": \"step\", \"step\": 2, \"loss\": NaN}\n"),
              AllOf(HasSubstr("run/metrics.jsonl:3"), HasSubstr("not valid JSON")));
  EXPECT_THAT(error_of(good + "{\"type\": \"step\", \"step\""), HasSubstr("run/metrics.jsonl:2"));
  EXPECT_THAT(error_of(good + "[1, 2]\n"),
              HasSubstr("run/metrics.jsonl:2: expected a JSON object"));
  EXPECT_THAT(error_of(good + good + "{\"type\": \"eval\", \"eval_loss\": 1}\n"),
              AllOf(HasSubstr("run/metrics.jsonl:3"), HasSubstr("\"step\"")));
  EXPECT_THAT(error_of("{\"type\": \"step\", \"step\": 1, \"loss\": \"low\"}\n"),
              AllOf(HasSubstr("run/metrics.jsonl:1"), HasSubstr("\"loss\"")));
  EXPECT_THAT(error_of("{\"type\": \"step\", \"step\": 1.5, \"loss\": 1}\n"),
              HasSubstr("run/metrics.jsonl:1"));
}

TEST(TrainingCurves, WritesTheSvgAtomicallyBesideMetrics) {
  const std::string dir = fresh_dir().string();
  std::ofstream(dir + "/metrics.jsonl") << kRun;
  EXPECT_EQ(write_training_curves(dir), dir + "/training_curves.svg");
  std::ifstream in(dir + "/training_curves.svg");
  std::stringstream svg;
  svg << in.rdbuf();
  auto root = parse_svg(svg.str());
  EXPECT_EQ(find_all(*root, "g", "panel").size(), 4u);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) ++files, (void)entry;
  EXPECT_EQ(files, 2);  // metrics.jsonl and the svg: no temporary left behind

  std::ofstream(dir + "/metrics.jsonl", std::ios::app) << "{oops\n";
  try {
    write_training_curves(dir);
    FAIL() << "a malformed line was accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr(dir + "/metrics.jsonl:11"));
  }
  const std::string missing = dir + "/nowhere";
  try {
    write_training_curves(missing);
    FAIL() << "a missing metrics.jsonl was accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing + "/metrics.jsonl"));
  }
  EXPECT_FALSE(std::filesystem::exists(missing));
}

}  // namespace
}  // namespace ptrain
