// Checkpoint tensors that have a shape and a dtype but no memory yet.
//
// [Note: deferred weights]
// A model built with ModelOptions::defer_weights registers every checkpoint tensor (embeddings,
// norms, projection weights or NF4 bytes, biases, lm_head) in its real shape and dtype, but its
// storage is a private mapping of address space with no access: never resident, never charged,
// and any read or write of it faults, so a tensor used before it is loaded can never pass for
// zeros. Loading a tensor (the model's
// set_tensor, a projection's set_weight or set_nf4) first gives it storage of its own, keeping
// the tensor's identity (set_data), so the registry and every handle stay valid.
//
// The sharded trainer loads, shards and releases one unit at a time this way, so no rank ever
// holds more than one unit of the model in full (what PyTorch FSDP reaches with meta-device
// init; a libtorch meta tensor cannot take CPU storage through set_data, hence this form).
#pragma once

#include <torch/torch.h>

namespace ptrain {

// A CPU tensor of `shape` and `dtype` over address space that cannot be touched.
at::Tensor deferred_tensor(at::IntArrayRef shape, at::ScalarType dtype);

// Whether `t` is (still) a deferred tensor.
bool is_deferred(const at::Tensor& t);

// Gives a deferred tensor uninitialised storage of its own (same shape, dtype, identity); does
// nothing to any other tensor.
void allocate_if_deferred(const at::Tensor& t);

}  // namespace ptrain
