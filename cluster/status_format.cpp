#include "cluster/status_format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <iterator>

#include "core/error.h"

namespace ptrain {
namespace {

// ----------------------------------------------------------------------- text in columns

constexpr int kMinWidth = 60;
constexpr int kLabelWidth = 12;  // "checkpoint  " and the other labels of the job block
constexpr int kMaxAttemptsShown = 5;
constexpr int kMaxEventsShown = 8;

bool is_continuation_byte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Where the ANSI CSI sequence starting at `i` ends (one past its final byte), or `i` when none
// starts there.
size_t skip_escape(const std::string& text, size_t i) {
  if (text[i] != '\x1b' || i + 1 >= text.size() || text[i + 1] != '[') return i;
  size_t j = i + 2;
  while (j < text.size() && !(text[j] >= 0x40 && text[j] <= 0x7E)) ++j;
  return std::min(j + 1, text.size());
}

// Columns `text` takes: one per code point, none for colour sequences.
int display_width(const std::string& text) {
  int columns = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t after = skip_escape(text, i);
    if (after != i) {
      i = after;
      continue;
    }
    if (!is_continuation_byte(text[i])) ++columns;
    ++i;
  }
  return columns;
}

// `text` cut to `width` columns, its last column "…" when cut (colour is reset after a cut).
std::string fit(const std::string& text, int width) {
  if (display_width(text) <= width) return text;
  std::string out;
  int columns = 0;
  bool colored = false;
  for (size_t i = 0; i < text.size();) {
    const size_t after = skip_escape(text, i);
    if (after != i) {
      out.append(text, i, after - i);
      colored = true;
      i = after;
      continue;
    }
    size_t end = i + 1;
    while (end < text.size() && is_continuation_byte(text[end])) ++end;
    if (columns + 1 >= width) break;
    out.append(text, i, end - i);
    ++columns;
    i = end;
  }
  out += "…";
  if (colored) out += "\x1b[0m";
  return out;
}

// `text` in exactly `width` columns: cut, or padded with spaces on the right (or the left).
std::string column(const std::string& text, int width, bool right_aligned = false) {
  const std::string cut = fit(text, width);
  const std::string padding(static_cast<size_t>(width - display_width(cut)), ' ');
  return right_aligned ? padding + cut : cut + padding;
}

std::string paint(const std::string& text, const char* sgr, bool color) {
  return color ? fmt::format("\x1b[{}m{}\x1b[0m", sgr, text) : text;
}

std::string label(const std::string& name, bool color) {
  return paint(name, "1", color) + std::string(static_cast<size_t>(kLabelWidth) - name.size(), ' ');
}

std::string heading(const std::string& name, bool color) {
  return paint(name, "1", color);
}

// -------------------------------------------------------------------------------- values

std::string group_thousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return value < 0 ? "-" + digits : digits;
}

std::string format_loss(double loss) {
  return fmt::format("{:.4f}", loss);
}

std::string state_name(v1::JobState state) {
  return state == v1::JOB_STATE_UNSPECIFIED ? "UNSPECIFIED" : v1::JobState_Name(state);
}

const char* state_sgr(v1::JobState state) {
  switch (state) {
    case v1::RUNNING:
      return "1;32";
    case v1::FINISHED:
      return "1;32";
    case v1::CHECKPOINTING:
      return "1;36";
    case v1::FAILED:
      return "1;31";
    default:
      return "1;33";
  }
}

const char* severity_sgr(const std::string& severity) {
  if (severity == "error") return "31";
  if (severity == "warning") return "33";
  return "0";
}

// How long before the coordinator's `now` a time of the status was ("—" when either is unset;
// a time ahead of now, from a rank's clock, reads as just now).
std::string age(const v1::JobStatus& status, double unix_s) {
  if (unix_s <= 0 || status.now_unix_s() <= 0) return "—";
  return format_duration(std::max(0.0, status.now_unix_s() - unix_s)) + " ago";
}

