#include "parallel/fsdp_groups.h"

#include "core/error.h"

namespace ptrain {

FsdpGroups make_fsdp_groups(const std::shared_ptr<Communicator>& world, int shard_size,
                            const std::string& setting) {
  const int n = world->size(), rank = world->rank();
  PTRAIN_CHECK(shard_size >= 1 && n % shard_size == 0,
               "{}: {} ranks cannot be split into shard groups of {} (it must divide the number "
               "of ranks)",
               setting, n, shard_size);
  FsdpGroups groups;
  // Every rank takes part in both splits, in the same order, whatever its group sizes.
  if (shard_size == n) {
    groups.shard = world;
    return groups;
  }
  groups.shard = world->split(rank / shard_size, rank);
  auto replicate = world->split(rank % shard_size, rank);
  if (replicate->size() > 1) groups.replicate = std::move(replicate);
  return groups;
}

}  // namespace ptrain
