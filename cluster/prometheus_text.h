// A job's status as Prometheus metrics: what the coordinator serves at /metrics
// (coordinator.metrics_listen), so a Prometheus server scrapes it and Grafana draws the job with
// no code of ours. docs/status.md lists the metrics.
//
// The text is the exposition format 0.0.4 (Content-Type "text/plain; version=0.0.4"): per metric
// a "# HELP" and a "# TYPE" line, then its samples. Every sample carries job_id="<job_id>"; the
// per-rank ones also rank="<n>" and host="<host>". Label values are escaped as the format asks
// (backslash, double quote, newline). Values round-trip: integers as integers, doubles in their
// shortest exact form, NaN as NaN. Unknown values (an eval loss before the first evaluation, an
// ETA not known yet, a checkpoint not yet taken) leave their metric out rather than report 0.
#pragma once

#include <string>

#include "ptrain/v1/coordinator.pb.h"

namespace ptrain {

std::string prometheus_text(const v1::JobStatus& status);

}  // namespace ptrain
