#pragma once
// A pin: the first digest seen for (registry, repository, tag, accept class).

#include <cstdint>
#include <optional>
#include <string>

#include "storage/digest.hpp"

namespace regpin::storage {

struct pin_key {
    std::string registry;    // "docker.io"
    std::string repository;  // "library/nginx" (normalised)
    std::string tag;         // "1.27"
    // Bit set of the modern manifest types the client accepted (see proxy/oci/media_types).
    // Upstreams answer a tag differently per Accept, so the class is part of the key.
    std::uint8_t accept_class = 0;

    friend bool operator==(const pin_key&, const pin_key&) = default;
};

struct pin {
    pin_key key;
    digest manifest_digest;
    std::string media_type;
    std::uint64_t size = 0;
    std::int64_t first_seen_ms = 0;
    std::int64_t last_verified_ms = 0;
};

}  // namespace regpin::storage