// ------------------------------------------------------------------------------ sections

using Lines = std::vector<std::string>;

void add_job(const v1::JobStatus& status, bool color, Lines& lines) {
  std::string head = paint("job " + (status.job_id().empty() ? "—" : status.job_id()), "1", color) +
                     "   " + paint(state_name(status.state()), state_sgr(status.state()), color);
  if (!status.attempts().empty())
    head += fmt::format("   attempt {}", status.attempts().rbegin()->number());
  head += fmt::format("   world {}", status.world());
  if (!status.config_hash().empty()) head += "   config " + status.config_hash();
  head += "   updated " + age(status, status.updated_unix_s());
  lines.push_back(head);
}

void add_progress(const v1::JobStatus& status, const std::vector<v1::MetricPoint>& history,
                  int width, bool color, Lines& lines) {
  std::string step = label("step", color);
  if (status.total_steps() > 0) {
    const double fraction =
        static_cast<double>(status.step()) / static_cast<double>(status.total_steps());
    step += fmt::format("{} / {}   |{}| {:5.1f}%", status.step(), status.total_steps(),
                        progress_bar(fraction, std::min(40, width - 52)),
                        100 * std::clamp(fraction, 0.0, 1.0));
  } else {
    step += fmt::format("{} / ?", status.step());
  }
  lines.push_back(step + fmt::format("   epoch {}", status.epoch()));

  const std::string loss = column(format_loss(status.loss()), 8);
  const std::string eval = std::isfinite(status.eval_loss())
                               ? "eval " + format_loss(status.eval_loss())
                               : std::string("eval —");
  std::vector<double> losses;
  losses.reserve(history.size());
  for (const v1::MetricPoint& point : history) losses.push_back(point.loss());
  const int cells = width - kLabelWidth - 8 - 3 - 3 - display_width(eval);
  const std::string spark = sparkline(losses, cells);
  lines.push_back(label("loss", color) + loss + "   " + paint(spark, "36", color) +
                  (spark.empty() ? "" : "   ") + eval);

  const std::string mfu = std::isfinite(status.mfu()) && status.mfu() > 0
                              ? fmt::format("{:.1f}%", 100 * status.mfu())
                              : std::string("—");
  const double rate = status.tokens_per_second();
  const std::string tokens = !std::isfinite(rate) || rate < 0 ? std::string("—")
                             : rate < 1e15                    ? group_thousands(std::llround(rate))
                                                              : fmt::format("{:.3g}", rate);
  lines.push_back(label("speed", color) + fmt::format("{} tok/s   MFU {}   lr {:.2e}   ETA {}",
                                                      tokens, mfu, status.learning_rate(),
                                                      format_duration(status.eta_s())));
}

