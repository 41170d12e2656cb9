#include "storage/rocksdb_pin_store.hpp"

#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"

namespace regpin::storage {

namespace {

// registry \0 repository \0 tag \0 class. None of the parts can hold a NUL (validated names).
std::string repository_prefix(const std::string& registry, const std::string& repository) {
    std::string k = registry;
    k.push_back('\0');
    k += repository;
    k.push_back('\0');
    return k;
}

std::optional<pin_key> decode_key(std::string_view k) {
    auto a = k.find('\0');
    if (a == std::string_view::npos) return std::nullopt;
    auto b = k.find('\0', a + 1);
    if (b == std::string_view::npos) return std::nullopt;
    auto c = k.find('\0', b + 1);
    if (c == std::string_view::npos || c + 2 != k.size()) return std::nullopt;
    return pin_key{std::string(k.substr(0, a)), std::string(k.substr(a + 1, b - a - 1)),
                   std::string(k.substr(b + 1, c - b - 1)), static_cast<std::uint8_t>(k[c + 1])};
}

}  // namespace

rocksdb_pin_store::rocksdb_pin_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

std::string rocksdb_pin_store::encode_key(const pin_key& key) {
    std::string k = repository_prefix(key.registry, key.repository);
    k += key.tag;
    k.push_back('\0');
    k.push_back(static_cast<char>(key.accept_class));
    return k;
}

result<std::optional<pin>> rocksdb_pin_store::find(const pin_key& key) const {
    std::string value;
    auto s = db_->db()->Get({}, db_->pins(), encode_key(key), &value);
    if (s.IsNotFound()) return std::optional<pin>{};
    if (!s.ok()) return database::to_error(s, "read pin");
    auto p = decode_pin(key, value);
    if (!p) return errc::corruption;
    return std::optional<pin>{std::move(*p)};
}

result<pin> rocksdb_pin_store::create_if_absent(const pin& candidate) {
    std::lock_guard lock(write_mutex_);
    auto existing = find(candidate.key);
    if (!existing) return existing.error();
    if (*existing) return std::move(**existing);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    auto s = db_->db()->Put(wo, db_->pins(), encode_key(candidate.key), encode_pin(candidate));
    if (!s.ok()) return database::to_error(s, "write pin");
    return candidate;
}

result<std::vector<pin>> rocksdb_pin_store::list_repository(const std::string& registry,
                                                            const std::string& repository) const {
    std::vector<pin> out;
    auto prefix = repository_prefix(registry, repository);
    std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, db_->pins()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
        auto key = decode_key(it->key().ToStringView());
        if (!key) return errc::corruption;
        auto p = decode_pin(*key, it->value().ToStringView());
        if (!p) return errc::corruption;
        out.push_back(std::move(*p));
    }
    if (!it->status().ok()) return database::to_error(it->status(), "list pins");
    return out;
}

}  // namespace regpin::storage
