// CoordinatorService: the ptrain.v1.Coordinator gRPC service over a JobState.
//
// The boundary of the coordinator: each handler authenticates the call (the bearer token, when
// one is set, compared in constant time), bounds the request (every string at most 4 KiB, names
// and hosts at most 256 bytes; INVALID_ARGUMENT otherwise, nothing changed), hands it to the
// JobState and answers a grpc::Status; no exception escapes a handler (an unexpected one is
// INTERNAL and logged). Nothing from a request is ever used as a path.
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <memory>
#include <string>

#include "cluster/job_state.h"
#include "ptrain/v1/coordinator.grpc.pb.h"

namespace ptrain {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  CoordinatorService(JobState& job, std::string auth_token, std::shared_ptr<spdlog::logger> log);

  // Ends every WatchJobStatus stream (server shutdown).
  void shutdown();

  grpc::Status RegisterRank(grpc::ServerContext* context, const v1::RegisterRankRequest* request,
                            v1::RegisterRankResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext* context,
                                const v1::ReportCheckpointRequest* request,
                                v1::ReportCheckpointResponse* response) override;
  grpc::Status ReportEvent(grpc::ServerContext* context, const v1::ReportEventRequest* request,
                           v1::ReportEventResponse* response) override;
  grpc::Status GetJobStatus(grpc::ServerContext* context, const v1::GetJobStatusRequest* request,
                            v1::JobStatus* response) override;
  grpc::Status WatchJobStatus(grpc::ServerContext* context,
                              const v1::WatchJobStatusRequest* request,
                              grpc::ServerWriter<v1::JobStatus>* writer) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const v1::ListCheckpointsRequest* request,
                               v1::ListCheckpointsResponse* response) override;
  grpc::Status ListEvents(grpc::ServerContext* context, const v1::ListEventsRequest* request,
                          v1::ListEventsResponse* response) override;
  grpc::Status GetMetrics(grpc::ServerContext* context, const v1::GetMetricsRequest* request,
                          v1::GetMetricsResponse* response) override;
  grpc::Status RequestCheckpoint(grpc::ServerContext* context,
                                 const v1::RequestCheckpointRequest* request,
                                 v1::RequestCheckpointResponse* response) override;
  grpc::Status RequestStop(grpc::ServerContext* context, const v1::RequestStopRequest* request,
                           v1::RequestStopResponse* response) override;
  grpc::Status ReportLaunch(grpc::ServerContext* context, const v1::ReportLaunchRequest* request,
                            v1::ReportLaunchResponse* response) override;

 private:
  // Authenticates and bounds the request, then runs `handler`, turning exceptions into INTERNAL.
  template <typename Handler>
  grpc::Status serve(grpc::ServerContext* context, const google::protobuf::Message& request,
                     const char* method, Handler&& handler);

  JobState& job_;
  std::string expected_authorization_;  // "Bearer <token>", or "" for none
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> shutting_down_{false};
};

// The request's bounds (see the class comment): "" when it keeps them, else what is wrong.
std::string check_request_bounds(const google::protobuf::Message& request);

}  // namespace ptrain
