#include "proxy/pins/policy.hpp"

#include <algorithm>

namespace regpin::proxy::pins {

namespace {

enum class token_kind : unsigned char { literal, one, star, double_star };

struct token {
    token_kind kind;
    char c = 0;
};

std::vector<token> tokenize(std::string_view pattern) {
    std::vector<token> out;
    out.reserve(pattern.size());
    for (std::size_t i = 0; i < pattern.size();) {
        if (pattern[i] == '*') {
            std::size_t j = i;
            while (j < pattern.size() && pattern[j] == '*') ++j;
            out.push_back({j - i == 1 ? token_kind::star : token_kind::double_star});
            i = j;
        } else {
            out.push_back(pattern[i] == '?' ? token{token_kind::one}
                                            : token{token_kind::literal, pattern[i]});
            ++i;
        }
    }
    return out;
}

// A star may match the empty run, so a reachable state before a star also reaches the state
// after it. One forward pass suffices because stars only lead forward.
void close_over_stars(const std::vector<token>& tokens, std::vector<char>& states) {
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (states[i] && tokens[i].kind != token_kind::literal && tokens[i].kind != token_kind::one)
            states[i + 1] = 1;
}

}  // namespace

namespace {

// Whether a rule's pattern names artifact tags: its tag part mentions "sha256-".
bool names_artifact_tags(std::string_view match) {
    auto colon = match.rfind(':');
    return colon != std::string_view::npos &&
           match.substr(colon + 1).find("sha256-") != std::string_view::npos;
}

}  // namespace

std::string_view to_string(policy_kind p) {
    switch (p) {
        case policy_kind::pin:
            return "pin";
        case policy_kind::follow:
            return "follow";
        case policy_kind::reject:
            return "reject";
        case policy_kind::artifact:
            return "artifact";
    }
    return "pin";
}

std::optional<policy_kind> parse_policy(std::string_view s) {
    if (s == "pin") return policy_kind::pin;
    if (s == "follow") return policy_kind::follow;
    if (s == "reject") return policy_kind::reject;
    return std::nullopt;
}

std::string_view to_string(repoint_action a) {
    switch (a) {
        case repoint_action::kept:
            return "kept";
        case repoint_action::followed:
            return "followed";
        case repoint_action::rejected:
            return "rejected";
        case repoint_action::updated:
            return "updated";
    }
    return "kept";
}

// A simulation of the pattern's NFA (state i = "the first i tokens matched"), one text
// character at a time: no backtracking, so "**a**a**a**b" costs the same as any other pattern
// of its length.
bool glob_match(std::string_view pattern, std::string_view text) {
    const auto tokens = tokenize(pattern);
    std::vector<char> states(tokens.size() + 1, 0), next(tokens.size() + 1, 0);
    states[0] = 1;
    close_over_stars(tokens, states);
    for (char c : text) {
        std::fill(next.begin(), next.end(), 0);
        bool any = false;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (!states[i]) continue;
            const auto& t = tokens[i];
            switch (t.kind) {
                case token_kind::literal:
                    if (c == t.c) next[i + 1] = 1, any = true;
                    break;
                case token_kind::one:
                    if (c != '/') next[i + 1] = 1, any = true;
                    break;
                case token_kind::star:
                    if (c != '/') next[i] = 1, any = true;
                    break;
                case token_kind::double_star:
                    next[i] = 1, any = true;
                    break;
            }
        }
        if (!any) return false;
        close_over_stars(tokens, next);
        states.swap(next);
    }
    return states[tokens.size()] != 0;
}

resolved_policy resolve_policy(const std::vector<policy_rule>& rules, std::string_view registry,
                               std::string_view repository, std::string_view tag,
                               std::chrono::seconds default_revalidate) {
    std::string text;
    text.reserve(registry.size() + repository.size() + tag.size() + 2);
    text.append(registry).append("/").append(repository).append(":").append(tag);
    const bool artifact = is_artifact_tag(tag);
    for (std::size_t i = 0; i < rules.size(); ++i) {
        if (artifact && !names_artifact_tags(rules[i].match)) continue;
        if (!glob_match(rules[i].match, text)) continue;
        return {rules[i].policy, rules[i].revalidate_after.value_or(default_revalidate), i};
    }
    return {artifact ? policy_kind::artifact : policy_kind::pin, default_revalidate,
            resolved_policy::npos};
}

