#include "storage/audit_store.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <string_view>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include "storage/database_impl.hpp"
#include "storage/record_codec.hpp"
#include "storage/threads.hpp"

namespace regpin::storage {

namespace {

// Each record is stored under up to four keys, each with the whole value, so every query is
// one prefix scan: by digest ('d'), by repository ('r'), by address ('a') and by node name
// ('n', when the client sent one). The parts are separated by a NUL, which no registry,
// repository, digest, address or accepted node name contains.
constexpr char by_digest = 'd';
constexpr char by_repository = 'r';
constexpr char by_address = 'a';
constexpr char by_node = 'n';
constexpr char value_version = 1;
// In the meta column family, written in the batch of every change that moves it.
const std::string count_key = "audit/count";

// The five parts of a record's identity, and the order each kind of key lists them in.
enum part { registry_part, repository_part, digest_part, address_part, node_part };
struct key_layout {
    char kind;
    std::array<part, 5> order;
};
constexpr key_layout layouts[] = {
    {by_digest, {digest_part, registry_part, repository_part, address_part, node_part}},
    {by_repository, {registry_part, repository_part, digest_part, address_part, node_part}},
    {by_address, {address_part, digest_part, registry_part, repository_part, node_part}},
    {by_node, {node_part, digest_part, registry_part, repository_part, address_part}},
};

std::array<const std::string*, 5> parts_of(const pull_record& r) {
    return {&r.registry, &r.repository, &r.digest, &r.address, &r.node};
}

std::array<std::string*, 5> parts_of(pull_record& r) {
    return {&r.registry, &r.repository, &r.digest, &r.address, &r.node};
}

std::string join(char kind, std::initializer_list<std::string_view> parts) {
    std::string k(1, kind);
    for (auto p : parts) {
        k.append(p);
        k.push_back('\0');
    }
    k.pop_back();
    return k;
}

}  // namespace

std::vector<std::string> pull_keys(const pull_record& r) {
    std::vector<std::string> keys;
    const auto parts = parts_of(r);
    for (const auto& layout : layouts) {
        if (layout.kind == by_node && r.node.empty()) continue;
        std::string k(1, layout.kind);
        for (auto p : layout.order) {
            k += *parts[p];
            k.push_back('\0');
        }
        k.pop_back();
        keys.push_back(std::move(k));
    }
    return keys;
}

std::string encode_pull(const pull_record& r) {
    std::string v(1, value_version);
    v += big_endian(static_cast<std::uint64_t>(r.first_ms));
    v += big_endian(static_cast<std::uint64_t>(r.last_ms));
    v += big_endian(r.count);
    v += r.tag;
    return v;
}

// The record a key and its value describe, or nullopt when either is not one of ours.
std::optional<pull_record> decode_pull(std::string_view key, std::string_view value) {
    if (key.empty() || value.size() < 25 || value[0] != value_version) return std::nullopt;
    std::vector<std::string> parts;
    std::size_t start = 1;
    while (true) {
        auto end = key.find('\0', start);
        parts.emplace_back(key.substr(start, end == std::string_view::npos ? end : end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    if (parts.size() != 5) return std::nullopt;
    const auto* layout = std::find_if(std::begin(layouts), std::end(layouts),
                                      [&](const key_layout& l) { return l.kind == key[0]; });
    if (layout == std::end(layouts)) return std::nullopt;
    pull_record r;
    auto fields = parts_of(r);
    for (std::size_t i = 0; i < parts.size(); ++i) *fields[layout->order[i]] = std::move(parts[i]);
    r.first_ms = static_cast<std::int64_t>(from_big_endian(value.substr(1, 8)));
    r.last_ms = static_cast<std::int64_t>(from_big_endian(value.substr(9, 8)));
    r.count = from_big_endian(value.substr(17, 8));
    r.tag = std::string(value.substr(25));
    return r;
}

bool pull_matches(const pull_record& r, const audit_query& q, std::size_t prefix) {
    if (prefix > 0 && r.node == q.client) return false;
    return (q.digest.empty() || r.digest == q.digest) &&
           (q.registry.empty() || r.registry == q.registry) &&
           (q.repository.empty() || r.repository == q.repository) &&
           (q.tag.empty() || r.tag == q.tag) &&
           (q.client.empty() || r.node == q.client || r.address == q.client) &&
           r.last_ms >= q.since_ms;
}

void order_pulls(std::vector<pull_record>& found, const audit_query& q) {
    std::sort(found.begin(), found.end(),
              [](const pull_record& a, const pull_record& b) { return a.last_ms > b.last_ms; });
    if (found.size() > q.limit) found.resize(q.limit);
}

std::vector<std::string> pull_clients(const std::vector<pull_record>& records) {
    std::vector<std::string> clients;
    for (const auto& r : records)
        if (std::find(clients.begin(), clients.end(), r.client()) == clients.end())
            clients.push_back(r.client());
    return clients;
}

void fold_pull(pull_record& into, const pull_record& r) {
    if (!r.tag.empty() && (into.tag.empty() || r.last_ms >= into.last_ms)) into.tag = r.tag;
    into.first_ms = std::min(into.first_ms, r.first_ms);
    into.last_ms = std::max(into.last_ms, r.last_ms);
    into.count += r.count;
}

std::vector<std::string> pull_prefixes(const audit_query& q) {
    std::vector<std::string> prefixes;
    if (!q.digest.empty()) {
        prefixes.push_back(join(by_digest, {q.digest, ""}));
        if (!q.registry.empty()) prefixes.back() += q.registry + '\0';
    } else if (!q.registry.empty()) {
        prefixes.push_back(q.repository.empty()
                               ? join(by_repository, {q.registry, ""})
                               : join(by_repository, {q.registry, q.repository, ""}));
    } else if (!q.client.empty()) {
        prefixes.push_back(join(by_node, {q.client, ""}));
        prefixes.push_back(join(by_address, {q.client, ""}));
    } else {
        prefixes.emplace_back(1, by_digest);
    }
    return prefixes;
}

namespace {

class rocksdb_audit_store final : public audit_store {
public:
    explicit rocksdb_audit_store(std::shared_ptr<database> db) : db_(std::move(db)) {}

    result<void> load() {
        expect_may_block("audit_store::load");
        auto* cf = db_->audit();
        if (!cf) return {};  // a read-only open of a folder from before the audit
        std::string kept;
        auto s = db_->db()->Get({}, db_->meta(), count_key, &kept);
        if (s.ok() && kept.size() == 8) {
            count_ = from_big_endian(kept);
            kept_ = true;
            return {};
        }
        if (!s.ok() && !s.IsNotFound()) return database::to_error(s, "read the audit count");
        // A folder from before the count was kept: counted once, and (unless read-only) the
        // count written, so that no later start walks the records.
        std::size_t n = 0;
        std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, cf));
        const std::string prefix(1, by_digest);
        for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++n;
        if (!it->status().ok()) return database::to_error(it->status(), "scan the audit");
        count_ = n;
        if (db_->read_only()) return {};
        s = db_->db()->Put({}, db_->meta(), count_key, big_endian(n));
        if (!s.ok()) {
            // A full disk must not keep regpin from starting: counted again at the next one,
            // and no merge writes the count meanwhile.
            spdlog::warn(
                "audit: its count could not be written ({}); counted again at the next "
                "start",
                s.ToString());
            return {};
        }
        kept_ = true;
        return {};
    }

    result<std::vector<pull_record>> merge(const std::vector<pull_record>& records) override {
        expect_may_block("audit_store::merge");
        auto* cf = db_->audit();
        if (!cf) return errc::io_error;
        if (auto ec = db_->check_room("the pull audit")) return ec;
        std::lock_guard lock(write_mutex_);
        rocksdb::WriteBatch batch;
        std::size_t added = 0;
        std::vector<pull_record> merged;
        merged.reserve(records.size());
        for (const auto& given : records) {
            auto r = given;
            auto keys = pull_keys(r);
            std::string old;
            auto s = db_->db()->Get(database::point_read(read_mode::may_block, "audit merge"), cf,
                                    keys.front(), &old);
            if (s.ok()) {
                if (auto was = decode_pull(keys.front(), old)) {
                    fold_pull(*was, r);
                    r = std::move(*was);
                }
            } else if (s.IsNotFound()) {
                ++added;
            } else {
                return database::to_error(s, "audit merge read");
            }
            auto value = encode_pull(r);
            for (const auto& k : keys) batch.Put(cf, k, value);
            merged.push_back(std::move(r));
        }
        if (kept_ && added > 0) batch.Put(db_->meta(), count_key, big_endian(count_ + added));
        auto s = db_->db()->Write({}, &batch);
        if (!s.ok()) return database::to_error(s, "audit merge");
        count_ += added;
        return merged;
    }

    result<std::vector<pull_record>> query(const audit_query& q) const override {
        expect_may_block("audit_store::query");
        std::vector<pull_record> out;
        auto* cf = db_->audit();
        if (!cf) return out;  // a read-only open of a folder from before the audit
        auto prefixes = pull_prefixes(q);
        std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, cf));
        for (std::size_t i = 0; i < prefixes.size(); ++i) {
            const auto& prefix = prefixes[i];
            for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
                auto r = decode_pull(it->key().ToStringView(), it->value().ToStringView());
                if (r && pull_matches(*r, q, i)) out.push_back(std::move(*r));
            }
            if (!it->status().ok()) return database::to_error(it->status(), "audit query");
        }
        order_pulls(out, q);
        return out;
    }