void add_ranks(const v1::JobStatus& status, int max_ranks, bool color, Lines& lines) {
  std::vector<const v1::RankHealth*> ranks;
  for (const v1::RankHealth& rank : status.ranks()) ranks.push_back(&rank);
  std::stable_sort(ranks.begin(), ranks.end(),
                   [](const v1::RankHealth* a, const v1::RankHealth* b) {
                     return a->lost() != b->lost() ? a->lost() : a->rank() < b->rank();
                   });
  const size_t shown = std::min(ranks.size(), static_cast<size_t>(std::max(0, max_ranks)));
  // The coordinator may have sent only the first max_ranks of `world` ranks (same order).
  const int64_t hidden =
      std::max<int64_t>(status.world(), static_cast<int64_t>(ranks.size())) - shown;

  const std::string lost = fmt::format("{} lost", status.lost_ranks());
  lines.push_back(label("ranks", color) +
                  (status.lost_ranks() > 0 ? paint(lost, "1;31", color) : lost));
  if (ranks.empty()) return;

  int host_width = 4;
  bool device = false;
  for (size_t i = 0; i < shown; ++i) {
    host_width = std::max(host_width, std::min(24, display_width(ranks[i]->host())));
    device = device || ranks[i]->device_memory_bytes() > 0;
  }
  // The LOST marker comes right after the rank, where a narrow terminal never cuts it.
  auto row = [&](const std::string& rank, const std::string& marker, const std::string& host,
                 const std::string& pid, const std::string& step, const std::string& heartbeat,
                 const std::string& rss, const std::string& device_memory) {
    std::string text = "  " + column(rank, 5, true) + "  " + marker + "  " +
                       column(host, host_width) + "  " + column(pid, 8, true) + "  " +
                       column(step, 8, true) + "  " + column(heartbeat, 9, true) + "  " +
                       column(rss, 10, true);
    if (device) text += "  " + column(device_memory, 10, true);
    return text;
  };
  lines.push_back(
      paint(row("RANK", "    ", "HOST", "PID", "STEP", "HEARTBEAT", "RSS", "DEVICE"), "2", color));
  for (size_t i = 0; i < shown; ++i) {
    const v1::RankHealth& r = *ranks[i];
    lines.push_back(row(std::to_string(r.rank()), r.lost() ? paint("LOST", "1;31", color) : "    ",
                        r.host(), std::to_string(r.pid()), std::to_string(r.step()),
                        format_duration(r.heartbeat_age_s()),
                        r.rss_bytes() > 0 ? format_bytes(r.rss_bytes()) : "—",
                        r.device_memory_bytes() > 0 ? format_bytes(r.device_memory_bytes()) : "—"));
  }
  if (hidden > 0) lines.push_back(fmt::format("  ... {} more", hidden));
}

void add_attempts(const v1::JobStatus& status, bool color, Lines& lines) {
  if (status.attempts().empty()) return;
  lines.push_back(heading("attempts", color));
  const int count = status.attempts_size();
  if (count > kMaxAttemptsShown)
    lines.push_back(fmt::format("  ... {} earlier", count - kMaxAttemptsShown));
  for (int i = std::max(0, count - kMaxAttemptsShown); i < count; ++i) {
    const v1::Attempt& a = status.attempts(i);
    const bool running = a.ended_unix_s() <= 0;
    const double end = running ? status.now_unix_s() : a.ended_unix_s();
    const double lasted = a.started_unix_s() > 0 && end > 0 ? end - a.started_unix_s() : NAN;
    std::string text =
        fmt::format("  #{:<3} steps {}-{}   {}   ", a.number(), a.first_step(),
                    running ? status.step() : a.last_step(), format_duration(lasted));
    const std::string reason = running ? std::string("running") : a.end_reason();
    text += paint(reason, reason == "finished" || running ? "32" : "33", color);
    if (!a.end_message().empty()) text += ": " + a.end_message();
    // What ptrain-launch saw, when it differs from the ranks' own account, and what it did.
    if (!a.cause().empty() && a.cause() != a.end_reason())
      text += fmt::format("   (supervisor: {}{}{})", a.cause(),
                          a.cause_message().empty() ? "" : ": ", a.cause_message());
    if (a.restart()) text += paint("   -> restarted", "33", color);
    lines.push_back(text);
  }
}

void add_checkpoint(const v1::JobStatus& status, bool color, Lines& lines) {
  const v1::Checkpoint& c = status.last_checkpoint();
  if (c.step() <= 0 && c.dir().empty()) {
    lines.push_back(label("checkpoint", color) + "none yet");
    return;
  }
  std::string text =
      label("checkpoint", color) +
      fmt::format("step {}   {}   {}", c.step(), age(status, c.committed_unix_s()), c.dir());
  if (c.bytes() > 0) text += fmt::format("   {} in {} files", format_bytes(c.bytes()), c.files());
  lines.push_back(text);
}

