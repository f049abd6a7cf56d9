#include "cluster/coordinator_service.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <algorithm>
#include <chrono>

namespace ptrain {
namespace {

constexpr size_t kMaxText = 4096;
constexpr size_t kMaxName = 256;

bool is_name_field(const std::string& name) {
  return name == "job_id" || name == "launch_id" || name == "host" || name == "config_hash" ||
         name == "reason" || name == "checksum" || name == "cause";
}

// Compares without an early exit, so the time taken says nothing about the token.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace

std::string check_request_bounds(const google::protobuf::Message& request) {
  const google::protobuf::Descriptor* descriptor = request.GetDescriptor();
  const google::protobuf::Reflection* reflection = request.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(request, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    const size_t limit = is_name_field(field->name()) ? kMaxName : kMaxText;
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_STRING ||
        field->type() == google::protobuf::FieldDescriptor::TYPE_BYTES) {
      if (field->is_repeated()) return fmt::format("{}: unexpected repeated text", field->name());
      const std::string value = reflection->GetString(request, field);
      if (value.size() > limit)
        return fmt::format("{}.{} is {} bytes (at most {})", descriptor->name(), field->name(),
                           value.size(), limit);
    } else if (field->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      const int n = field->is_repeated() ? reflection->FieldSize(request, field) : 1;
      for (int i = 0; i < n; ++i) {
        const google::protobuf::Message& inner =
            field->is_repeated() ? reflection->GetRepeatedMessage(request, field, i)
                                 : reflection->GetMessage(request, field);
        if (std::string problem = check_request_bounds(inner); !problem.empty()) return problem;
      }
    }
  }
  return "";
}

CoordinatorService::CoordinatorService(JobState& job, std::string auth_token,
                                       std::shared_ptr<spdlog::logger> log)
    : job_(job),
      expected_authorization_(auth_token.empty() ? "" : "Bearer " + auth_token),
      log_(std::move(log)) {}

void CoordinatorService::shutdown() {
  shutting_down_ = true;
  job_.close();
}

template <typename Handler>
grpc::Status CoordinatorService::serve(grpc::ServerContext* context,
                                       const google::protobuf::Message& request, const char* method,
                                       Handler&& handler) {
  if (!expected_authorization_.empty()) {
    const auto& metadata = context->client_metadata();
    const auto found = metadata.find("authorization");
    const std::string given =
        found == metadata.end() ? "" : std::string(found->second.data(), found->second.size());
    if (!same_secret(given, expected_authorization_))
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          found == metadata.end()
                              ? "this coordinator needs 'authorization: Bearer <token>' metadata"
                              : "wrong token");
  }
  if (std::string problem = check_request_bounds(request); !problem.empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, problem);
  try {
    return handler();
  } catch (const std::exception& e) {
    log_->error("{} failed: {}", method, e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, fmt::format("{} failed: {}", method, e.what()));
  }
}

grpc::Status CoordinatorService::RegisterRank(grpc::ServerContext* context,
                                              const v1::RegisterRankRequest* request,
                                              v1::RegisterRankResponse* response) {
  return serve(context, *request, "RegisterRank",
               [&] { return job_.register_rank(*request, response); });
}

grpc::Status CoordinatorService::Heartbeat(grpc::ServerContext* context,
                                           const v1::HeartbeatRequest* request,
                                           v1::HeartbeatResponse* response) {
  return serve(context, *request, "Heartbeat", [&] { return job_.heartbeat(*request, response); });
}

grpc::Status CoordinatorService::ReportCheckpoint(grpc::ServerContext* context,
                                                  const v1::ReportCheckpointRequest* request,
                                                  v1::ReportCheckpointResponse*) {
  return serve(context, *request, "ReportCheckpoint",
               [&] { return job_.report_checkpoint(*request); });
}

