#pragma once
// Pin policies as pure functions: which policy a tag falls under, and what a re-point (the
// upstream answering another digest than the pin) does to the pin under that policy.
// No I/O; every function is thread-safe.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "storage/manifest_store.hpp"
#include "storage/pin.hpp"

namespace regpin::proxy::pins {

// `artifact` is built in, never configured: the policy of signature and attestation tags
// (is_artifact_tag) that no rule names explicitly.
enum class policy_kind { pin, follow, reject, artifact };

// "pin", "follow", "reject", "artifact".
std::string_view to_string(policy_kind p);
// The inverse of to_string (exact, lower case); nullopt for anything else.
std::optional<policy_kind> parse_policy(std::string_view s);

struct policy_rule {
    std::string match;  // glob over "registry/repository:tag", see glob_match
    policy_kind policy = policy_kind::pin;
    std::optional<std::chrono::seconds> revalidate_after;  // nullopt: the default
};

// Whole-string glob match. In `pattern`: "**" matches any run of characters including '/',
// '*' any run without '/', '?' one character other than '/'; three or more '*' in a row act as
// "**"; every other character (including '[', '\\') is literal. Runs in O(|pattern| * |text|)
// time and O(|pattern|) space, whatever the input.
// Examples over "docker.io/library/nginx:1.27": "docker.io/library/*:*", "docker.io/**",
// "**:1.27" match; "docker.io/*:*" and "docker.io/library/nginx" do not (a pattern names the
// tag too: end it with ":*" or "**" to match every tag).
bool glob_match(std::string_view pattern, std::string_view text);

struct resolved_policy {
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    policy_kind policy = policy_kind::pin;
    std::chrono::seconds revalidate_after{0};
    std::size_t rule_index = npos;  // the rule that matched, npos for the default
};

// Tags that move by design whenever something is signed or attested: cosign's
// "sha256-<64 hex>.sig", ".att" and ".sbom", and the OCI 1.1 referrers fallback "sha256-<64 hex>".
bool is_artifact_tag(std::string_view tag);

// The first rule whose `match` globs "registry/repository:tag" wins; no match gives
// {pin, default_revalidate, npos}. A matching rule without revalidate_after takes the default.
// An artifact tag (is_artifact_tag) is matched only by rules that name artifact tags (the tag
// part of `match`, after its last ':', contains "sha256-", e.g. "ghcr.io/**:sha256-*.sig"); no
// such match gives {artifact, default_revalidate, npos}: a catch-all rule such as "**" or
// "docker.io/**:*" never turns signature updates into re-point alerts.
resolved_policy resolve_policy(const std::vector<policy_rule>& rules, std::string_view registry,
                               std::string_view repository, std::string_view tag,
                               std::chrono::seconds default_revalidate);

using storage::pin_state;

enum class repoint_action { kept, followed, rejected, updated };
// "kept", "followed", "rejected", "updated" (pin_event::action; updated: an artifact tag).
std::string_view to_string(repoint_action a);

struct repoint_decision {
    repoint_action action = repoint_action::kept;
    pin_state new_state = pin_state::pending;
    // follow: the pin now serves the upstream digest (history keeps the old one).
    bool move_pin = false;
    // The pin's pending digest after the decision: the upstream digest for pin and reject
    // (what an operator would approve), empty for follow (nothing pending).
    std::string pending_digest;
    // Whether the re-point is alerted (webhooks): not for a digest this pin alerted before.
    // Its event is recorded either way: no pin changes without one.
    bool alert = true;
};

// What the upstream answering `upstream_digest` does to pin `p` under `policy` (the table in
// the README, "What a check does"):
//   pin    -> kept: keep serving the pinned digest; state pending, upstream digest pending.
//   follow -> followed: the pin moves to the upstream digest; state pinned.
//   reject -> rejected: state rejected (requests fail until an operator approves a digest).
//   artifact -> updated: the pin moves to the upstream digest, state pinned, never alerted.
// nullopt when nothing changes: the upstream shows the pinned digest or one an operator
// decided about (p.decided: the decision holds), or the pin already is what the policy makes
// of this digest (the same pending digest again). A pending pin whose upstream comes back is
// reverts(), not a re-point.
std::optional<repoint_decision> decide_repoint(policy_kind policy, const storage::pin& p,
                                               std::string_view upstream_digest);

// Whether the upstream answering `upstream_digest` puts `p`, pending, back to pinned: the
// upstream shows the pinned digest again, or one an operator decided about. A rejected pin
// stays rejected until an operator decides.
bool reverts(const storage::pin& p, std::string_view upstream_digest);

// The config's rules, parsed (config validation already refused unknown policy names).
std::vector<policy_rule> rules_from(const std::vector<config::policy_rule>& rules);

// The configuration's policies, ready to answer for a pin key: the rules of `policies` and the
// default revalidate_after of `pin_checks`.
class policy_table {
public:
    explicit policy_table(const config::settings& s)
        : rules_(rules_from(s.policies)), default_revalidate_(s.checks.revalidate_after) {}
    resolved_policy for_key(const storage::pin_key& k) const {
        return resolve_policy(rules_, k.registry, k.repository, k.tag, default_revalidate_);
    }

private:
    std::vector<policy_rule> rules_;
    std::chrono::seconds default_revalidate_;
};

// `p` now serves digest `d` (manifest `m`): state pinned, nothing pending, verified at `now_ms`.
// What a followed re-point, a revert and a first import do to a pin.
storage::pin serve_digest(storage::pin p, const storage::digest& d, const storage::manifest& m,
                          std::int64_t now_ms);

// An operator's decision (approve, set): `p` serves `d` like serve_digest, and the digests the
// operator decided about (the chosen one, the one served before, the pending one) join
// p.decided: until the upstream shows another digest, checks leave the pin as decided.
storage::pin decide(storage::pin p, const storage::digest& d, const storage::manifest& m,
                    std::int64_t now_ms);

// `p` after the upstream (or an imported bundle) re-pointed it to `upstream` (manifest `m`) and
// the policy decided `decision`: follow moves the pin; pin and reject keep it with `upstream`
// pending (pending_since kept while the same digest stays pending). An alerted re-point adds
// `upstream` to p.alerted, which keeps the last 32.
storage::pin apply_repoint(storage::pin p, const repoint_decision& decision,
                           const storage::digest& upstream, const storage::manifest& m,
                           std::int64_t now_ms);

}  // namespace regpin::proxy::pins
