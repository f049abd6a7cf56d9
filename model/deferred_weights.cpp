#include "model/deferred_weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <c10/util/strides.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace ptrain {
namespace {

struct Region {
  void* base;
  size_t bytes;
};

// The storage's deleter: also what marks a storage as deferred.
void unmap_region(void* context) {
  auto* region = static_cast<Region*>(context);
  ::munmap(region->base, region->bytes);
  delete region;
}

}  // namespace

at::Tensor deferred_tensor(at::IntArrayRef shape, at::ScalarType dtype) {
  const int64_t numel = c10::multiply_integers(shape);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGE_SIZE));
  const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  const size_t bytes = std::max(page, (nbytes + page - 1) / page * page);
  void* base =
      ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    throw RuntimeFailure(
        fmt::format("cannot reserve address space for a deferred tensor of {} "
                    "bytes: {}",
                    nbytes, std::strerror(errno)));
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes,
                       c10::DataPtr(base, new Region{base, bytes}, &unmap_region, at::kCPU),
                       /*allocator=*/nullptr, /*resizable=*/false);
  return at::empty({0}, torch::dtype(dtype))
      .set_(storage, 0, shape, c10::contiguous_strides(shape));
}

bool is_deferred(const at::Tensor& t) {
  return t.defined() && t.has_storage() && t.storage().data_ptr().get_deleter() == &unmap_region;
}

void allocate_if_deferred(const at::Tensor& t) {
  if (!is_deferred(t)) return;
  torch::NoGradGuard no_grad;
  at::Tensor(t).set_data(at::empty(t.sizes(), t.options()));
}

}  // namespace ptrain
