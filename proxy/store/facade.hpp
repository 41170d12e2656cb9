#pragma once
// The one entry point to storage for the running proxy: it owns the blocking pool, the pin
// store, and the two asynchronous facades over them (content.hpp, pin_records.hpp). Code on
// network threads reaches storage only through these.

#include <cstddef>
#include <memory>

#include <boost/asio/thread_pool.hpp>

#include "proxy/store/content.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/store/pull_audit.hpp"
#include "storage/database.hpp"
#include "storage/pin_store.hpp"

namespace regpin::proxy::store {

class facade {
public:
    // `threads`: the blocking pool's size (synced writes and chunk writes of concurrent
    // downloads run there side by side). `audit_records`: where the pull audit is kept (the
    // etcd one for replicas); nullptr: the database's own. Throws std::runtime_error when the
    // database's audit cannot be read.
    facade(std::shared_ptr<storage::database> db, std::unique_ptr<storage::pin_store> pins,
           config::audit_settings audit = {},
           std::unique_ptr<storage::audit_store> audit_records = nullptr, std::size_t threads = 2);
    // Waits for the calls still running on the pool.
    ~facade();

    store::content& content() { return content_; }
    store::pin_records& pins() { return pins_; }
    store::pull_audit& audit() { return *audit_; }
    // The pin store itself, for a thread of its own that may block (cache/evictor.hpp).
    const storage::pin_store& pin_store() const { return *pin_store_; }
    const std::shared_ptr<storage::database>& database() const { return db_; }

private:
    boost::asio::thread_pool pool_;
    std::shared_ptr<storage::database> db_;
    std::unique_ptr<storage::pin_store> pin_store_;
    store::content content_;
    store::pin_records pins_;
    // Last, so destroyed first: the etcd audit writes through the pin store's client.
    std::unique_ptr<store::pull_audit> audit_;
};

}  // namespace regpin::proxy::store
