#include "core/config_schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace ptrain {
namespace {

template <class R, class T>
std::function<void*(R&)> member_of(T R::*m) {
  return [m](R& r) -> void* { return &(r.*m); };
}

template <class S, class T>
std::function<void*(JobConfig&)> member_of(S JobConfig::*section, T S::*m) {
  return [section, m](JobConfig& r) -> void* { return &((r.*section).*m); };
}

constexpr double kMaxCount = 1e12;

template <class Record>
FieldSpec<Record> field(std::string name, KeyType type, std::function<void*(Record&)> member,
                        std::string doc) {
  FieldSpec<Record> key;
  key.name = std::move(name);
  key.type = type;
  key.member = std::move(member);
  key.doc = std::move(doc);
  return key;
}

ConfigKey boolean(std::string name, std::function<void*(JobConfig&)> member, std::string doc) {
  return field<JobConfig>(std::move(name), KeyType::kBool, std::move(member), std::move(doc));
}
ConfigKey integer(std::string name, std::function<void*(JobConfig&)> member, double min, double max,
                  std::string doc) {
  ConfigKey key =
      field<JobConfig>(std::move(name), KeyType::kInt, std::move(member), std::move(doc));
  key.min = min;
  key.max = max;
  return key;
}
ConfigKey number(std::string name, std::function<void*(JobConfig&)> member, double min, double max,
                 std::string doc) {
  ConfigKey key =
      field<JobConfig>(std::move(name), KeyType::kFloat, std::move(member), std::move(doc));
  key.min = min;
  key.max = max;
  return key;
}
ConfigKey text(std::string name, std::function<void*(JobConfig&)> member, std::string doc) {
  return field<JobConfig>(std::move(name), KeyType::kString, std::move(member), std::move(doc));
}
ConfigKey one_of(std::string name, std::function<void*(JobConfig&)> member,
                 std::vector<std::string> choices, std::string doc) {
  ConfigKey key =
      field<JobConfig>(std::move(name), KeyType::kEnum, std::move(member), std::move(doc));
  key.choices = std::move(choices);
  return key;
}
// `key` marked as a credential (see FieldSpec::secret).
ConfigKey secret(ConfigKey key) {
  key.secret = true;
  return key;
}
ConfigKey strings(std::string name, std::function<void*(JobConfig&)> member, std::string doc) {
  return field<JobConfig>(std::move(name), KeyType::kStringList, std::move(member), std::move(doc));
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitution = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string type_name(KeyType type) {
  switch (type) {
    case KeyType::kBool:
      return "bool";
    case KeyType::kInt:
      return "integer";
    case KeyType::kFloat:
      return "number";
    case KeyType::kString:
      return "string";
    case KeyType::kEnum:
      return "string";
    case KeyType::kStringList:
      return "list of strings";
    case KeyType::kDatasetList:
      return "list of datasets";
  }
  return "?";
}

std::string range_text(double min, double max, std::vector<std::string> const& choices) {
  if (!choices.empty()) {
    std::string out;
    for (const auto& c : choices)
      out += (out.empty() ? "" : ", ") + ("`" + (c.empty() ? "\"\"" : c) + "`");
    return out;
  }
  bool has_min = min > -std::numeric_limits<double>::infinity();
  bool has_max = max < std::numeric_limits<double>::infinity() && max < kMaxCount;
  if (has_min && has_max) return fmt::format("[{}, {}]", format_bound(min), format_bound(max));
  if (has_min) return fmt::format(">= {}", format_bound(min));
  if (has_max) return fmt::format("<= {}", format_bound(max));
  return "";
}

}  // namespace

ConfigSchema::ConfigSchema() {
  using J = JobConfig;
  sections_ = {"fsdp", "comm", "checkpoint", "coordinator", "logging"};
  keys_ = {
      // ---------------------------------------------------------------- model and adapter
      text("base_model", member_of(&J::base_model),
           "Hugging Face model directory (config.json + safetensors) to start from."),
      boolean("load_in_4bit", member_of(&J::load_in_4bit),
              "Quantize the frozen base weights to NF4 on load (QLoRA)."),
      one_of("adapter", member_of(&J::adapter), {"", "lora", "qlora"},
             "Adapter type; empty for full training."),
      integer("lora_r", member_of(&J::lora_r), 1, 65536, "LoRA rank r."),
      number("lora_alpha", member_of(&J::lora_alpha), 0, 1e9,
             "LoRA alpha; the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."),
      number("lora_dropout", member_of(&J::lora_dropout), 0, 0.999,
             "Dropout on the LoRA input during training."),
      boolean("lora_target_linear", member_of(&J::lora_target_linear),
              "Put LoRA on every linear layer except lm_head."),
      strings("lora_target_modules", member_of(&J::lora_target_modules),
              "Module names or regexes to put LoRA on (e.g. q_proj, v_proj)."),
      strings("lora_modules_to_save", member_of(&J::lora_modules_to_save),
              "Modules trained fully next to the adapter (e.g. embed_tokens, lm_head)."),
      boolean("peft_use_rslora", member_of(&J::peft_use_rslora),
              "Rank-stabilised LoRA scaling alpha / sqrt(r)."),
      // ---------------------------------------------------------------- data
      field<J>("datasets", KeyType::kDatasetList, member_of(&J::datasets),
               "Training datasets, each `{path, type, ...}` (see the dataset keys below)."),
      text("dataset_prepared_path", member_of(&J::dataset_prepared_path),
           "Directory of the prepared-data cache (tokenized and packed)."),
      number("val_set_size", member_of(&J::val_set_size), 0, kMaxCount,
             "Held-out evaluation share: a fraction in [0, 1), or a row count when >= 1."),
      integer("sequence_len", member_of(&J::sequence_len), 8, 1048576, "Tokens per packed row."),
      boolean("sample_packing", member_of(&J::sample_packing),
              "Pack several samples into each row (attention never crosses samples)."),
      boolean("pad_to_sequence_len", member_of(&J::pad_to_sequence_len),
              "Pad every row to sequence_len tokens."),
      boolean("train_on_inputs", member_of(&J::train_on_inputs),
              "Also compute the loss on prompt tokens."),
      one_of("chat_template", member_of(&J::chat_template),
             {"tokenizer_default", "chatml", "llama3", "llama2"},
             "Chat format of conversation rows; tokenizer_default: the model's own chat_template "
             "(tokenizer_config.json) when it is one of the others."),
      one_of("excess_length_strategy", member_of(&J::excess_length_strategy), {"drop", "truncate"},
             "Samples longer than sequence_len: drop them, or keep their first sequence_len "
             "tokens."),
      boolean("skip_invalid_rows", member_of(&J::skip_invalid_rows),
              "Skip malformed dataset rows (counted per reason) instead of stopping at the first."),
      integer("sample_packing_group_size", member_of(&J::sample_packing_group_size), 1, kMaxCount,
              "Samples per first-fit-decreasing packing group (consecutive in seeded order)."),
      // ---------------------------------------------------------------- optimisation
      integer("micro_batch_size", member_of(&J::micro_batch_size), 1, 65536,
              "Rows per rank per forward/backward pass."),
      integer("gradient_accumulation_steps", member_of(&J::gradient_accumulation_steps), 1, 65536,
              "Micro-batches per optimizer step."),
      integer("num_epochs", member_of(&J::num_epochs), 1, 100000, "Passes over the training data."),
      integer("max_steps", member_of(&J::max_steps), 0, kMaxCount,
              "Stop after this many optimizer steps; 0 runs num_epochs."),
      one_of(
          "optimizer", member_of(&J::optimizer),
          {"adamw_torch", "adamw_torch_fused", "adamw", "paged_adamw_32bit", "paged_adamw_8bit",
           "adamw_bnb_8bit"},
          "Optimizer: the 32-bit AdamW names are ptrain's sharded AdamW (fp32 states); the 8-bit "
          "ones are refused."),
      one_of(
          "lr_scheduler", member_of(&J::lr_scheduler),
          {"cosine", "linear", "constant", "constant_with_warmup"},
          "Learning-rate schedule (Hugging Face's): warmup, then cosine or linear decay to 0, or "
          "constant."),
      number("learning_rate", member_of(&J::learning_rate), 0, 10, "Peak learning rate."),
      integer("warmup_steps", member_of(&J::warmup_steps), 0, kMaxCount,
              "Linear warmup steps (exclusive with warmup_ratio)."),
      number("warmup_ratio", member_of(&J::warmup_ratio), 0, 1,
             "Warmup as a fraction of the total steps (exclusive with warmup_steps)."),
      number("weight_decay", member_of(&J::weight_decay), 0, 10, "AdamW decoupled weight decay."),
      number("max_grad_norm", member_of(&J::max_grad_norm), 0, 1e9,
             "Clip the global gradient norm to this; 0 disables clipping."),
      number("adam_beta1", member_of(&J::adam_beta1), 0, 0.999999, "AdamW beta1."),
      number("adam_beta2", member_of(&J::adam_beta2), 0, 0.999999999, "AdamW beta2."),
      number("adam_epsilon", member_of(&J::adam_epsilon), 0, 1, "AdamW epsilon."),
      integer("max_nonfinite_steps", member_of(&J::max_nonfinite_steps), 1, kMaxCount,
              "A run of this many optimizer steps with a non-finite loss or gradient norm (each "
              "skipped) ends the job."),
      boolean("bf16", member_of(&J::bf16),
              "Compute in bf16 (fp32 master weights); false computes in fp32."),
      boolean("gradient_checkpointing", member_of(&J::gradient_checkpointing),
              "Recompute each decoder layer's activations in backward."),
      // ---------------------------------------------------------------- bookkeeping
      text("output_dir", member_of(&J::output_dir),
           "Where logs, the resolved config, checkpoints and exports go."),
      integer("logging_steps", member_of(&J::logging_steps), 1, kMaxCount,
              "Log metrics every N steps."),
      integer("eval_steps", member_of(&J::eval_steps), 0, kMaxCount,
              "Evaluate every N steps; 0: never."),
      integer("save_steps", member_of(&J::save_steps), 0, kMaxCount,
              "Checkpoint every N steps (into output_dir/checkpoints/step-N); 0: only at the end "
              "(and on stop requests)."),
      integer("saves_per_epoch", member_of(&J::saves_per_epoch), 0, 100000,
              "Checkpoints per epoch: every max(1, steps per epoch / N) steps (exclusive with "
              "save_steps)."),
      text("resume_from_checkpoint", member_of(&J::resume_from_checkpoint),
           "A committed checkpoint directory to resume from, or 'latest': the newest valid one "
           "under output_dir/checkpoints (none: start from the base model)."),
      integer("seed", member_of(&J::seed), 0, 9.2e18,
              "Seed for data order, dropout and initialisation."),
      integer("threads", member_of(&J::threads), 0, 4096,
              "Compute threads per rank; 0: the host's cores divided by the ranks on the host."),
      one_of("device", member_of(&J::device), {"auto", "cpu", "cuda"},
             "Where training computes; auto and cpu: the CPU (training on GPUs is not wired yet: "
             "cuda is refused)."),
      // ---------------------------------------------------------------- ptrain sections
      one_of("fsdp.sharding", member_of(&J::fsdp, &FsdpConfig::sharding),
             {"full", "grad_op", "none"},
             "full: parameters, gradients and optimizer state sharded (ZeRO-3); grad_op: "
             "parameters stay gathered from forward to backward (ZeRO-2); none: plain data "
             "parallelism."),
      integer("fsdp.hybrid_shard_size", member_of(&J::fsdp, &FsdpConfig::hybrid_shard_size), 0,
              1048576,
              "Shard within groups of this many consecutive ranks and replicate across groups "
              "(HSDP); 0: shard over all ranks."),
      boolean("fsdp.reshard_after_forward", member_of(&J::fsdp, &FsdpConfig::reshard_after_forward),
              "sharding full: free each gathered unit after its forward and gather it again for "
              "backward."),
      boolean("fsdp.reduce_every_micro_batch",
              member_of(&J::fsdp, &FsdpConfig::reduce_every_micro_batch),
              "Reduce-scatter gradients after every micro-batch (less memory); false: once per "
              "optimizer step (less communication)."),
      one_of("fsdp.reduce_dtype", member_of(&J::fsdp, &FsdpConfig::reduce_dtype), {"fp32", "bf16"},
             "Dtype of the gradient reduce-scatter."),
      one_of("comm.backend", member_of(&J::comm, &CommConfig::backend), {"auto", "mpi", "nccl"},
             "Collective backend; auto picks NCCL when built with CUDA and a GPU is visible."),
      number("comm.collective_timeout", member_of(&J::comm, &CommConfig::collective_timeout), 0.01,
             604800,
             "Seconds a collective may take before the watchdog aborts the job, naming it."),
      boolean("checkpoint.save_frozen", member_of(&J::checkpoint, &CheckpointConfig::save_frozen),
              "Also save the frozen weights (a LoRA/QLoRA base) in every checkpoint; by default a "
              "checkpoint holds the trained tensors and the base comes from base_model."),
      integer("checkpoint.keep_last", member_of(&J::checkpoint, &CheckpointConfig::keep_last), 0,
              kMaxCount,
              "Keep the newest N committed checkpoints (older ones are removed only after a newer "
              "one is committed); 0: keep all."),
      boolean("checkpoint.async", member_of(&J::checkpoint, &CheckpointConfig::async),
              "Write checkpoints on a background thread while training continues (on the CPU "
              "without a copy: the next optimizer update waits for the write if it is still "
              "running); the commit follows when every rank has written."),
      text("coordinator.address", member_of(&J::coordinator, &CoordinatorConfig::address),
           "host:port of a running coordinator (ptrain-coordinator, ptrain-launch); empty: rank 0 "
           "runs one in-process and writes its address to output_dir/coordinator.addr."),
      text("coordinator.listen", member_of(&J::coordinator, &CoordinatorConfig::listen),
           "Where the in-process coordinator listens (port 0: a free one); 0.0.0.0:PORT lets "
           "ranks on other hosts reach it."),
      text("coordinator.job_id", member_of(&J::coordinator, &CoordinatorConfig::job_id),
           "The job's name on the coordinator; empty: the name of output_dir."),
      secret(text("coordinator.auth_token",
                  member_of(&J::coordinator, &CoordinatorConfig::auth_token),
                  "A bearer token every coordinator RPC must carry (the in-process coordinator "
                  "requires it); empty: none. Prefer auth_token_file: a token in the config file "
                  "travels wherever the file does.")),
      text("coordinator.auth_token_file",
           member_of(&J::coordinator, &CoordinatorConfig::auth_token_file),
           "A file whose first line is the bearer token (exclusive with auth_token)."),
      text("coordinator.tls_cert", member_of(&J::coordinator, &CoordinatorConfig::tls_cert),
           "The in-process coordinator's certificate chain (PEM): it then serves TLS only."),
      text("coordinator.tls_key", member_of(&J::coordinator, &CoordinatorConfig::tls_key),
           "The private key (PEM) of tls_cert."),
      text("coordinator.tls_client_ca",
           member_of(&J::coordinator, &CoordinatorConfig::tls_client_ca),
           "The in-process coordinator requires client certificates signed by this CA (mTLS)."),
      text("coordinator.tls_ca", member_of(&J::coordinator, &CoordinatorConfig::tls_ca),
           "Ranks trust this CA (PEM) for the coordinator's certificate; set: ranks use TLS."),
      text("coordinator.tls_client_cert",
           member_of(&J::coordinator, &CoordinatorConfig::tls_client_cert),
           "The certificate (PEM) ranks present to a coordinator that requires one."),
      text("coordinator.tls_client_key",
           member_of(&J::coordinator, &CoordinatorConfig::tls_client_key),
           "The private key (PEM) of tls_client_cert."),
      text("coordinator.metrics_listen",
           member_of(&J::coordinator, &CoordinatorConfig::metrics_listen),
           "host:port where the in-process coordinator serves Prometheus text at /metrics; "
           "empty: off."),
      number("coordinator.heartbeat_interval",
             member_of(&J::coordinator, &CoordinatorConfig::heartbeat_interval), 0.05, 3600,
             "Seconds between a rank's heartbeats."),
      number("coordinator.heartbeat_timeout",
             member_of(&J::coordinator, &CoordinatorConfig::heartbeat_timeout), 0.1, 86400,
             "Seconds without a heartbeat after which the coordinator shows a rank as lost."),
      number("coordinator.rpc_timeout", member_of(&J::coordinator, &CoordinatorConfig::rpc_timeout),
             0.01, 3600, "The deadline of every call to the coordinator, in seconds."),
      number("coordinator.commit_timeout",
             member_of(&J::coordinator, &CoordinatorConfig::commit_timeout), 0, 3600,
             "Seconds a checkpoint commit waits for the coordinator to record it; then the "
             "commit stands on its manifest alone and is reported when the coordinator is back."),
      one_of("logging.level", member_of(&J::logging, &LoggingConfig::level),
             {"trace", "debug", "info", "warn", "error"}, "Log level on every rank."),
      one_of(
          "logging.console", member_of(&J::logging, &LoggingConfig::console),
          {"rank0", "all", "none"},
          "Which ranks log to the console; a job that writes outputs (train, preprocess) also logs "
          "every rank to output_dir/logs/rank-N.log."),
  };

  using D = DatasetConfig;
  DatasetKey path = field<D>("path", KeyType::kString, member_of(&D::path),
                             "JSONL file (or directory of them) with one row per line.");
  path.required = true;
  DatasetKey type =
      field<D>("type", KeyType::kEnum, member_of(&D::type), "Row format and prompt template.");
  type.choices = {"alpaca", "chat_template", "completion", "sharegpt", "pretokenized"};
  DatasetKey weight = field<D>("weight", KeyType::kFloat, member_of(&D::weight),
                               "Times each training row is used per epoch: 2 doubles a dataset, "
                               "0.5 uses a seeded half of it.");
  weight.min = 0.001;
  weight.max = 1000;
  DatasetKey dtype = field<D>("dtype", KeyType::kEnum, member_of(&D::dtype),
                              "pretokenized: the token id type of the file.");
  dtype.choices = {"uint16", "uint32"};
  dataset_keys_ = {
      path,
      type,
      field<D>("split", KeyType::kString, member_of(&D::split),
               "Split name (kept for Axolotl compatibility)."),
      field<D>("field_messages", KeyType::kString, member_of(&D::field_messages),
               "chat_template: the field holding the message list."),
      field<D>("message_field_role", KeyType::kString, member_of(&D::message_field_role),
               "chat_template: a message's key holding its role (e.g. from)."),
      field<D>("message_field_content", KeyType::kString, member_of(&D::message_field_content),
               "chat_template: a message's key holding its text (e.g. value)."),
      field<D>("field", KeyType::kString, member_of(&D::field),
               "completion: the field holding the text."),
      weight,
      dtype,
  };

  ignored_ = {
      {"model_type", "the architecture is read from the model's config.json"},
      {"tokenizer_type", "the tokenizer is read from the model directory"},
      {"is_llama_derived_model", "the architecture is read from the model's config.json"},
      {"strict", "ptrain always validates strictly"},
      {"flash_attention", "ptrain chooses its attention kernel itself"},
      {"sdp_attention", "ptrain chooses its attention kernel itself"},
      {"xformers_attention", "ptrain chooses its attention kernel itself"},
      {"tf32", "ptrain computes in bf16 (bf16: true) or fp32"},
      {"fp16", "ptrain computes in bf16 (bf16: true) or fp32"},
      {"wandb_project", "experiment trackers are not supported; metrics go to the logs"},
      {"wandb_entity", "experiment trackers are not supported; metrics go to the logs"},
      {"wandb_watch", "experiment trackers are not supported; metrics go to the logs"},
      {"wandb_name", "experiment trackers are not supported; metrics go to the logs"},
      {"wandb_log_model", "experiment trackers are not supported; metrics go to the logs"},
      {"local_rank", "ranks come from MPI"},
      {"early_stopping_patience", "not supported"},
      {"special_tokens", "special tokens come from the model's tokenizer files"},
  };
}

const ConfigSchema& ConfigSchema::instance() {
  static const ConfigSchema schema;
  return schema;
}

const ConfigKey* ConfigSchema::find(const std::string& dotted_name) const {
  for (const auto& key : keys_)
    if (key.name == dotted_name) return &key;
  return nullptr;
}

const DatasetKey* ConfigSchema::find_dataset_key(const std::string& name) const {
  for (const auto& key : dataset_keys_)
    if (key.name == name) return &key;
  return nullptr;
}

const IgnoredKey* ConfigSchema::find_ignored(const std::string& name) const {
  for (const auto& key : ignored_)
    if (key.name == name) return &key;
  return nullptr;
}

std::string format_bound(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15)
    return fmt::format("{}", static_cast<int64_t>(value));
  return fmt::format("{}", value);
}