void add_events(const v1::JobStatus& status, bool color, Lines& lines) {
  if (status.recent_events().empty()) return;
  lines.push_back(heading("events", color));
  const int count = status.recent_events_size();
  for (int i = std::max(0, count - kMaxEventsShown); i < count; ++i) {
    const v1::Event& e = status.recent_events(i);
    std::string text = "  " + column(age(status, e.unix_s()), 12, true) + "  " +
                       paint(column(e.severity(), 7), severity_sgr(e.severity()), color) + "  " +
                       column(e.kind(), 20) + "  ";
    lines.push_back(text + e.message());  // the coordinator's messages name their rank
  }
}

void add_commands(const v1::JobStatus& status, bool color, Lines& lines) {
  if (status.pending_commands().empty()) return;
  lines.push_back(heading("commands", color));
  for (const v1::Command& c : status.pending_commands()) {
    lines.push_back(fmt::format("  #{:<4} {:<10}  requested {}   {}", c.id(),
                                v1::Command_Kind_Name(c.kind()), age(status, c.requested_unix_s()),
                                c.reason()));
  }
}

}  // namespace

// -------------------------------------------------------------------------------- public

std::string format_status_table(const v1::JobStatus& status,
                                const std::vector<v1::MetricPoint>& history,
                                const StatusFormatOptions& options) {
  const int width = std::max(kMinWidth, options.width);
  Lines lines;
  add_job(status, options.color, lines);
  add_progress(status, history, width, options.color, lines);
  add_ranks(status, options.max_ranks, options.color, lines);
  add_attempts(status, options.color, lines);
  add_checkpoint(status, options.color, lines);
  add_events(status, options.color, lines);
  add_commands(status, options.color, lines);
  std::string out;
  for (const std::string& line : lines) out += fit(line, width) + "\n";
  return out;
}

std::string status_json(const v1::JobStatus& status) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto result = google::protobuf::util::MessageToJsonString(status, &json, options);
  PTRAIN_ASSERT(result.ok(), "MessageToJsonString(JobStatus) failed: {}", result.ToString());
  return json;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "—";
  if (std::round(seconds * 10) < 100) return fmt::format("{:.1f}s", std::round(seconds * 10) / 10);
  const int64_t s = std::llround(std::min(seconds, 1e12));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02}h", s / 86400, s % 86400 / 3600);
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1023.95 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string progress_bar(double fraction, int cells) {
  static const char* const kPartial[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  cells = std::max(0, cells);
  const double filled = std::isfinite(fraction) ? std::clamp(fraction, 0.0, 1.0) : 0.0;
  const int64_t eighths = static_cast<int64_t>(std::floor(filled * cells * 8));
  const int64_t full = eighths / 8;
  std::string bar;
  for (int64_t i = 0; i < full; ++i) bar += "█";
  int64_t used = full;
  if (eighths % 8 != 0) {
    bar += kPartial[eighths % 8];
    ++used;
  }
  bar.append(static_cast<size_t>(cells - used), ' ');
  return bar;
}

std::string sparkline(const std::vector<double>& values, int cells) {
  static const char* const kLevels[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  if (cells <= 0 || values.empty()) return "";
  const size_t n = values.size();
  const size_t k = std::min(n, static_cast<size_t>(cells));
  std::vector<double> means(k, NAN);
  for (size_t i = 0; i < k; ++i) {
    double sum = 0;
    int count = 0;
    for (size_t j = i * n / k; j < (i + 1) * n / k; ++j) {
      if (!std::isfinite(values[j])) continue;
      sum += values[j];
      ++count;
    }
    if (count > 0) means[i] = sum / count;
  }
  double lo = INFINITY, hi = -INFINITY;
  for (double m : means) {
    if (!std::isfinite(m)) continue;
    lo = std::min(lo, m);
    hi = std::max(hi, m);
  }
  std::string line;
  for (double m : means) {
    if (!std::isfinite(m)) {
      line += " ";
      continue;
    }
    const long level = hi > lo ? std::lround((m - lo) / (hi - lo) * 7) : 3;
    line += kLevels[std::clamp(level, 0L, 7L)];
  }
  return line;
}

}  // namespace ptrain
