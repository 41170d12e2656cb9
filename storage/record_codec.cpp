#include "storage/record_codec.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

namespace regpin::storage {

using json = nlohmann::json;

std::string encode_blob_record(const blob_record& r) {
    json j = {{"v", 1},
              {"size", r.size},
              {"chunk_size", r.chunk_size},
              {"complete", r.complete},
              {"created_ms", r.created_ms}};
    return j.dump();
}

std::optional<blob_record> decode_blob_record(std::string_view v) {
    auto j = json::parse(v, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        blob_record r;
        r.size = j.at("size").get<std::uint64_t>();
        r.chunk_size = j.at("chunk_size").get<std::uint32_t>();
        r.complete = j.at("complete").get<bool>();
        r.created_ms = j.value("created_ms", std::int64_t{0});
        if (r.chunk_size == 0) return std::nullopt;
        return r;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

// [1 byte version = 1][2 bytes media type length, big-endian][media type][manifest bytes]
std::string encode_manifest(const manifest& m) {
    std::string out;
    out.reserve(3 + m.media_type.size() + m.bytes.size());
    out.push_back(1);
    out.push_back(static_cast<char>((m.media_type.size() >> 8) & 0xff));
    out.push_back(static_cast<char>(m.media_type.size() & 0xff));
    out += m.media_type;
    out += m.bytes;
    return out;
}

std::optional<manifest> decode_manifest(std::string_view v) {
    if (v.size() < 3 || v[0] != 1) return std::nullopt;
    std::size_t len = (static_cast<unsigned char>(v[1]) << 8) | static_cast<unsigned char>(v[2]);
    if (v.size() < 3 + len) return std::nullopt;
    manifest m;
    m.media_type = std::string(v.substr(3, len));
    m.bytes = std::string(v.substr(3 + len));
    return m;
}

std::string encode_pin(const pin& p) {
    json j = {{"v", 1},
              {"digest", p.manifest_digest.str()},
              {"media_type", p.media_type},
              {"size", p.size},
              {"first_seen_ms", p.first_seen_ms},
              {"last_verified_ms", p.last_verified_ms},
              {"state", to_string(p.state)},
              {"alerted", p.alerted},
              {"decided", p.decided}};
    if (p.pending_digest) {
        j["pending_digest"] = p.pending_digest->str();
        j["pending_since_ms"] = p.pending_since_ms;
    }
    return j.dump();
}

std::optional<pin> decode_pin(const pin_key& key, std::string_view v) {
    auto j = json::parse(v, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        auto d = digest::parse(j.at("digest").get<std::string>());
        if (!d) return std::nullopt;
        pin p{key, *d};
        p.media_type = j.at("media_type").get<std::string>();
        p.size = j.at("size").get<std::uint64_t>();
        p.first_seen_ms = j.value("first_seen_ms", std::int64_t{0});
        p.last_verified_ms = j.value("last_verified_ms", std::int64_t{0});
        auto state = parse_pin_state(j.value("state", std::string("pinned")));
        if (!state) return std::nullopt;
        p.state = *state;
        if (j.contains("pending_digest")) {
            p.pending_digest = digest::parse(j.at("pending_digest").get<std::string>());
            if (!p.pending_digest) return std::nullopt;
            p.pending_since_ms = j.value("pending_since_ms", std::int64_t{0});
        }
        if (j.contains("alerted")) p.alerted = j.at("alerted").get<std::vector<std::string>>();
        if (j.contains("decided")) p.decided = j.at("decided").get<std::vector<std::string>>();
        return p;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::string encode_event(const pin_event& e) {
    json j = {{"v", 1},
              {"id", e.id},
              {"time_ms", e.time_ms},
              {"type", to_string(e.type)},
              {"registry", e.key.registry},
              {"repository", e.key.repository},
              {"tag", e.key.tag},
              {"accept_class", e.key.accept_class},
              {"old_digest", e.old_digest},
              {"new_digest", e.new_digest},
              {"actor", e.actor},
              {"policy", e.policy},
              {"action", e.action},
              {"summary", e.summary_json}};
    if (!e.source.empty()) j["source"] = e.source;
    return j.dump();
}

std::optional<pin_event> decode_event(std::string_view v) {
    auto j = json::parse(v, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        pin_event e;
        e.id = j.at("id").get<std::uint64_t>();
        e.time_ms = j.at("time_ms").get<std::int64_t>();
        auto type = parse_event_type(j.at("type").get<std::string>());
        if (!type) return std::nullopt;
        e.type = *type;
        e.key = {j.at("registry").get<std::string>(), j.at("repository").get<std::string>(),
                 j.at("tag").get<std::string>(), j.at("accept_class").get<std::uint8_t>()};
        e.old_digest = j.value("old_digest", "");
        e.new_digest = j.value("new_digest", "");
        e.actor = j.value("actor", "");
        e.policy = j.value("policy", "");
        e.action = j.value("action", "");
        e.summary_json = j.value("summary", "");
        e.source = j.value("source", "");
        return e;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::string encode_outbox(const outbox_entry& e) {
    json j = {{"v", 1},
              {"id", e.id},
              {"event_id", e.event_id},
              {"target", e.target},
              {"attempts", e.attempts},
              {"next_attempt_ms", e.next_attempt_ms}};
    return j.dump();
}

std::optional<outbox_entry> decode_outbox(std::string_view v) {
    auto j = json::parse(v, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        outbox_entry e;
        e.id = j.at("id").get<std::uint64_t>();
        e.event_id = j.at("event_id").get<std::uint64_t>();
        e.target = j.at("target").get<std::string>();
        e.attempts = j.value("attempts", 0);
        e.next_attempt_ms = j.value("next_attempt_ms", std::int64_t{0});
        return e;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::string big_endian(std::uint64_t v) {
    std::string out(8, '\0');
    for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
    return out;
}

std::uint64_t from_big_endian(std::string_view b) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8 && i < b.size(); ++i)
        v = (v << 8) | static_cast<unsigned char>(b[i]);
    return v;
}

std::string display_name(const pin_key& key) {
    return key.registry + "/" + key.repository + ":" + key.tag;
}

bool key_contains(const pin_key& key, const std::string& needle) {
    if (needle.empty()) return true;
    auto name = display_name(key);
    auto lower = [](unsigned char c) { return static_cast<char>(std::tolower(c)); };
    return std::search(name.begin(), name.end(), needle.begin(), needle.end(),
                       [&](char a, char b) { return lower(a) == lower(b); }) != name.end();
}

std::string_view to_string(pin_state s) {
    switch (s) {
        case pin_state::pinned:
            return "pinned";
        case pin_state::pending:
            return "pending";
        case pin_state::rejected:
            return "rejected";
    }
    return "pinned";
}

namespace {

constexpr std::pair<event_type, std::string_view> event_names[] = {
    {event_type::pinned, "pinned"},     {event_type::repointed, "repointed"},
    {event_type::reverted, "reverted"}, {event_type::approved, "approved"},
    {event_type::unpinned, "unpinned"}, {event_type::set, "set"},
    {event_type::imported, "imported"},
};

}  // namespace

std::string_view to_string(event_type t) {
    for (const auto& [type, name] : event_names)
        if (type == t) return name;
    return "unknown";
}

std::optional<event_type> parse_event_type(std::string_view s) {
    for (const auto& [type, name] : event_names)
        if (name == s) return type;
    return std::nullopt;
}

std::optional<pin_state> parse_pin_state(std::string_view s) {
    if (s == "pinned") return pin_state::pinned;
    if (s == "pending") return pin_state::pending;
    if (s == "rejected") return pin_state::rejected;
    return std::nullopt;
}

}  // namespace regpin::storage
