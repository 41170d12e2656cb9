#pragma once
// The pull audit (issue 16): which clients pulled which manifest digest. One record per
// (registry, repository, digest, client), where the client is its address and the node name it
// claims (X-Regpin-Node, possibly empty): the first and last pull, the tag last asked for, and
// how many requests. An aggregate, not a row per request: a node pulling an image a thousand
// times is one record with a count of a thousand. Records not pulled for the retention period
// are removed (forget_before), so the audit holds at most (digests pulled in that period) x
// (clients) records, about 200 bytes each on disk.
//
// Records are written unsynced: a machine crash may lose the last batch (a few seconds of
// pulls), never corrupt what is stored. Thread-safe; every method but count() may block.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct pull_record {
    std::string registry;    // "docker.io"
    std::string repository;  // "library/nginx"
    std::string digest;      // the manifest digest served, "sha256:..."
    std::string address;     // the client's IP address
    std::string node;        // the node name the client sent (X-Regpin-Node), or empty
    std::string tag;         // the tag last asked for by this client, or empty (by digest only)
    std::int64_t first_ms = 0;
    std::int64_t last_ms = 0;
    std::uint64_t count = 0;  // manifest requests (GET and HEAD)

    // The client as people name it: the node when it sent one, else its address.
    const std::string& client() const { return node.empty() ? address : node; }
};

// What to find. Empty fields match anything; every set field must match.
struct audit_query {
    std::string digest;
    std::string registry;
    std::string repository;     // needs registry
    std::string tag;            // needs repository: records whose last tag asked for is this one
    std::string client;         // a node name or an address
    std::int64_t since_ms = 0;  // records last pulled at or after this time
    std::size_t limit = 1000;
};

class audit_store {
public:
    virtual ~audit_store() = default;

    // Merges each record into the stored one with its key: first the earlier, last the later,
    // counts added, the tag of the later pull when it names one. One unsynced write. Returns
    // the records as stored after the merge, in the order given.
    [[nodiscard]] virtual result<std::vector<pull_record>> merge(
        const std::vector<pull_record>& records) = 0;
    // Matching records, most recently pulled first, at most q.limit.
    [[nodiscard]] virtual result<std::vector<pull_record>> query(const audit_query& q) const = 0;
    // Removes records last pulled before `cutoff_ms`; how many.
    [[nodiscard]] virtual result<std::size_t> forget_before(std::int64_t cutoff_ms) = 0;
    // The number of records stored. O(1).
    [[nodiscard]] virtual std::size_t count() const = 0;
};

// The key layout, shared with the etcd audit (proxy/etcd/audit_store.hpp). Each record is
// stored under up to four keys, each with the whole value, so every query is one or two prefix
// scans: by digest, by repository, by address and by node name (when the client sent one).
std::vector<std::string> pull_keys(const pull_record& r);  // the first: by digest
std::string encode_pull(const pull_record& r);             // first, last, count, tag
std::optional<pull_record> decode_pull(std::string_view key, std::string_view value);
// The key prefixes whose records may match `q` (one or two), and whether a record found under
// prefix number `prefix` does (one found under the second whose node is q.client was found
// under the first already).
std::vector<std::string> pull_prefixes(const audit_query& q);
bool pull_matches(const pull_record& r, const audit_query& q, std::size_t prefix);
// A query's answer from what matched: most recently pulled first, at most q.limit.
void order_pulls(std::vector<pull_record>& found, const audit_query& q);
// The clients of `records` (pull_record::client), each once, in the records' order.
std::vector<std::string> pull_clients(const std::vector<pull_record>& records);
// Folds `r` (the same key) into `into`: first the earlier, last the later, counts added, the
// tag of the later pull when it names one.
void fold_pull(pull_record& into, const pull_record& r);

// The audit in regpin's RocksDB database (column family "audit"), its count kept in `meta`
// ("audit/count"). A folder from before the count was kept is counted once (one pass over
// the records) and the count written, unless opened read-only.
[[nodiscard]] result<std::unique_ptr<audit_store>> open_audit_store(std::shared_ptr<database> db);

}  // namespace regpin::storage
