#include "storage/record_codec.hpp"

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
              {"last_verified_ms", p.last_verified_ms}};
    return j.dump();
}

std::optional<pin> decode_pin(const pin_key& key, std::string_view v) {
    auto j = json::parse(v, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        auto d = digest::parse(j.at("digest").get<std::string>());
        if (!d) return std::nullopt;
        return pin{key,
                   *d,
                   j.at("media_type").get<std::string>(),
                   j.at("size").get<std::uint64_t>(),
                   j.value("first_seen_ms", std::int64_t{0}),
                   j.value("last_verified_ms", std::int64_t{0})};
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

}  // namespace regpin::storage
