// The pin store contract (pin_store_contract.hpp) against the embedded RocksDB store.
#include "storage/rocksdb_pin_store.hpp"

#include "storage/database.hpp"
#include "tests/unit/pin_store_contract.hpp"
#include "tests/unit/temp_dir.hpp"

namespace regpin::testing {

namespace {

class rocksdb_backend {
public:
    storage::pin_store& store() {
        if (!store_) open();
        return *store_;
    }
    storage::pin_store& reopen() {
        store_.reset();
        db_.reset();  // releases RocksDB's LOCK: the next open is a restart
        open();
        return *store_;
    }

private:
    void open() {
        storage::open_report report;
        auto db = storage::open_database(dir_.str(), report);
        if (!db) throw std::runtime_error("open failed: " + report.error_detail);
        db_ = *db;
        store_ = std::make_unique<storage::rocksdb_pin_store>(db_);
    }

    temp_dir dir_;
    std::shared_ptr<storage::database> db_;
    std::unique_ptr<storage::rocksdb_pin_store> store_;
};

}  // namespace

INSTANTIATE_TYPED_TEST_SUITE_P(RocksDb, PinStoreContract, ::testing::Types<rocksdb_backend>);

}  // namespace regpin::testing
