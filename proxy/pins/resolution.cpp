#include "proxy/pins/resolution.hpp"

#include "proxy/oci/manifest.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/pins/classes.hpp"
#include "proxy/pins/views.hpp"

namespace regpin::proxy::pins {

using nlohmann::json;

std::optional<storage::pin> pin_for_nodes(const std::vector<storage::pin>& tag_pins) {
    auto pick = pick_for_class(tag_pins, oci::accepts_all);
    if (pick.answer || !pick.others) return pick.answer;
    return pick.others->serve;  // offline: no first sight can prefer an index
}

resolved_or_error resolve_pin(const storage::pin& p, const storage::manifest* m,
                              const std::string& platform) {
    resolution r{p, {}, std::nullopt};
    std::optional<oci::manifest_refs> refs;
    if (m) refs = oci::read_manifest(m->media_type, m->bytes);
    if (refs && refs->is_index)
        for (const auto& c : refs->children)
            if (!c.platform.empty() && !oci::is_attestation(c))
                r.platforms.push_back({c.platform, c.digest, c.media_type});
    if (!platform.empty()) {
        if (!refs || !refs->is_index) {
            // One image: whatever platform it is, it is what every node gets.
            r.for_platform = platform_digest{platform, p.manifest_digest.str(), p.media_type};
        } else {
            for (const auto& pd : r.platforms)
                // "linux/arm64" matches "linux/arm64/v8" as containerd's matcher does.
                if (pd.platform == platform || pd.platform.rfind(platform + "/", 0) == 0) {
                    r.for_platform = pd;
                    break;
                }
            if (!r.for_platform) {
                std::string has;
                for (const auto& pd : r.platforms) has += (has.empty() ? "" : ", ") + pd.platform;
                return {std::nullopt, storage::display_name(p.key) + " (" +
                                          p.manifest_digest.str() + ") has no image for " +
                                          platform + "; it has " + (has.empty() ? "none" : has)};
            }
        }
    }
    return {std::move(r), {}};
}

std::string rejected_reason(const storage::pin& p) {
    return storage::display_name(p.key) + " is rejected by policy: the upstream moved it from " +
           p.manifest_digest.str() + " to " +
           (p.pending_digest ? p.pending_digest->str() : std::string()) +
           "; an operator must approve a digest (regpin pins approve)";
}

std::string pinned_reference(const storage::pin& p) {
    return storage::display_name(p.key) + "@" + p.manifest_digest.str();
}

json resolution_json(const resolution& r, std::string_view policy) {
    const auto& p = r.pin;
    json j = {{"reference", storage::display_name(p.key)},
              {"registry", p.key.registry},
              {"repository", p.key.repository},
              {"tag", p.key.tag},
              {"digest", p.manifest_digest.str()},
              {"media_type", p.media_type},
              {"state", std::string(storage::to_string(p.state))},
              {"policy", std::string(policy)},
              {"pinned_reference", pinned_reference(p)},
              {"upstream_digest", p.pending_digest ? json(p.pending_digest->str()) : json()},
              {"pending_since", p.pending_digest ? json(format_time(p.pending_since_ms)) : json()},
              {"first_seen", format_time(p.first_seen_ms)},
              {"last_verified", format_time(p.last_verified_ms)},
              {"platforms", json::array()}};
    for (const auto& pd : r.platforms)
        j["platforms"].push_back(
            {{"platform", pd.platform}, {"digest", pd.digest}, {"media_type", pd.media_type}});
    if (r.for_platform)
        j["platform"] = {{"platform", r.for_platform->platform},
                         {"digest", r.for_platform->digest},
                         {"media_type", r.for_platform->media_type}};
    return j;
}

}  // namespace regpin::proxy::pins