    result<std::size_t> forget_before(std::int64_t cutoff_ms) override {
        expect_may_block("audit_store::forget_before");
        auto* cf = db_->audit();
        if (!cf) return std::size_t{0};
        std::lock_guard lock(write_mutex_);
        std::size_t removed = 0;  // records forgotten (each batch written moves count_)
        std::size_t batched = 0;  // of them, in `batch`
        rocksdb::WriteBatch batch;
        auto write = [&]() -> result<void> {
            if (batch.Count() == 0) return {};
            auto left = count_ - std::min<std::size_t>(batched, count_);
            if (kept_) batch.Put(db_->meta(), count_key, big_endian(left));
            auto s = db_->db()->Write({}, &batch);
            batch.Clear();
            if (!s.ok()) return database::to_error(s, "audit retention");
            count_ = left;
            removed += batched;
            batched = 0;
            return {};
        };
        std::unique_ptr<rocksdb::Iterator> it(db_->db()->NewIterator({}, cf));
        const std::string prefix(1, by_digest);
        for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
            auto r = decode_pull(it->key().ToStringView(), it->value().ToStringView());
            if (!r) {
                // Counted as a record when it was written: forgetting it moves the count too.
                batch.Delete(cf, it->key());
                ++batched;
                continue;
            }
            if (r->last_ms >= cutoff_ms) continue;
            for (const auto& k : pull_keys(*r)) batch.Delete(cf, k);
            ++batched;
            if (batch.Count() >= 4096)
                if (auto w = write(); !w) return w.error();
        }
        if (!it->status().ok()) return database::to_error(it->status(), "audit retention scan");
        if (auto w = write(); !w) return w.error();
        return removed;
    }

    std::size_t count() const override { return count_; }

private:
    std::shared_ptr<database> db_;
    std::mutex write_mutex_;  // merges read what they replace
    // Kept in step with the records, in memory and in `meta` in the batch that moves it, by
    // writers holding write_mutex_; read without it.
    std::atomic<std::size_t> count_{0};
    bool kept_ = false;  // `meta` holds the count (false: counted at each start)
};

}  // namespace

result<std::unique_ptr<audit_store>> open_audit_store(std::shared_ptr<database> db) {
    auto store = std::make_unique<rocksdb_audit_store>(std::move(db));
    if (auto loaded = store->load(); !loaded) return loaded.error();
    return std::unique_ptr<audit_store>(std::move(store));
}

}  // namespace regpin::storage
