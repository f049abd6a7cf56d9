// Unit tests for what ptrain-status prints and what the coordinator serves at /metrics. Every
// expected bar, sparkline and duration below is worked out by hand from the documented rules
// (cluster/status_format.h); the JSON is read back by nlohmann::json and the Prometheus text by a
// small parser of the exposition grammar written here, independent of cluster/prometheus_text.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/prometheus_text.h"
#include "cluster/status_format.h"

namespace ptrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ------------------------------------------------------------------------------ fixtures

constexpr double kNow = 1'700'000'000;

v1::RankHealth* add_rank(v1::JobStatus& status, int rank, const std::string& host, bool lost) {
  v1::RankHealth* r = status.add_ranks();
  r->set_rank(rank);
  r->set_host(host);
  r->set_pid(1000 + rank);
  r->set_step(lost ? 48 : 50);
  r->set_heartbeat_age_s(lost ? 75 : 0.4);
  r->set_rss_bytes(int64_t{3} << 30);
  r->set_lost(lost);
  return r;
}

// Step 50 of 200 on 5 ranks, rank 3 lost, in its second attempt.
v1::JobStatus sample_status() {
  v1::JobStatus s;
  s.set_job_id("demo-sft");
  s.set_state(v1::RUNNING);
  s.set_step(50);
  s.set_total_steps(200);
  s.set_epoch(1);
  s.set_loss(2.5);
  s.set_eval_loss(NAN);
  s.set_learning_rate(3e-4);
  s.set_tokens_per_second(12345.6);
  s.set_mfu(0.412);
  s.set_eta_s(3720);
  s.set_world(5);
  s.set_lost_ranks(1);
  s.set_now_unix_s(kNow);
  s.set_updated_unix_s(kNow - 2);
  for (int rank = 0; rank < 5; ++rank) add_rank(s, rank, "node-" + std::to_string(rank), rank == 3);
  v1::Attempt* first = s.add_attempts();
  first->set_number(1);
  first->set_started_unix_s(kNow - 7200);
  first->set_ended_unix_s(kNow - 3600);
  first->set_end_reason("failed");
  first->set_end_message("rank 2 lost");
  first->set_last_step(30);
  v1::Attempt* second = s.add_attempts();
  second->set_number(2);
  second->set_started_unix_s(kNow - 3000);
  second->set_first_step(30);
  v1::Checkpoint* checkpoint = s.mutable_last_checkpoint();
  checkpoint->set_step(40);
  checkpoint->set_dir("/ckpt/step-40");
  checkpoint->set_committed_unix_s(kNow - 125);
  v1::Event* event = s.add_recent_events();
  event->set_unix_s(kNow - 60);
  event->set_severity("warning");
  event->set_kind("rank_lost");
  event->set_rank(3);
  event->set_message("rank 3 (node-3) sent no heartbeat for 60 s");
  v1::Command* command = s.add_pending_commands();
  command->set_id(7);
  command->set_kind(v1::Command::CHECKPOINT);
  command->set_reason("before the holiday");
  command->set_requested_unix_s(kNow - 12);
  return s;
}

std::vector<v1::MetricPoint> history_of(const std::vector<double>& losses) {
  std::vector<v1::MetricPoint> points;
  for (size_t i = 0; i < losses.size(); ++i) {
    v1::MetricPoint p;
    p.set_step(static_cast<int64_t>(i + 1) * 10);
    p.set_loss(losses[i]);
    points.push_back(p);
  }
  return points;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Code points: every character the table uses is one column wide.
size_t columns(const std::string& line) {
  size_t n = 0;
  for (char c : line) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::string repeat(const std::string& piece, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += piece;
  return out;
}

// ------------------------------------------------------------------------- small values

TEST(StatusFormat, DurationsReadAsUnits) {
  EXPECT_EQ(format_duration(0.42), "0.4s");
  EXPECT_EQ(format_duration(9.96), "10s");
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(187), "3m07s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(2 * 86400 + 3 * 3600 + 59), "2d03h");
  EXPECT_EQ(format_duration(NAN), "—");
  EXPECT_EQ(format_duration(INFINITY), "—");
  EXPECT_EQ(format_duration(-1), "—");
}

TEST(StatusFormat, BytesInBinaryUnits) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(int64_t{3} << 30), "3.0 GiB");
  EXPECT_EQ(format_bytes((int64_t{1} << 20) - 1), "1.0 MiB");
}

