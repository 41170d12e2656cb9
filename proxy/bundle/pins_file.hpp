#pragma once
// regpin-pins.json, the provenance a bundle carries: every pin with its state, pending digest
// and the digests an operator decided about, so an air-gapped site reproduces what the
// connected site decided (a tag rejected there is rejected here). Reading validates every key
// and refuses the whole file with a message naming the entry. Pure; thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "storage/pin.hpp"

namespace regpin::proxy::bundle {

struct bundled_pin {
    storage::pin_key key;
    storage::digest digest;
    std::string media_type;
    std::int64_t first_seen_ms = 0;
    storage::pin_state state = storage::pin_state::pinned;
    std::optional<storage::digest> pending_digest;  // set exactly for pending and rejected
    std::int64_t pending_since_ms = 0;
    std::vector<std::string> decided;  // digests an operator decided about
};

// The entry export writes for `p` (pins::pin_json and the fields read back here).
nlohmann::json pins_file_entry(const storage::pin& p);

// Reads regpin-pins.json. Refuses (std::runtime_error, "regpin-pins.json: pins[3]
// (docker.io/library/x:1): ...") any entry with a missing or malformed field: a registry that is
// not a host name, a repository or tag that is not valid (or not normalised: Docker Hub's
// "nginx" must be written "library/nginx"), a NUL anywhere, a digest that does not parse, an
// unknown state, a pending digest missing under pending or rejected (or present under pinned),
// an accept class outside 0..15, or the same key twice.
std::vector<bundled_pin> read_pins_file(std::string_view text);

}  // namespace regpin::proxy::bundle
