#pragma once
// The pull audit of replicas sharing their pins through etcd (issue 16): every replica's
// records in etcd, so that any replica answers for the whole cluster (a node pulls through
// whichever replica the Service picks).
//
// Each replica keeps its own aggregate in its RocksDB (storage/audit_store.hpp) and, after
// each merge, publishes the merged records under keys of its own:
//   A <storage key>\0<replica>      A = the pin store's prefix with "-audit/" ("/regpin-audit/")
// so no two replicas ever write one key (no read-modify-write across the cluster, no
// conflicts). A query reads the matching prefixes from etcd and folds the records of one key
// from every replica into one. Retention removes old records of every replica, the dead ones'
// too. The audit lives beside the pin store's prefix, not under it, so the pin store's watch
// never carries it.
//
// When etcd cannot be reached, records wait (bounded) to be published at the next merge, and
// a query answers from this replica's own records (logged).

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/etcd/client.hpp"
#include "storage/audit_store.hpp"

namespace regpin::proxy::etcd {

// "/regpin/" -> "/regpin-audit/"
std::string audit_prefix(std::string pin_prefix);

class etcd_audit_store final : public storage::audit_store {
public:
    // `local`: this replica's own records (RocksDB). `replica`: its name among the replicas.
    // `etcd`: the pin store's client (etcd_pin_store::etcd_client), which must outlive this.
    etcd_audit_store(client& etcd, std::string pin_prefix, std::string replica,
                     std::unique_ptr<storage::audit_store> local);
    ~etcd_audit_store() override;

    storage::result<std::vector<storage::pull_record>> merge(
        const std::vector<storage::pull_record>& records) override;
    storage::result<std::vector<storage::pull_record>> query(
        const storage::audit_query& q) const override;
    storage::result<std::size_t> forget_before(std::int64_t cutoff_ms) override;
    std::size_t count() const override;

private:
    // Puts `records` under this replica's keys; false when etcd did not take them all.
    bool publish(const std::vector<storage::pull_record>& records);

    client& client_;
    std::string prefix_;
    std::string replica_;
    std::unique_ptr<storage::audit_store> local_;
    std::mutex mutex_;
    std::vector<storage::pull_record> unpublished_;  // guarded by mutex_
};

}  // namespace regpin::proxy::etcd