TEST(StatusFormat, ProgressBarFillsEighthsOfCells) {
  // 0.25 of 20 cells: 5 full cells. 0.26 of 20 cells: 41.6 eighths, so 5 full and 1/8 ("▏").
  EXPECT_EQ(progress_bar(0.25, 20), repeat("█", 5) + std::string(15, ' '));
  EXPECT_EQ(progress_bar(0.26, 20), repeat("█", 5) + "▏" + std::string(14, ' '));
  EXPECT_EQ(progress_bar(0.5625, 4), repeat("█", 2) + "▎" + " ");  // 18 eighths of 32
  EXPECT_EQ(progress_bar(1.5, 4), repeat("█", 4));
  EXPECT_EQ(progress_bar(NAN, 4), "    ");
}

TEST(StatusFormat, SparklineLevelsByHand) {
  // lo 1, hi 4: 4 -> 7, 3 -> 2/3*7 = 4.67 -> 5, 2 -> 2.33 -> 2, 1 -> 0, 1.5 -> 1.17 -> 1.
  EXPECT_EQ(sparkline({4, 3, 2, 1, 1.5}, 10), "█▆▃▁▂");
  // Eight values into four cells: means 9, 5, (none), 1; lo 1, hi 9: 7, 3.5 -> 4, space, 0.
  EXPECT_EQ(sparkline({10, 8, 6, 4, NAN, INFINITY, 0, 2}, 4), "█▅ ▁");
  EXPECT_EQ(sparkline({2, 2, 2}, 8), "▄▄▄");
  EXPECT_EQ(sparkline({NAN, NAN}, 8), "  ");
  EXPECT_EQ(sparkline({}, 8), "");
}

// --------------------------------------------------------------------------------- table

TEST(StatusFormat, TableShowsTheJob) {
  const std::string table =
      format_status_table(sample_status(), history_of({4, 3, 2, 1, 1.5}), StatusFormatOptions{});
  // At width 100 the bar has 40 cells: step 50 of 200 fills 10 of them.
  EXPECT_THAT(table,
              HasSubstr("50 / 200   |" + repeat("█", 10) + std::string(30, ' ') + "|  25.0%"));
  EXPECT_THAT(table, HasSubstr("epoch 1"));
  EXPECT_THAT(table, HasSubstr("2.5000     █▆▃▁▂   eval —"));
  EXPECT_THAT(table, HasSubstr("12,346 tok/s   MFU 41.2%   lr 3.00e-04   ETA 1h02m"));
  EXPECT_THAT(table, HasSubstr("RUNNING   attempt 2   world 5"));
  EXPECT_THAT(table, HasSubstr("updated 2.0s ago"));
  EXPECT_THAT(table, HasSubstr("step 40   2m05s ago   /ckpt/step-40"));
  EXPECT_THAT(table, HasSubstr("failed: rank 2 lost"));
  EXPECT_THAT(table, HasSubstr("1m00s ago  warning  rank_lost"));
  EXPECT_THAT(table, HasSubstr("rank_lost             rank 3 (node-3) sent no heartbeat for 60 s"));
  EXPECT_THAT(table, HasSubstr("#7    CHECKPOINT  requested 12s ago   before the holiday"));
  EXPECT_THAT(table, HasSubstr("3.0 GiB"));
  EXPECT_THAT(table, Not(HasSubstr("\x1b[")));
}

TEST(StatusFormat, LostRanksFirstThenNMore) {
  StatusFormatOptions options;
  options.max_ranks = 3;
  const std::vector<std::string> lines =
      lines_of(format_status_table(sample_status(), {}, options));
  // Rank rows: the rank, the LOST marker or blanks, the host.
  std::vector<std::string> rows;
  for (const std::string& line : lines) {
    std::smatch m;
    if (std::regex_search(line, m, std::regex("^ +([0-9]+)  (LOST|    )  (node-[0-9]+) ")))
      rows.push_back(m[1].str() + " " + m[2].str() + " " + m[3].str());
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"3 LOST node-3", "0      node-0", "1      node-1"}));
  EXPECT_THAT(lines, ::testing::Contains("  ... 2 more"));
}

