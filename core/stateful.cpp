#include "core/stateful.h"

#include <algorithm>

#include "core/error.h"

namespace ptrain {

void StatefulSet::add(std::string key, Stateful& piece) {
  PTRAIN_ASSERT(!key.empty(), "a state piece needs a key");
  PTRAIN_ASSERT(std::none_of(pieces_.begin(), pieces_.end(),
                             [&](const auto& entry) { return entry.first == key; }),
                "state key '{}' added twice", key);
  pieces_.emplace_back(std::move(key), &piece);
}

nlohmann::json StatefulSet::state() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, piece] : pieces_) out[key] = piece->state();
  return out;
}

void StatefulSet::restore(const nlohmann::json& state) {
  PTRAIN_CHECK(state.is_object(), "training state: expected an object of pieces, got {}",
               state.type_name());
  for (const auto& [key, piece] : pieces_)
    PTRAIN_CHECK(state.contains(key), "training state: '{}' is missing", key);
  for (const auto& item : state.items())
    PTRAIN_CHECK(std::any_of(pieces_.begin(), pieces_.end(),
                             [&](const auto& entry) { return entry.first == item.key(); }),
                 "training state: '{}' is not a piece of this job", item.key());
  for (const auto& [key, piece] : pieces_) piece->restore(state.at(key));
}

}  // namespace ptrain
