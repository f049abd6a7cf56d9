#include "cluster/prometheus_text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ptrain {
namespace {

// A label value as the exposition format quotes it: backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string label(const char* name, const std::string& value) {
  return fmt::format("{}=\"{}\"", name, escape_label_value(value));
}

std::string integer(int64_t value) {
  return std::to_string(value);
}

// The shortest text that reads back as the same double (fmt's "{}"), and the format's spellings
// of NaN and the infinities.
std::string real(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

struct Sample {
  std::string labels;  // after job_id="...": ",rank=\"3\",host=\"h\"" or ""
  std::string value;
};

// The exposition text, one metric family at a time; a family without samples is left out.
class Exposition {
 public:
  explicit Exposition(const std::string& job_id) : job_(label("job_id", job_id)) {}

  void add(const char* name, const char* type, const char* help,
           const std::vector<Sample>& samples) {
    if (samples.empty()) return;
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (const Sample& s : samples)
      text_ += fmt::format("{}{{{}{}}} {}\n", name, job_, s.labels, s.value);
  }
  void gauge(const char* name, const char* help, const std::string& value) {
    add(name, "gauge", help, {{"", value}});
  }
  // A gauge whose NaN means "not known": no sample then.
  void gauge_if_known(const char* name, const char* help, double value) {
    if (!std::isnan(value)) gauge(name, help, real(value));
  }

  const std::string& text() const { return text_; }

 private:
  std::string job_;
  std::string text_;
};

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

void add_job(const v1::JobStatus& s, Exposition& out) {
  out.gauge("ptrain_job_step", "Optimizer steps the job has completed.", integer(s.step()));
  out.gauge("ptrain_job_total_steps", "Optimizer steps the job plans (0: not known yet).",
            integer(s.total_steps()));
  out.gauge("ptrain_job_epoch", "The epoch the job is in.", integer(s.epoch()));
  out.gauge("ptrain_job_loss", "Training loss at the last logged step (NaN: a non-finite step).",
            real(s.loss()));
  out.gauge_if_known("ptrain_job_eval_loss", "Loss of the last evaluation.", s.eval_loss());
  out.gauge("ptrain_job_learning_rate", "Learning rate at the last logged step.",
            real(s.learning_rate()));
  out.gauge("ptrain_job_tokens_per_second",
            "Training throughput at the last logged step (tokens/s).", real(s.tokens_per_second()));
  out.gauge("ptrain_job_mfu", "Model FLOP utilisation: a fraction of the GEMM peak per rank.",
            real(s.mfu()));
  out.gauge_if_known("ptrain_job_eta_seconds", "Estimated seconds until the last step.", s.eta_s());

  std::vector<Sample> states;
  const google::protobuf::EnumDescriptor* descriptor = v1::JobState_descriptor();
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const google::protobuf::EnumValueDescriptor* value = descriptor->value(i);
    if (value->number() == v1::JOB_STATE_UNSPECIFIED) continue;
    states.push_back(
        {"," + label("state", lowercase(value->name())), value->number() == s.state() ? "1" : "0"});
  }
  out.add("ptrain_job_state", "gauge", "1 for the job's current state, 0 for the others.", states);
}

void add_attempts(const v1::JobStatus& s, Exposition& out) {
  int64_t attempts = s.attempts_size();
  for (const v1::Attempt& a : s.attempts()) attempts = std::max<int64_t>(attempts, a.number());
  out.add("ptrain_job_attempts_total", "counter", "Attempts (launches) of the job so far.",
          {{"", integer(attempts)}});
  out.add("ptrain_job_restarts_total", "counter", "Attempts after the first: the job's restarts.",
          {{"", integer(std::max<int64_t>(0, attempts - 1))}});
  out.gauge("ptrain_job_world", "Ranks of the current attempt.", integer(s.world()));
  out.gauge("ptrain_job_lost_ranks", "Ranks of the current attempt that stopped heartbeating.",
            integer(s.lost_ranks()));
  out.gauge("ptrain_job_pending_commands", "Checkpoint and stop requests not yet carried out.",
            integer(s.pending_commands_size()));
}

void add_checkpoint(const v1::JobStatus& s, Exposition& out) {
  const v1::Checkpoint& c = s.last_checkpoint();
  out.gauge("ptrain_job_last_checkpoint_step", "Step of the last committed checkpoint (0: none).",
            integer(c.step()));
  if (c.committed_unix_s() > 0) {
    out.gauge("ptrain_job_last_checkpoint_timestamp_seconds",
              "When the last checkpoint was committed (unix seconds).", real(c.committed_unix_s()));
  }
}

void add_ranks(const v1::JobStatus& s, Exposition& out) {
  std::vector<Sample> age, step, rss, device, lost;
  for (const v1::RankHealth& r : s.ranks()) {
    if (r.host().empty()) continue;  // not registered yet: its labels are not known
    const std::string labels =
        "," + label("rank", std::to_string(r.rank())) + "," + label("host", r.host());
    age.push_back({labels, real(r.heartbeat_age_s())});
    step.push_back({labels, integer(r.step())});
    rss.push_back({labels, integer(r.rss_bytes())});
    device.push_back({labels, integer(r.device_memory_bytes())});
    lost.push_back({labels, r.lost() ? "1" : "0"});
  }
  out.add("ptrain_rank_heartbeat_age_seconds", "gauge",
          "Seconds since the rank's last heartbeat (or registration).", age);
  out.add("ptrain_rank_step", "gauge", "Optimizer steps the rank has completed.", step);
  out.add("ptrain_rank_rss_bytes", "gauge", "Resident memory of the rank's process.", rss);
  out.add("ptrain_rank_device_memory_bytes", "gauge", "Device memory the rank uses (0: none).",
          device);
  out.add("ptrain_rank_lost", "gauge", "1 when the rank is lost (no heartbeat within the timeout).",
          lost);
}

}  // namespace

std::string prometheus_text(const v1::JobStatus& status) {
  Exposition out(status.job_id());
  add_job(status, out);
  add_attempts(status, out);
  add_checkpoint(status, out);
  add_ranks(status, out);
  return out.text();
}

}  // namespace ptrain
