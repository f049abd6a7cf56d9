#pragma once

#include <string>
#include <vector>

namespace ptrain::bench {

struct DataBenchOptions {
  std::vector<std::string> tokenizers;  // model directories; the byte tokenizer always runs
  std::vector<std::string> texts;       // text files making up the corpus tokenized
  int64_t corpus_bytes = 8 << 20;       // the corpus is repeated up to this size
  int64_t samples = 100000;             // packing: samples of Alpaca-like lengths
  int64_t sequence_len = 2048;
  int64_t prepare_rows = 20000;  // prepare: synthetic Alpaca rows built into a cache
  int threads = 0;               // 0: every core
};

// ptrain-bench data:
//   tokenize  MB/s of text encoded per tokenizer, 1 thread and `threads` threads (text split at
//             line boundaries), beside a memcpy of the same bytes;
//   pack      packing efficiency and seconds for `samples` samples with lengths drawn like
//             Alpaca's (log-normal, median 150 tokens, clipped to [20, 1000]) into rows of
//             sequence_len, beside one sample per row (efficiency) and a std::sort of the lengths
//             (time);
//   prepare   a whole prepared-dataset build (read, render, tokenize, split, pack, write, fsync)
//             of `prepare_rows` Alpaca rows with the byte tokenizer: rows/s and MB/s.
int run_data_bench(const DataBenchOptions& options);

}  // namespace ptrain::bench
