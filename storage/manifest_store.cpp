#include "storage/manifest_store.hpp"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

// RFC 4648 section 5 (JWS leaves the padding out); nullopt when `in` is not base64url.
std::optional<std::string> base64url_decode(std::string_view in) {
    if (in.size() % 4 == 1 || in.size() > (1u << 20)) return std::nullopt;
    std::string b64(in);
    for (auto& c : b64) {
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/' || c == '=')
            return std::nullopt;
    }
    std::size_t pad = (4 - b64.size() % 4) % 4;
    b64.append(pad, '=');
    std::string out(b64.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(b64.data()),
                            static_cast<int>(b64.size()));
    if (n < 0) return std::nullopt;
    out.resize(static_cast<std::size_t>(n) - pad);  // EVP_DecodeBlock counts the padding
    return out;
}

// The JWS payload of a signed schema 1 manifest (digested_bytes).
std::optional<std::string> schema1_payload(std::string_view body) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    auto sigs = j.find("signatures");
    if (sigs == j.end() || !sigs->is_array() || sigs->empty()) return std::nullopt;
    std::optional<std::string> payload;
    for (const auto& sig : *sigs) {
        if (!sig.is_object() || !sig.contains("protected") || !sig["protected"].is_string())
            return std::nullopt;
        auto header_text = base64url_decode(sig["protected"].get<std::string>());
        if (!header_text) return std::nullopt;
        auto header = nlohmann::json::parse(*header_text, nullptr, false);
        if (!header.is_object() || !header.contains("formatLength") ||
            !header["formatLength"].is_number_unsigned() || !header.contains("formatTail") ||
            !header["formatTail"].is_string())
            return std::nullopt;
        auto length = header["formatLength"].get<std::uint64_t>();
        auto tail = base64url_decode(header["formatTail"].get<std::string>());
        if (!tail || length > body.size()) return std::nullopt;
        std::string p(body.substr(0, length));
        p += *tail;
        if (payload && *payload != p) return std::nullopt;  // signatures of different payloads
        payload = std::move(p);
    }
    // The payload is the manifest without its signatures: a JSON object of schema version 1.
    auto doc = nlohmann::json::parse(*payload, nullptr, false);
    if (!doc.is_object() || doc.contains("signatures") || !doc.contains("schemaVersion") ||
        doc["schemaVersion"] != 1)
        return std::nullopt;
    return payload;
}

}  // namespace

std::optional<std::string> digested_bytes(const manifest& m) {
    if (m.media_type != docker_schema1_signed) return m.bytes;
    return schema1_payload(m.bytes);
}

bool manifest_matches(const digest& d, const manifest& m) {
    if (m.media_type != docker_schema1_signed) return matches(d, m.bytes);
    auto payload = schema1_payload(m.bytes);
    return payload && matches(d, *payload);
}

std::optional<digest> manifest_digest(const manifest& m) {
    if (m.media_type != docker_schema1_signed) return sha256_of(m.bytes);
    auto payload = schema1_payload(m.bytes);
    if (!payload) return std::nullopt;
    return sha256_of(*payload);
}

manifest_store::manifest_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

result<std::optional<manifest>> manifest_store::find(const digest& d, read_mode mode) const {
    auto ro = database::point_read(mode, "manifest_store::find");
    std::string value;
    auto s = db_->db()->Get(ro, db_->manifests(), d.str(), &value);
    if (s.IsNotFound()) return std::optional<manifest>{};
    if (!s.ok()) return database::to_error(s, "read manifest");
    auto m = decode_manifest(value);
    if (!m) return errc::corruption;
    return std::optional<manifest>{std::move(*m)};
}

result<void> manifest_store::put(const digest& d, const manifest& m) {
    expect_may_block("manifest_store::put");
    if (auto ec = db_->check_room("write manifest")) return ec;
    if (!manifest_matches(d, m)) return errc::digest_mismatch;
    if (m.media_type.size() > 0xffff) return errc::invalid_argument;
    auto s = db_->db()->Put({}, db_->manifests(), d.str(), encode_manifest(m));
    if (!s.ok()) return database::to_error(s, "write manifest");
    return {};
}

}  // namespace regpin::storage
