#include "proxy/bundle/pins_file.hpp"

#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "proxy/oci/reference.hpp"
#include "proxy/pins/views.hpp"

namespace regpin::proxy::bundle {

using nlohmann::json;

namespace {

constexpr std::size_t max_decided = 32;

class entry_reader {
public:
    entry_reader(const json& j, std::size_t index)
        : j_(j), where_("pins[" + std::to_string(index) + "]") {
        if (!j.is_object()) fail("is not an object");
    }

    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("regpin-pins.json: " + where_ + ": " + why);
    }
    void name(const std::string& reference) { where_ += " (" + reference + ")"; }

    std::string text(const char* key, bool required = true) const {
        if (!j_.contains(key) || j_[key].is_null()) {
            if (required) fail(std::string("has no \"") + key + "\"");
            return {};
        }
        if (!j_[key].is_string()) fail(std::string("\"") + key + "\" is not a string");
        auto s = j_[key].get<std::string>();
        if (s.find('\0') != std::string::npos) fail(std::string("\"") + key + "\" contains NUL");
        return s;
    }
    std::optional<storage::digest> digest(const char* key, bool required = true) const {
        auto s = text(key, required);
        if (s.empty()) {
            // "digest": "" is as missing as no digest (found by tests/fuzz/bundle_fuzz).
            if (required) fail(std::string("\"") + key + "\" is empty");
            return std::nullopt;
        }
        auto d = storage::digest::parse(s);
        if (!d) fail(std::string("\"") + key + "\" is not a digest: '" + s + "'");
        return d;
    }
    std::int64_t integer(const char* key, std::int64_t fallback, std::int64_t max) const {
        if (!j_.contains(key) || j_[key].is_null()) return fallback;
        const auto& v = j_[key];
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > max)
            fail(std::string("\"") + key + "\" is not an integer in 0.." + std::to_string(max));
        return v.get<std::int64_t>();
    }
    const json& raw(const char* key) const { return j_[key]; }
    bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

private:
    const json& j_;
    std::string where_;
};

bool host_like(std::string_view registry) {
    if (registry.empty() || registry.size() > 255) return false;
    for (char c : registry) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

json pins_file_entry(const storage::pin& p) {
    auto entry = pins::pin_json(p);
    entry["first_seen_ms"] = p.first_seen_ms;
    entry["pending_since_ms"] = p.pending_digest ? json(p.pending_since_ms) : json(nullptr);
    entry["decided"] = p.decided;
    return entry;
}

std::vector<bundled_pin> read_pins_file(std::string_view text) {
    auto doc = json::parse(text, nullptr, false);
    if (!doc.is_object() || !doc.contains("pins") || !doc["pins"].is_array())
        throw std::runtime_error(
            "regpin-pins.json is malformed: not an object with a \"pins\" array");
    std::vector<bundled_pin> out;
    std::set<std::pair<std::string, int>> seen;  // (reference, accept class)
    const auto& list = doc["pins"];
    for (std::size_t i = 0; i < list.size(); ++i) {
        entry_reader e(list[i], i);
        storage::pin_key key;
        key.registry = e.text("registry");
        key.repository = e.text("repository");
        key.tag = e.text("tag");
        auto reference = key.registry + "/" + key.repository + ":" + key.tag;
        e.name(reference);
        if (!host_like(key.registry)) e.fail("\"registry\" is not a host name");
        auto parsed = oci::parse_image_reference(reference);
        if (!parsed) e.fail(parsed.error().message);
        if (parsed->registry != key.registry)
            e.fail("\"registry\" is not a registry host (it needs a dot, a port or localhost)");
        if (parsed->repository != key.repository)
            e.fail("the repository must be written '" + parsed->repository + "'");
        key.accept_class = static_cast<std::uint8_t>(e.integer("accept_class", 15, 15));
        auto digest = *e.digest("digest");
        auto media_type = e.text("media_type", false);
        auto first_seen_ms = e.integer("first_seen_ms", 0, INT64_MAX);
        auto state = e.text("state", false);
        auto parsed_state = storage::pin_state::pinned;
        if (!state.empty()) {
            auto s = storage::parse_pin_state(state);
            if (!s) e.fail("\"state\" is not pinned, pending or rejected: '" + state + "'");
            parsed_state = *s;
        }
        auto pending_digest = e.digest("pending_digest", false);
        bool awaits = parsed_state == storage::pin_state::pending ||
                      parsed_state == storage::pin_state::rejected;
        if (awaits && !pending_digest) e.fail("state " + state + " needs a \"pending_digest\"");
        if (!awaits && pending_digest) e.fail("a pending digest under state pinned");
        auto pending_since_ms = e.integer("pending_since_ms", first_seen_ms, INT64_MAX);
        std::vector<std::string> decided_digests;
        if (e.has("decided")) {
            const auto& decided = e.raw("decided");
            if (!decided.is_array() || decided.size() > max_decided)
                e.fail("\"decided\" is not a list of at most 32 digests");
            for (const auto& d : decided) {
                if (!d.is_string() || !storage::digest::parse(d.get<std::string>()))
                    e.fail("\"decided\" holds something that is not a digest");
                decided_digests.push_back(d.get<std::string>());
            }
        }
        if (!seen.insert({reference, key.accept_class}).second)
            e.fail("the same tag and accept class twice");
        out.push_back({std::move(key), std::move(digest), std::move(media_type), first_seen_ms,
                       parsed_state, std::move(pending_digest), pending_since_ms,
                       std::move(decided_digests)});
    }
    return out;
}

}  // namespace regpin::proxy::bundle
