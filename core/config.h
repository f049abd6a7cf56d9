// The job configuration: Axolotl-style YAML plus ptrain's own nested sections.
//
// JobConfig holds typed values; ConfigSchema (config_schema.h) binds every YAML key to one member
// with its type, range and documentation, and load_config() is the only way a file becomes a
// JobConfig: unknown keys, wrong types and out-of-range values are UserErrors naming the file, line
// and key. The resolved config (every key, defaults included, in schema order) is what gets written
// next to the outputs and hashed, so two runs with the same hash trained with the same settings.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ptrain {

struct DatasetConfig {
  std::string path;
  std::string type = "alpaca";  // alpaca | chat_template | completion | sharegpt | pretokenized
  std::string split = "train";
  std::string field_messages = "messages";        // chat_template rows
  std::string message_field_role = "role";        // chat_template: a message's role key
  std::string message_field_content = "content";  // chat_template: a message's text key
  std::string field = "text";                     // completion rows
  double weight = 1.0;                            // times each training row is used per epoch
  std::string dtype = "uint16";                   // pretokenized: uint16 | uint32
};

struct CommConfig {
  std::string backend = "auto";       // auto | mpi | nccl
  double collective_timeout = 600.0;  // seconds before the watchdog aborts a stuck collective
};

// FSDP: how parameters, gradients and optimizer state are sharded over the ranks.
struct FsdpConfig {
  std::string sharding = "full";         // full (ZeRO-3) | grad_op (ZeRO-2) | none (data parallel)
  int64_t hybrid_shard_size = 0;         // shard within groups of this many ranks; 0: all ranks
  bool reshard_after_forward = true;     // sharding full: free gathered units after forward
  bool reduce_every_micro_batch = true;  // false: reduce gradients once per optimizer step
  std::string reduce_dtype = "fp32";     // fp32 | bf16: dtype of the gradient reduce-scatter
};

// Sharded checkpoints (docs/checkpoints.md); when to save is save_steps / saves_per_epoch.
struct CheckpointConfig {
  bool save_frozen = false;  // also save the frozen weights' shards (the base of LoRA/QLoRA)
  int64_t keep_last = 0;     // keep the newest K committed checkpoints; 0: keep all
  bool async = false;        // write in the background while training continues
};

// The job's coordinator (docs/coordinator.md): with no address, rank 0 runs it in-process.
struct CoordinatorConfig {
  std::string address;                 // host:port of a running coordinator; "": rank 0 runs one
  std::string listen = "127.0.0.1:0";  // where the embedded coordinator listens (port 0: any)
  std::string job_id;                  // the job's name on the coordinator; "": output_dir's name
  std::string auth_token;              // the bearer token every RPC must carry; "": none
  std::string auth_token_file;         // or a file holding it (first line)
  std::string tls_cert, tls_key;       // the embedded coordinator's certificate chain and key (PEM)
  std::string tls_client_ca;           // embedded coordinator: require client certificates from it
  std::string tls_ca;                  // ranks: trust this CA for the coordinator (enables TLS)
  std::string tls_client_cert, tls_client_key;  // ranks: present this certificate (mTLS)
  std::string metrics_listen;       // embedded coordinator: Prometheus /metrics; "": off
  double heartbeat_interval = 1.0;  // seconds between a rank's heartbeats
  double heartbeat_timeout = 30.0;  // seconds of silence before a rank is shown lost
  double rpc_timeout = 5.0;         // the deadline of every call
  double commit_timeout = 30.0;     // how long a commit waits for the coordinator to record it
};

struct LoggingConfig {
  std::string level = "info";     // trace | debug | info | warn | error
  std::string console = "rank0";  // rank0 | all | none
};

struct JobConfig {
  // Model and adapter.
  std::string base_model;
  bool load_in_4bit = false;
  std::string adapter;  // "" (full training) | lora | qlora
  int64_t lora_r = 8;
  double lora_alpha = 16.0;
  double lora_dropout = 0.05;
  bool lora_target_linear = false;
  std::vector<std::string> lora_target_modules;
  std::vector<std::string> lora_modules_to_save;
  bool peft_use_rslora = false;

  // Data.
  std::vector<DatasetConfig> datasets;
  std::string dataset_prepared_path;
  double val_set_size = 0.0;
  int64_t sequence_len = 2048;
  bool sample_packing = false;
  bool pad_to_sequence_len = false;
  bool train_on_inputs = false;
  std::string chat_template = "tokenizer_default";  // tokenizer_default | chatml | llama3 | llama2
  std::string excess_length_strategy = "drop";      // drop | truncate
  bool skip_invalid_rows = false;
  int64_t sample_packing_group_size = 100000;

  // Optimisation.
  int64_t micro_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;
  int64_t num_epochs = 1;
  int64_t max_steps = 0;  // 0: run num_epochs
  std::string optimizer = "adamw_torch";
  std::string lr_scheduler = "cosine";
  double learning_rate = 2e-4;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  int64_t max_nonfinite_steps = 3;  // consecutive skipped non-finite steps that end the job
  bool bf16 = true;
  bool gradient_checkpointing = false;

  // Bookkeeping.
  std::string output_dir = "./outputs";
  int64_t logging_steps = 1;
  int64_t eval_steps = 0;
  int64_t save_steps = 0;
  int64_t saves_per_epoch = 0;
  std::string resume_from_checkpoint;
  int64_t seed = 42;
  int64_t threads = 0;  // intra-op threads per rank; 0: cores on this host / ranks on this host
  std::string device = "auto";  // auto | cpu | cuda

  FsdpConfig fsdp;
  CommConfig comm;
  CheckpointConfig checkpoint;
  CoordinatorConfig coordinator;
  LoggingConfig logging;
};

// A loaded, validated configuration and what identifies it.
struct ResolvedConfig {
  JobConfig job;
  std::string source;                 // the file it came from, or "<defaults>"
  std::string resolved_yaml;          // every key, defaults included, in schema order
  std::string hash;                   // 16 hex digits of XXH3-64 over resolved_yaml
  std::vector<std::string> warnings;  // e.g. Axolotl keys that ptrain ignores
};

// Loads `path` (empty: the embedded defaults), applies `overrides` ("dotted.key=yaml-value", as
// given to --set) in order, validates every key and the relations between keys. Throws UserError
// listing every problem found, each naming the file:line (or the --set flag) and the key: besides
// unknown keys, wrong types and ranges, a key with no value (`key:`; `key: null` keeps the
// default) and a second YAML document. A directory or unreadable path is a UserError naming it.
ResolvedConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Parses YAML text as if it were the file `source_name` (tests, embedded configs).
ResolvedConfig load_config_text(const std::string& yaml_text, const std::string& source_name,
                                const std::vector<std::string>& overrides = {});

// Every key of `config.resolved_yaml` (dotted inside sections: "fsdp.sharding") with its value as
// one line of YAML flow text ("[a, b]", "{path: x, type: alpaca}" for list items): what a
// checkpoint records to tell a harmless config change from one that invalidates it.
std::map<std::string, std::string> config_values(const ResolvedConfig& config);

// Writes `<dir>/config.resolved.yaml` (with the hash in a comment header) atomically.
std::string write_resolved_config(const ResolvedConfig& config, const std::string& dir);

}  // namespace ptrain
