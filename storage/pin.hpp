#pragma once
// A pin: the digest regpin serves for (registry, repository, tag, accept class), its state,
// and the events that make up its history.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// "docker.io/library/nginx:1.27"
std::string display_name(const pin_key& key);

enum class pin_state : std::uint8_t {
    pinned,    // serving manifest_digest; nothing pending
    pending,   // serving manifest_digest; the upstream moved to pending_digest (policy pin)
    rejected,  // requests fail until an operator approves a digest (policy reject)
};
std::string_view to_string(pin_state s);
std::optional<pin_state> parse_pin_state(std::string_view s);

struct pin {
    pin_key key;
    digest manifest_digest;
    std::string media_type;
    std::uint64_t size = 0;
    std::int64_t first_seen_ms = 0;
    std::int64_t last_verified_ms = 0;
    pin_state state = pin_state::pinned;
    // The upstream's digest when it differs from the pin (states pending and rejected).
    std::optional<digest> pending_digest;
    std::int64_t pending_since_ms = 0;
    // Upstream digests already alerted as re-points of this pin (each is alerted once; every
    // re-point is recorded in the history). The last 32.
    std::vector<std::string> alerted;
    // Digests an operator decided about (approve, set): the upstream showing one of them
    // changes nothing. The last 32.
    std::vector<std::string> decided;
};

// What happened to a pin. Stored as its name (to_string), so the names never change.
enum class event_type : std::uint8_t {
    pinned,     // first sight: a pull pinned the tag
    repointed,  // the upstream (or a bundle) moved the tag; see pin_event::action
    reverted,   // the upstream moved back to the pinned digest: nothing pending any more
    approved,   // an operator moved the pin to its pending digest, or another one
    unpinned,   // an operator removed the pin; the next pull pins afresh
    set,        // an operator pinned the tag by hand
    imported,   // a bundle pinned the tag (air-gapped sites)
};
std::string_view to_string(event_type t);
std::optional<event_type> parse_event_type(std::string_view s);

// One entry of a pin's history. Also what alerts are made of.
struct pin_event {
    std::uint64_t id = 0;  // assigned by the store, increasing
    std::int64_t time_ms = 0;
    event_type type = event_type::pinned;
    pin_key key;
    std::string old_digest;    // may be empty
    std::string new_digest;    // may be empty
    std::string actor;         // "first-pull", "policy", "token:<name>"
    std::string policy;        // pin, follow, reject, or empty
    std::string action;        // repointed: kept, followed, rejected
    std::string summary_json;  // repointed: what changed (JSON object), else empty
    // The upstream URL whose answer named new_digest (one of the upstream's `urls`); empty
    // when no upstream did (an operator, an import) or the event predates mirrors.
    std::string source;
};

// A webhook delivery not yet acknowledged by its receiver.
struct outbox_entry {
    std::uint64_t id = 0;
    std::uint64_t event_id = 0;
    std::string target;  // webhook URL
    int attempts = 0;
    std::int64_t next_attempt_ms = 0;
};

}  // namespace regpin::storage
