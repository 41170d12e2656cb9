#pragma once
// Durable tag -> digest pins. The one piece of state that must never be lost or silently
// overwritten: every write is synced before it returns. Implementations: rocksdb_pin_store
// (single instance); a consensus-backed store for several replicas later.

#include <optional>
#include <vector>

#include "storage/errors.hpp"
#include "storage/pin.hpp"

namespace regpin::storage {

class pin_store {
public:
    virtual ~pin_store() = default;

    // The pin for `key`, or nullopt if the tag was never seen. Thread-safe.
    [[nodiscard]] virtual result<std::optional<pin>> find(const pin_key& key) const = 0;

    // Records `candidate` only if no pin exists yet (first writer wins), synced.
    // Returns the pin that holds after the call: `candidate`, or the older one. Thread-safe.
    // Blocks on fsync: call it off the network threads.
    [[nodiscard]] virtual result<pin> create_if_absent(const pin& candidate) = 0;

    // Every pin of one repository (all tags and accept classes), in key order.
    [[nodiscard]] virtual result<std::vector<pin>> list_repository(
        const std::string& registry, const std::string& repository) const = 0;
};

}  // namespace regpin::storage
