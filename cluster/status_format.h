// A job's status as people and scripts read it: the table ptrain-status prints (and redraws under
// --watch) and the status as one line of JSON. Pure functions of their arguments: no I/O and no
// clock (every age is measured against status.now_unix_s, the coordinator's clock, so a client's
// skewed clock never shows a rank as lost).
//
// The table is plain text in UTF-8: the bar, the sparkline and the dashes are one column wide
// each; with `color` it adds ANSI colour sequences (never counted as columns). Every line fits in
// options.width columns: what does not fit is cut with "…". Values that are NaN (a non-finite
// loss, no evaluation yet, an unknown ETA) never break the layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ptrain/v1/coordinator.pb.h"

namespace ptrain {

struct StatusFormatOptions {
  int width = 100;     // terminal columns; narrower than 60 is laid out as 60 and cut
  bool color = false;  // ANSI colours: the state, LOST ranks, warning and error events
  int max_ranks = 16;  // rank rows shown (lost ranks first); the rest are one "... N more" line
};

// The status as a table: the job (id, state, step/total with a progress bar, epoch, loss with a
// sparkline of `history`'s losses, eval loss, learning rate, tokens/s, MFU, ETA, world), the
// ranks' health, the attempts, the last checkpoint, the recent events and the pending commands.
// `history` is GetMetrics' answer, by step (empty: no sparkline). Ends with a newline.
std::string format_status_table(const v1::JobStatus& status,
                                const std::vector<v1::MetricPoint>& history,
                                const StatusFormatOptions& options);

// The status as one line of JSON (protobuf's JSON mapping): field names as in the .proto, every
// field present (zeros too), enums by name, int64 values as JSON strings, NaN as "NaN".
std::string status_json(const v1::JobStatus& status);

// "0.4s", "42s", "3m07s", "1h02m", "2d03h"; "—" for NaN, infinite or negative seconds.
std::string format_duration(double seconds);

// "512 B", "1.5 KiB", "3.2 GiB" (binary units).
std::string format_bytes(int64_t bytes);

// A bar of `cells` columns filled to `fraction` (clamped to [0, 1]) in eighths of a cell: full
// blocks "█", one partial block ("▏" for 1/8 ... "▉" for 7/8, rounded down), then spaces.
std::string progress_bar(double fraction, int cells);

// `values` as a line of at most `cells` blocks "▁▂▃▄▅▆▇█", one per value or, for more values
// than cells, one per run of neighbouring values (their mean). The lowest value is "▁", the
// highest "█", others linear between (rounded to the nearest level); equal values are all "▄".
// Non-finite values are skipped; a cell with none is a space.
std::string sparkline(const std::vector<double>& values, int cells);

}  // namespace ptrain
