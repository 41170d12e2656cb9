#pragma once
// What the pin lifecycle tells the rest of regpin (metrics, logs, the webhook sender), and the
// outcomes of a pin check. Observers may be empty and must not block.

#include <functional>
#include <string>
#include <string_view>

#include "storage/pin.hpp"

namespace regpin::proxy::pins {

enum class check_outcome {
    unchanged,         // the upstream still answers the pinned digest
    repointed,         // the upstream moved: recorded (event, alert) and handled by policy
    already_recorded,  // moved to a digest this pin already recorded: no new event
    error,             // the upstream or the store failed; nothing changed
    no_pin,            // the key has no pin (any more)
};
// "unchanged", "repointed", ...: the metrics label and the admin API's "outcome".
std::string_view to_string(check_outcome o);

struct hooks {
    // A check ended (metrics: regpin_pin_checks_total{registry, outcome}).
    std::function<void(const std::string& registry, check_outcome outcome)> checked;
    // A stored re-point event (after the synced write): log, count, wake the webhook sender.
    std::function<void(const storage::pin_event&)> repointed;
    // Any other stored event (first pull, revert, approve, unpin, set): history only.
    std::function<void(const storage::pin_event&)> changed;
    // A pin serves, or awaits an operator about, `digest` (first sight, a re-point's new
    // digest, approve, set, import, and every check): its content should be held (closure.hpp).
    std::function<void(const storage::pin_key& key, const std::string& digest)> holds;
};

}  // namespace regpin::proxy::pins