std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const auto& candidate : candidates) {
    size_t distance = edit_distance(name, candidate);
    size_t dot = candidate.rfind('.');
    if (dot != std::string::npos)
      distance = std::min(distance, edit_distance(name, candidate.substr(dot + 1)));
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  size_t limit = std::max<size_t>(2, name.size() / 3);
  return best_distance <= limit ? best : "";
}

std::string ConfigSchema::markdown() const {
  // Defaults are whatever a default-constructed JobConfig holds: render them through the members.
  JobConfig defaults;
  DatasetConfig dataset_defaults;
  auto render = [](KeyType type, void* value) -> std::string {
    switch (type) {
      case KeyType::kBool:
        return *static_cast<bool*>(value) ? "true" : "false";
      case KeyType::kInt:
        return std::to_string(*static_cast<int64_t*>(value));
      case KeyType::kFloat:
        return fmt::format("{:g}", *static_cast<double*>(value));
      case KeyType::kString:
      case KeyType::kEnum: {
        const auto& s = *static_cast<std::string*>(value);
        return s.empty() ? "\"\"" : s;
      }
      case KeyType::kStringList:
      case KeyType::kDatasetList:
        return "[]";
    }
    return "";
  };
  std::ostringstream out;
  out << "# Configuration reference\n\n"
      << "<!-- Generated from core/config_schema.cpp by `ptrain config-docs`; do not edit. -->\n\n"
      << "A job is one YAML file. Keys use Axolotl's names where Axolotl has one; ptrain's own\n"
      << "settings live in nested sections (`comm:`, `logging:`). Any key can be overridden on "
         "the\n"
      << "command line with `--set key=value` (dotted for sections: `--set comm.backend=mpi`;\n"
      << "lists in YAML flow form: `--set lora_target_modules=[q_proj,v_proj]`).\n\n"
      << "An unknown key, a wrong type or an out-of-range value is an error naming the file, line\n"
      << "and key (exit code 2); so is a key with no value (`learning_rate:` and nothing after "
         "it):\n"
      << "leave the key out, or write `key: null`, for its default. A config file is one YAML\n"
      << "document (no second document after a `---` line). `ptrain validate-config job.yaml` "
         "checks\n"
      << "a file without running.\n\n"
      << "| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
  for (const auto& key : keys_) {
    out << "| `" << key.name << "` | " << type_name(key.type) << " | `"
        << render(key.type, key.member(defaults)) << "` | "
        << range_text(key.min, key.max, key.choices) << " | " << key.doc
        << (key.secret ? fmt::format(" Secret: never written to outputs; the resolved config (and "
                                     "so its hash and what checkpoints record) shows `{}`.",
                                     kRedacted)
                       : "")
        << " |\n";
  }
  out << "\n## Dataset entries (`datasets: [{...}]`)\n\n"
      << "| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
  for (const auto& key : dataset_keys_) {
    out << "| `" << key.name << "` | " << type_name(key.type) << " | "
        << (key.required ? "required" : "`" + render(key.type, key.member(dataset_defaults)) + "`")
        << " | " << range_text(key.min, key.max, key.choices) << " | " << key.doc << " |\n";
  }
  out << "\n## Relations checked between keys\n\n"
      << "- `adapter: qlora` requires `load_in_4bit: true` (`load_in_4bit` without an adapter "
         "is for eval, generate and export; `train` refuses it).\n"
      << "- `warmup_steps` and `warmup_ratio` are exclusive; so are `save_steps` and "
         "`saves_per_epoch`.\n"
      << "- `lora_target_linear` and `lora_target_modules` need an adapter.\n"
      << "- `coordinator.auth_token` and `coordinator.auth_token_file` are exclusive.\n"
      << "- `coordinator.tls_cert` and `tls_key` go together, and so do `tls_client_cert` and "
         "`tls_client_key`; `tls_client_ca` needs `tls_cert`, and `tls_client_cert` needs "
         "`tls_ca`.\n"
      << "- An in-process coordinator with TLS (`address` empty, `tls_cert` set) needs `tls_ca`, "
         "for the ranks to trust it.\n"
      << "- `coordinator.listen`, `metrics_listen` and `address` (when set) are `host:port` with "
         "a port in [0, 65535] (an IPv6 host in brackets: `[::1]:0`); `address` needs a port "
         "above 0.\n"
      << "- `coordinator.heartbeat_timeout` is more than twice `heartbeat_interval` (else ranks "
         "flap between lost and back).\n"
      << "\n## Axolotl keys accepted and ignored (with a warning)\n\n";
  for (const auto& key : ignored_) out << "- `" << key.name << "`: " << key.reason << "\n";
  return out.str();
}

}  // namespace ptrain