TEST(StatusFormat, EveryLineFitsTheWidth) {
  v1::JobStatus status = sample_status();
  status.mutable_recent_events(0)->set_message(std::string(300, 'x'));
  status.mutable_last_checkpoint()->set_dir("/" + std::string(200, 'd'));
  std::vector<double> losses;
  for (int i = 0; i < 500; ++i) losses.push_back(std::exp(-i / 100.0));
  for (bool color : {false, true}) {
    for (int width : {60, 80, 137}) {
      StatusFormatOptions options;
      options.width = width;
      options.color = color;
      const std::string table = format_status_table(status, history_of(losses), options);
      for (const std::string& line : lines_of(table)) {
        // Colour sequences take no column: strip them before counting.
        const std::string plain = std::regex_replace(line, std::regex("\x1b\\[[0-9;]*m"), "");
        EXPECT_LE(columns(plain), static_cast<size_t>(width)) << plain;
      }
      EXPECT_EQ(table.find("\x1b[") != std::string::npos, color);
    }
  }
}

TEST(StatusFormat, UnknownValuesShowADash) {
  v1::JobStatus status = sample_status();
  status.set_total_steps(0);
  status.set_eta_s(NAN);
  status.set_loss(NAN);
  status.clear_last_checkpoint();
  const std::string table = format_status_table(status, history_of({NAN, NAN}), {});
  EXPECT_THAT(table, HasSubstr("50 / ?"));
  EXPECT_THAT(table, HasSubstr("ETA —"));
  EXPECT_THAT(table, HasSubstr("nan"));
  EXPECT_THAT(table, HasSubstr("none yet"));
}

// ---------------------------------------------------------------------------------- JSON

TEST(StatusJson, OneLineThatParses) {
  v1::JobStatus status = sample_status();
  status.set_eta_s(INFINITY);
  const std::string text = status_json(status);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  const nlohmann::json json = nlohmann::json::parse(text);  // throws on invalid JSON (bare NaN)
  EXPECT_EQ(json["job_id"], "demo-sft");
  EXPECT_EQ(json["state"], "RUNNING");
  EXPECT_EQ(json["step"], "50");  // int64 is a string in protobuf's JSON mapping
  EXPECT_EQ(json["world"], 5);
  EXPECT_EQ(json["eval_loss"], "NaN");
  EXPECT_EQ(json["eta_s"], "Infinity");
  EXPECT_DOUBLE_EQ(json["learning_rate"].get<double>(), 3e-4);
  ASSERT_EQ(json["ranks"].size(), 5u);
  EXPECT_EQ(json["ranks"][3]["lost"], true);
  EXPECT_EQ(json["ranks"][3]["host"], "node-3");
  EXPECT_EQ(json["last_checkpoint"]["dir"], "/ckpt/step-40");
  EXPECT_EQ(json["attempts"][1]["ended_unix_s"], 0);  // zeros are printed too
  EXPECT_EQ(json["pending_commands"][0]["kind"], "CHECKPOINT");
}

// ---------------------------------------------------------------------------- Prometheus

