// The communicators of an FSDP job: parameters are sharded over a shard group and replicated
// across replica groups (HSDP). shard_size = world: plain FSDP (ZeRO-3, or ZeRO-2 without
// resharding after forward); shard_size = 1: plain data parallelism (every rank holds everything,
// gradients are all-reduced); 1 < shard_size < world: hybrid sharding, shards within groups of
// shard_size consecutive ranks (one node, typically), replicas across them.
//
// Gradients are reduce-scattered within the shard group, then all-reduced across the replica
// group, so every replica of a shard holds the same sum over all ranks.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace ptrain {

struct FsdpGroups {
  std::shared_ptr<Communicator> shard;      // ranks sharing one copy of the parameters
  std::shared_ptr<Communicator> replicate;  // ranks holding the same shard; null when alone
  int shard_size() const { return shard->size(); }
  int replicas() const { return replicate ? replicate->size() : 1; }
};

// Collective over `world`: shard group g holds ranks [g * shard_size, (g + 1) * shard_size); a
// replica group the ranks with the same rank % shard_size. UserError naming `setting` when
// shard_size does not divide the world (or is < 1). shard_size == world reuses `world`.
FsdpGroups make_fsdp_groups(const std::shared_ptr<Communicator>& world, int shard_size,
                            const std::string& setting);

}  // namespace ptrain
