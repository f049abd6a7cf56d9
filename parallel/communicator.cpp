#include "parallel/communicator.h"

#include "core/error.h"

namespace ptrain {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

CommBuffer CommBuffer::slice(int64_t offset, int64_t count) const {
  PTRAIN_ASSERT(offset >= 0 && count >= 0 && offset + count <= numel,
                "slice [{}, {}) of a {}-element buffer", offset, offset + count, numel);
  CommBuffer out = *this;
  out.data = static_cast<char*>(data) + offset * element_size();
  out.numel = count;
  return out;
}

void check_reduction(const char* collective, const CommBuffer& buffer, ReduceOp op) {
  PTRAIN_CHECK(op != ReduceOp::kAvg || c10::isFloatingType(buffer.dtype),
               "{}: avg is defined for floating-point buffers, not {}", collective,
               c10::toString(buffer.dtype));
}

void check_all_gather_shapes(const Communicator& comm, const CommBuffer& out,
                             const CommBuffer& in) {
  PTRAIN_CHECK(out.dtype == in.dtype, "all_gather: output is {} but input is {}",
               c10::toString(out.dtype), c10::toString(in.dtype));
  PTRAIN_CHECK(
      out.numel == in.numel * comm.size(),
      "all_gather on '{}': output has {} elements, expected {} = {} ranks x {} input elements",
      comm.name(), out.numel, in.numel * comm.size(), comm.size(), in.numel);
}

void check_reduce_scatter_shapes(const Communicator& comm, const CommBuffer& out,
                                 const CommBuffer& in, ReduceOp op) {
  PTRAIN_CHECK(out.dtype == in.dtype, "reduce_scatter: output is {} but input is {}",
               c10::toString(out.dtype), c10::toString(in.dtype));
  PTRAIN_CHECK(in.numel == out.numel * comm.size(),
               "reduce_scatter on '{}': input has {} elements, expected {} = {} ranks x {} output "
               "elements",
               comm.name(), in.numel, out.numel * comm.size(), comm.size(), out.numel);
  check_reduction("reduce_scatter", in, op);
}

std::string broadcast_string(Communicator& comm, const std::string& text, int root) {
  int64_t size = comm.rank() == root ? static_cast<int64_t>(text.size()) : 0;
  comm.broadcast(comm_buffer(&size, 1), root);
  std::string out = comm.rank() == root ? text : std::string(static_cast<size_t>(size), '\0');
  if (size > 0) comm.broadcast(comm_buffer(reinterpret_cast<uint8_t*>(out.data()), size), root);
  return out;
}

}  // namespace ptrain
