#pragma once
// JSON shapes of pins, events and alerts: what the admin API returns, what webhooks receive,
// and what the CLI reads. One place, so they never drift apart.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "storage/pin.hpp"

namespace regpin::proxy::pins {

// "2026-11-26T20:59:45.833Z"
std::string format_time(std::int64_t unix_ms);
// RFC 3339 ("2026-11-26T20:59:45Z", fractions and offsets allowed) or unix milliseconds;
// nullopt when neither.
std::optional<std::int64_t> parse_time(const std::string& s);

nlohmann::json pin_json(const storage::pin& p);
nlohmann::json event_json(const storage::pin_event& e);
// The webhook body for a re-point event: registry, repository, tag, pinned and upstream digests,
// policy, action, detected_at, summary, and the event id receivers de-duplicate on.
nlohmann::json alert_json(const storage::pin_event& e);

}  // namespace regpin::proxy::pins
