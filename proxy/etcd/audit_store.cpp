#include "proxy/etcd/audit_store.hpp"

#include <algorithm>
#include <map>

#include <spdlog/spdlog.h>

namespace regpin::proxy::etcd {

using storage::errc;
using storage::pull_record;

namespace {

// etcd takes 128 operations per transaction by default (--max-txn-ops).
constexpr std::size_t ops_per_txn = 120;
constexpr std::int64_t range_page = 1000;
// Records waiting to be published while etcd is unreachable, at most.
constexpr std::size_t max_unpublished = 100000;

// Sends `ops` (puts or deletes) in transactions of ops_per_txn; false on the first failure.
bool write_all(client& c, const std::vector<nlohmann::json>& ops) {
    for (std::size_t i = 0; i < ops.size(); i += ops_per_txn) {
        nlohmann::json batch = nlohmann::json::array();
        for (std::size_t j = i; j < std::min(ops.size(), i + ops_per_txn); ++j)
            batch.push_back(ops[j]);
        auto answer = c.call_blocking("/v3/kv/txn", {{"success", std::move(batch)}});
        if (!answer) return false;
        auto t = parse_txn(*answer);
        if (!t || !t->succeeded) return false;
    }
    return true;
}

// Every key under `from` (a prefix), page by page: (key without `strip`, value).
storage::result<std::vector<std::pair<std::string, std::string>>> read_prefix(
    client& c, const std::string& prefix, std::size_t strip) {
    std::vector<std::pair<std::string, std::string>> out;
    const auto end = prefix_end(prefix);
    std::string from = prefix;
    while (true) {
        auto answer = c.call_blocking("/v3/kv/range", range_request(from, end, range_page));
        if (!answer) return answer.error();
        auto r = parse_range(*answer);
        if (!r) return errc::corruption;
        for (auto& kv : r->kvs) out.emplace_back(kv.key.substr(strip), std::move(kv.value));
        if (!r->more || r->kvs.empty()) break;
        from = r->kvs.back().key + std::string(1, '\0');
    }
    return out;
}

// "<storage key>\0<replica>" -> the storage key, or empty.
std::string_view storage_key(std::string_view key) {
    auto sep = key.rfind('\0');
    return sep == std::string_view::npos ? std::string_view() : key.substr(0, sep);
}

}  // namespace

std::string audit_prefix(std::string pin_prefix) {
    while (!pin_prefix.empty() && pin_prefix.back() == '/') pin_prefix.pop_back();
    return pin_prefix + "-audit/";
}

etcd_audit_store::etcd_audit_store(client& etcd, std::string pin_prefix, std::string replica,
                                   std::unique_ptr<storage::audit_store> local)
    : client_(etcd),
      prefix_(audit_prefix(std::move(pin_prefix))),
      replica_(std::move(replica)),
      local_(std::move(local)) {}

etcd_audit_store::~etcd_audit_store() = default;

bool etcd_audit_store::publish(const std::vector<pull_record>& records) {
    std::vector<nlohmann::json> ops;
    for (const auto& r : records) {
        auto value = storage::encode_pull(r);
        for (const auto& k : storage::pull_keys(r))
            ops.push_back(put_op(prefix_ + k + std::string(1, '\0') + replica_, value));
    }
    return write_all(client_, ops);
}

storage::result<std::vector<pull_record>> etcd_audit_store::merge(
    const std::vector<pull_record>& records) {
    auto merged = local_->merge(records);
    if (!merged) return merged;
    std::lock_guard lock(mutex_);
    // What an earlier merge could not publish goes first; a record merged again since is sent
    // as it is now (later in the list, so its put wins).
    auto todo = std::move(unpublished_);
    unpublished_.clear();
    todo.insert(todo.end(), merged->begin(), merged->end());
    if (!publish(todo)) {
        if (todo.size() > max_unpublished)
            todo.erase(todo.begin(), todo.end() - static_cast<std::ptrdiff_t>(max_unpublished));
        spdlog::warn(
            "pull audit: etcd did not take {} record(s); they are sent again with the "
            "next pulls (queries answer from this replica meanwhile)",
            todo.size());
        unpublished_ = std::move(todo);
    }
    return merged;
}

storage::result<std::vector<pull_record>> etcd_audit_store::query(
    const storage::audit_query& q) const {
    auto prefixes = storage::pull_prefixes(q);
    // One record per storage key, folded over the replicas that hold it.
    std::map<std::string, pull_record, std::less<>> found;
    for (std::size_t i = 0; i < prefixes.size(); ++i) {
        auto kvs = read_prefix(client_, prefix_ + prefixes[i], prefix_.size());
        if (!kvs) {
            spdlog::warn(
                "pull audit: etcd cannot be read ({}); answering from this replica's "
                "own records",
                kvs.error().message());
            return local_->query(q);
        }
        for (const auto& [key, value] : *kvs) {
            auto skey = storage_key(key);
            auto r = storage::decode_pull(skey, value);
            if (!r || !storage::pull_matches(*r, q, i)) continue;
            auto it = found.find(skey);
            if (it == found.end())
                found.emplace(std::string(skey), std::move(*r));
            else
                storage::fold_pull(it->second, *r);
        }
    }
    std::vector<pull_record> out;
    out.reserve(found.size());
    for (auto& [k, r] : found) out.push_back(std::move(r));
    storage::order_pulls(out, q);
    return out;
}

storage::result<std::size_t> etcd_audit_store::forget_before(std::int64_t cutoff_ms) {
    auto local = local_->forget_before(cutoff_ms);
    if (!local) return local;
    // Every replica's old records, a dead replica's too (each replica does this: deleting a
    // key twice is harmless).
    auto kvs = read_prefix(client_, prefix_ + "d", prefix_.size());
    if (!kvs) return kvs.error();
    std::vector<nlohmann::json> ops;
    std::size_t removed = 0;
    for (const auto& [key, value] : *kvs) {
        auto skey = storage_key(key);
        auto r = storage::decode_pull(skey, value);
        auto replica = key.substr(skey.size() + (skey.empty() ? 0 : 1));
        if (!r) {
            ops.push_back(delete_op(prefix_ + key));
            continue;
        }
        if (r->last_ms >= cutoff_ms) continue;
        for (const auto& k : storage::pull_keys(*r))
            ops.push_back(delete_op(prefix_ + k + std::string(1, '\0') + replica));
        ++removed;
    }
    if (!write_all(client_, ops)) return errc::unavailable;
    return removed;
}

std::size_t etcd_audit_store::count() const { return local_->count(); }

}  // namespace regpin::proxy::etcd
