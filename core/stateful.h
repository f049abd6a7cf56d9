// Resumable state, composed by key.
//
// A piece of training state that an exact resume needs (the sampler's position, a generator's
// state, counters) implements Stateful: state() returns it as a JSON value, and restore() puts
// exactly that value back, so that what runs after restore(state()) is what would have run
// anyway. StatefulSet composes pieces by key ({"sampler": ..., "model": ...}) and is Stateful
// itself, so sets nest. Tensors too large for JSON (flat-parameter shards, optimizer moments) are
// not Stateful values: the checkpoint writes them as tensors beside this document.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace ptrain {

class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual nlohmann::json state() const = 0;
  // UserError naming what is wrong when `state` was not written by state() of this kind of piece.
  virtual void restore(const nlohmann::json& state) = 0;
};

// Pieces by key, in the order added; borrowed, never owned (each must outlive the set).
class StatefulSet final : public Stateful {
 public:
  // `key` must be new and non-empty (an internal error otherwise).
  void add(std::string key, Stateful& piece);

  // {key: piece.state(), ...}.
  nlohmann::json state() const override;
  // Restores every piece from its key. UserError naming the key when `state` is not an object,
  // lacks a registered key or holds one that is not registered; nothing is restored then.
  void restore(const nlohmann::json& state) override;

 private:
  std::vector<std::pair<std::string, Stateful*>> pieces_;
};

}  // namespace ptrain