grpc::Status CoordinatorService::ReportEvent(grpc::ServerContext* context,
                                             const v1::ReportEventRequest* request,
                                             v1::ReportEventResponse*) {
  return serve(context, *request, "ReportEvent", [&] { return job_.report_event(*request); });
}

grpc::Status CoordinatorService::GetJobStatus(grpc::ServerContext* context,
                                              const v1::GetJobStatusRequest* request,
                                              v1::JobStatus* response) {
  return serve(context, *request, "GetJobStatus", [&] {
    *response = job_.status(std::max(0, request->max_ranks()));
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::WatchJobStatus(grpc::ServerContext* context,
                                                const v1::WatchJobStatusRequest* request,
                                                grpc::ServerWriter<v1::JobStatus>* writer) {
  return serve(context, *request, "WatchJobStatus", [&] {
    const int interval_ms =
        request->min_interval_ms() <= 0 ? 500 : std::max(100, request->min_interval_ms());
    // A status at most every interval: whenever it changed, and every 2 s regardless (the
    // heartbeat ages move even when nothing else does).
    uint64_t seen = 0;
    auto written = std::chrono::steady_clock::time_point{};
    while (!shutting_down_ && !context->IsCancelled()) {
      const uint64_t version = job_.version();
      if (version != seen || std::chrono::steady_clock::now() - written > std::chrono::seconds(2)) {
        seen = version;
        written = std::chrono::steady_clock::now();
        if (!writer->Write(job_.status(std::max(0, request->max_ranks())))) break;
        job_.wait_until_closed(interval_ms / 1000.0);
      } else {
        job_.wait_for_change(seen, 1.0);
      }
    }
    return shutting_down_ ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator stops")
                          : grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::ListCheckpoints(grpc::ServerContext* context,
                                                 const v1::ListCheckpointsRequest* request,
                                                 v1::ListCheckpointsResponse* response) {
  return serve(context, *request, "ListCheckpoints", [&] {
    for (v1::Checkpoint& checkpoint : job_.checkpoints())
      *response->add_checkpoints() = std::move(checkpoint);
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::ListEvents(grpc::ServerContext* context,
                                            const v1::ListEventsRequest* request,
                                            v1::ListEventsResponse* response) {
  return serve(context, *request, "ListEvents", [&] {
    for (v1::Event& event : job_.events(request->after_id(), request->limit()))
      *response->add_events() = std::move(event);
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::GetMetrics(grpc::ServerContext* context,
                                            const v1::GetMetricsRequest* request,
                                            v1::GetMetricsResponse* response) {
  return serve(context, *request, "GetMetrics", [&] {
    for (v1::MetricPoint& point : job_.metrics(std::max(0, request->max_points())))
      *response->add_points() = std::move(point);
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::RequestCheckpoint(grpc::ServerContext* context,
                                                   const v1::RequestCheckpointRequest* request,
                                                   v1::RequestCheckpointResponse* response) {
  return serve(context, *request, "RequestCheckpoint", [&] {
    response->set_command_id(job_.request_command(v1::Command::CHECKPOINT, request->reason()).id());
    log_->info("checkpoint requested ({})", request->reason());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::RequestStop(grpc::ServerContext* context,
                                             const v1::RequestStopRequest* request,
                                             v1::RequestStopResponse* response) {
  return serve(context, *request, "RequestStop", [&] {
    response->set_command_id(job_.request_command(v1::Command::STOP, request->reason()).id());
    log_->info("stop requested ({})", request->reason());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::ReportLaunch(grpc::ServerContext* context,
                                              const v1::ReportLaunchRequest* request,
                                              v1::ReportLaunchResponse* response) {
  return serve(context, *request, "ReportLaunch", [&] {
    grpc::Status status = job_.report_launch(*request, response);
    if (status.ok())
      log_->info("launch {} ended: {}{}{}", request->launch_id(), request->cause(),
                 request->message().empty() ? "" : ": ", request->message());
    return status;
  });
}

}  // namespace ptrain