struct Series {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

// One sample line of the exposition format: name{label="value",...} value. Label values are
// unescaped (\\, \", \n); any other escape, an unquoted value or trailing text is a failure.
bool parse_sample(const std::string& line, Series& out, std::string& error) {
  static const std::regex kName("^[a-zA-Z_:][a-zA-Z0-9_:]*");
  std::smatch m;
  if (!std::regex_search(line, m, kName)) return error = "no metric name", false;
  out.name = m[0];
  size_t i = out.name.size();
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const size_t eq = line.find('=', i);
      if (eq == std::string::npos) return error = "label without '='", false;
      const std::string key = line.substr(i, eq - i);
      if (!std::regex_match(key, std::regex("[a-zA-Z_][a-zA-Z0-9_]*")))
        return error = "bad label name '" + key + "'", false;
      i = eq + 1;
      if (i >= line.size() || line[i] != '"') return error = "unquoted label value", false;
      std::string value;
      for (++i; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\n') return error = "raw newline", false;
        if (line[i] != '\\') {
          value += line[i];
          continue;
        }
        if (++i >= line.size()) return error = "dangling backslash", false;
        if (line[i] == 'n') {
          value += '\n';
        } else if (line[i] == '\\' || line[i] == '"') {
          value += line[i];
        } else {
          return error = "bad escape", false;
        }
      }
      if (i >= line.size()) return error = "unterminated label value", false;
      ++i;
      if (!out.labels.emplace(key, value).second) return error = "repeated label " + key, false;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return error = "unterminated label set", false;
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') return error = "no space before the value", false;
  out.value = line.substr(i + 1);
  if (out.value == "NaN" || out.value == "+Inf" || out.value == "-Inf") return true;
  char* end = nullptr;
  std::strtod(out.value.c_str(), &end);
  if (out.value.empty() || *end != '\0') return error = "bad value '" + out.value + "'", false;
  return true;
}

// The whole text: every line a HELP, a TYPE or a sample; HELP and TYPE once per metric, before
// its samples, its samples together; no series twice. Answers the samples.
std::vector<Series> parse_exposition(const std::string& text) {
  EXPECT_TRUE(!text.empty() && text.back() == '\n');
  std::map<std::string, std::string> types;
  std::set<std::string> helped, finished, series_seen;
  std::string current;
  std::vector<Series> samples;
  for (const std::string& line : lines_of(text)) {
    std::smatch m;
    if (std::regex_match(line, m, std::regex("# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)"))) {
      EXPECT_TRUE(helped.insert(m[1]).second) << "second HELP: " << line;
      EXPECT_EQ(types.count(m[1]), 0u) << "HELP after TYPE: " << line;
      continue;
    }
    if (std::regex_match(line, m,
                         std::regex("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter)"))) {
      EXPECT_TRUE(types.emplace(m[1], m[2]).second) << "second TYPE: " << line;
      if (!current.empty()) finished.insert(current);
      current = m[1];
      continue;
    }
    Series s;
    std::string error;
    if (!parse_sample(line, s, error)) {
      ADD_FAILURE() << error << ": " << line;
      continue;
    }
    EXPECT_EQ(s.name, current) << "sample outside its metric's block: " << line;
    EXPECT_EQ(finished.count(s.name), 0u) << line;
    EXPECT_EQ(helped.count(s.name), 1u) << "no HELP before " << line;
    if (types[s.name] == "counter") {
      EXPECT_THAT(s.name, ::testing::EndsWith("_total"));
    }
    std::string key = s.name;
    for (const auto& [k, v] : s.labels) key += "|" + k + "=" + v;
    EXPECT_TRUE(series_seen.insert(key).second) << "repeated series: " << line;
    samples.push_back(s);
  }
  return samples;
}

// The value of the one series named `name` with these labels (besides job); "" when absent.
std::string value_of(const std::vector<Series>& samples, const std::string& name,
                     const std::map<std::string, std::string>& labels = {}) {
  std::string found;
  for (const Series& s : samples) {
    if (s.name != name) continue;
    std::map<std::string, std::string> rest = s.labels;
    rest.erase("job_id");
    if (rest == labels) found = s.value;
  }
  return found;
}

TEST(PrometheusText, FollowsTheExpositionGrammar) {
  const std::vector<Series> samples = parse_exposition(prometheus_text(sample_status()));
  ASSERT_FALSE(samples.empty());
  for (const Series& s : samples) {
    EXPECT_EQ(s.labels.count("job_id"), 1u) << s.name;
    EXPECT_EQ(s.labels.at("job_id"), "demo-sft");
    EXPECT_EQ(s.name.rfind("ptrain_", 0), 0u) << s.name;
  }
  EXPECT_EQ(value_of(samples, "ptrain_job_step"), "50");
  EXPECT_EQ(value_of(samples, "ptrain_job_total_steps"), "200");
  EXPECT_EQ(value_of(samples, "ptrain_job_attempts_total"), "2");
  EXPECT_EQ(value_of(samples, "ptrain_job_restarts_total"), "1");
  EXPECT_EQ(value_of(samples, "ptrain_job_lost_ranks"), "1");
  EXPECT_EQ(value_of(samples, "ptrain_job_last_checkpoint_step"), "40");
  EXPECT_EQ(value_of(samples, "ptrain_job_eta_seconds"), "3720");
  EXPECT_EQ(
      value_of(samples, "ptrain_rank_heartbeat_age_seconds", {{"rank", "3"}, {"host", "node-3"}}),
      "75");
  EXPECT_EQ(value_of(samples, "ptrain_rank_lost", {{"rank", "3"}, {"host", "node-3"}}), "1");
  EXPECT_EQ(value_of(samples, "ptrain_rank_rss_bytes", {{"rank", "0"}, {"host", "node-0"}}),
            "3221225472");
}

TEST(PrometheusText, OneStateSeriesPerStateOnlyTheCurrentOne) {
  const std::vector<Series> samples = parse_exposition(prometheus_text(sample_status()));
  std::map<std::string, std::string> states;
  for (const Series& s : samples)
    if (s.name == "ptrain_job_state") states[s.labels.at("state")] = s.value;
  EXPECT_EQ(states, (std::map<std::string, std::string>{{"starting", "0"},
                                                        {"running", "1"},
                                                        {"checkpointing", "0"},
                                                        {"restarting", "0"},
                                                        {"failed", "0"},
                                                        {"finished", "0"}}));
}

TEST(PrometheusText, ValuesRoundTrip) {
  v1::JobStatus status = sample_status();
  status.set_learning_rate(0.1 + 0.2);  // 0.30000000000000004: needs 17 digits
  status.set_loss(NAN);
  status.set_tokens_per_second(1e21);
  const std::vector<Series> samples = parse_exposition(prometheus_text(status));
  EXPECT_EQ(std::strtod(value_of(samples, "ptrain_job_learning_rate").c_str(), nullptr), 0.1 + 0.2);
  EXPECT_EQ(std::strtod(value_of(samples, "ptrain_job_tokens_per_second").c_str(), nullptr), 1e21);
  EXPECT_EQ(std::strtod(value_of(samples, "ptrain_job_mfu").c_str(), nullptr), 0.412);
  EXPECT_EQ(value_of(samples, "ptrain_job_loss"), "NaN");
}

TEST(PrometheusText, UnknownValuesAreLeftOut) {
  v1::JobStatus status = sample_status();  // eval loss NaN
  std::string text = prometheus_text(status);
  parse_exposition(text);
  EXPECT_THAT(text, Not(HasSubstr("ptrain_job_eval_loss")));
  EXPECT_THAT(text, HasSubstr("ptrain_job_eta_seconds"));

  status.set_eval_loss(2.25);
  status.set_eta_s(NAN);
  text = prometheus_text(status);
  EXPECT_EQ(value_of(parse_exposition(text), "ptrain_job_eval_loss"), "2.25");
  EXPECT_THAT(text, Not(HasSubstr("ptrain_job_eta_seconds")));
}

TEST(PrometheusText, LabelValuesAreEscaped) {
  v1::JobStatus status = sample_status();
  const std::string host = "we\"ird\\host";  // we"ird\host
  status.mutable_ranks(4)->set_host(host);
  status.set_job_id("two\nlines");
  const std::string text = prometheus_text(status);
  EXPECT_THAT(text, HasSubstr(R"(host="we\"ird\\host")"));
  EXPECT_THAT(text, HasSubstr(R"(job_id="two\nlines")"));
  const std::vector<Series> samples = parse_exposition(text);
  EXPECT_EQ(value_of(samples, "ptrain_rank_step", {{"rank", "4"}, {"host", host}}), "50");
  for (const Series& s : samples) EXPECT_EQ(s.labels.at("job_id"), "two\nlines");
}

TEST(PrometheusText, NoRanksNoRankMetrics) {
  v1::JobStatus status;
  status.set_job_id("empty");
  status.set_eval_loss(NAN);
  status.set_eta_s(NAN);
  const std::string text = prometheus_text(status);
  const std::vector<Series> samples = parse_exposition(text);
  EXPECT_THAT(text, Not(HasSubstr("ptrain_rank_")));
  EXPECT_EQ(value_of(samples, "ptrain_job_restarts_total"), "0");
  EXPECT_EQ(value_of(samples, "ptrain_job_state", {{"state", "running"}}), "0");
}

}  // namespace
}  // namespace ptrain