bool is_artifact_tag(std::string_view tag) {
    constexpr std::string_view prefix = "sha256-";
    if (tag.substr(0, prefix.size()) != prefix || tag.size() < prefix.size() + 64) return false;
    auto hex = tag.substr(prefix.size(), 64);
    if (!std::all_of(hex.begin(), hex.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
        return false;
    auto suffix = tag.substr(prefix.size() + 64);
    return suffix.empty() || suffix == ".sig" || suffix == ".att" || suffix == ".sbom";
}

namespace {

constexpr std::size_t max_remembered = 32;

bool contains(const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

// Appends `s` unless present, keeping the last max_remembered.
void remember(std::vector<std::string>& v, const std::string& s) {
    if (contains(v, s)) return;
    v.push_back(s);
    if (v.size() > max_remembered) v.erase(v.begin());
}

}  // namespace

bool reverts(const storage::pin& p, std::string_view upstream_digest) {
    return p.state == pin_state::pending &&
           (upstream_digest == p.manifest_digest.str() || contains(p.decided, upstream_digest));
}

std::optional<repoint_decision> decide_repoint(policy_kind policy, const storage::pin& p,
                                               std::string_view upstream_digest) {
    if (upstream_digest == p.manifest_digest.str() || contains(p.decided, upstream_digest))
        return std::nullopt;
    repoint_decision d;
    d.alert = !contains(p.alerted, upstream_digest);
    switch (policy) {
        case policy_kind::pin:
            d.action = repoint_action::kept;
            d.new_state = pin_state::pending;
            d.pending_digest = std::string(upstream_digest);
            break;
        case policy_kind::follow:
            d.action = repoint_action::followed;
            d.new_state = pin_state::pinned;
            d.move_pin = true;
            break;
        case policy_kind::reject:
            d.action = repoint_action::rejected;
            d.new_state = pin_state::rejected;
            d.pending_digest = std::string(upstream_digest);
            break;
        case policy_kind::artifact:
            // Signatures and attestations move by design: recorded, never alerted.
            d.action = repoint_action::updated;
            d.new_state = pin_state::pinned;
            d.move_pin = true;
            d.alert = false;
            break;
    }
    // Already what the policy makes of this digest (checked again): nothing to record.
    bool same_pending = p.pending_digest && p.pending_digest->str() == d.pending_digest;
    if (!d.move_pin && p.state == d.new_state && same_pending) return std::nullopt;
    return d;
}

std::vector<policy_rule> rules_from(const std::vector<config::policy_rule>& rules) {
    std::vector<policy_rule> out;
    for (const auto& r : rules)
        out.push_back(
            {r.match, parse_policy(r.policy).value_or(policy_kind::pin), r.revalidate_after});
    return out;
}

storage::pin serve_digest(storage::pin p, const storage::digest& d, const storage::manifest& m,
                          std::int64_t now_ms) {
    p.manifest_digest = d;
    p.media_type = m.media_type;
    p.size = m.bytes.size();
    p.state = storage::pin_state::pinned;
    p.pending_digest.reset();
    p.last_verified_ms = now_ms;
    return p;
}

storage::pin decide(storage::pin p, const storage::digest& d, const storage::manifest& m,
                    std::int64_t now_ms) {
    if (p.pending_digest) remember(p.decided, p.pending_digest->str());
    remember(p.decided, p.manifest_digest.str());
    remember(p.decided, d.str());
    return serve_digest(std::move(p), d, m, now_ms);
}

storage::pin apply_repoint(storage::pin p, const repoint_decision& decision,
                           const storage::digest& upstream, const storage::manifest& m,
                           std::int64_t now_ms) {
    if (decision.move_pin) {
        p = serve_digest(std::move(p), upstream, m, now_ms);
    } else {
        if (p.pending_digest != upstream) p.pending_since_ms = now_ms;
        p.pending_digest = upstream;
        p.last_verified_ms = now_ms;
    }
    p.state = decision.new_state;
    if (decision.alert) remember(p.alerted, upstream.str());
    return p;
}

}  // namespace regpin::proxy::pins
