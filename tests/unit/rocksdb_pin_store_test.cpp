// The pin store contract (pin_store_contract.hpp) against the embedded RocksDB store, and
// what only it does: counts kept in the database, so that opening it reads no pin.
#include "storage/rocksdb_pin_store.hpp"

#include "storage/database.hpp"
#include "storage/database_impl.hpp"
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

namespace {

std::shared_ptr<storage::database> open_at(const temp_dir& dir, storage::open_mode mode) {
    storage::open_report report;
    auto db = storage::open_database(dir.str(), report, mode);
    if (!db) throw std::runtime_error("open failed: " + report.error_detail);
    return *db;
}

// 2,000 pins of two repositories; every 100th pending, every 250th rejected (28 awaiting).
void seed(storage::pin_store& pins) {
    std::vector<pin_change> batch;
    for (int i = 0; i < 2000; ++i) {
        auto p = make_pin("t" + std::to_string(i), "body" + std::to_string(i));
        if (i % 2) p.key.repository = "library/redis";
        if (i % 100 == 0) p = awaiting(p, pin_state::pending, "moved");
        if (i % 250 == 125) p = awaiting(p, pin_state::rejected, "moved");
        auto e = event_of(event_type::pinned, p.key);
        e.new_digest = p.manifest_digest.str();
        batch.push_back(pin_change{p.key, std::nullopt, p, {e}, {}});
        if (batch.size() == 500) {
            ASSERT_TRUE(pins.apply(batch));
            batch.clear();
        }
    }
}

// Removes every pin behind the store's back (no store may be open on `dir`): a store that
// counted the pins when it opened would then count none.
void remove_pins_underneath(const temp_dir& dir) {
    auto db = open_at(dir, storage::open_mode::read_write);
    ASSERT_TRUE(db->db()->DeleteRange({}, db->pins(), std::string(), std::string(1, '\xff')).ok());
}

}  // namespace

TEST(RocksDbPinStore, OpeningReadsTheKeptCountsNotThePins) {
    temp_dir dir;
    {
        storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
        seed(pins);
        expect_counts(pins, 2000, 28);
    }
    {
        storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
        expect_counts(pins, 2000, 28);
        // Listing the awaiting pins reads them through the index.
        pin_filter f;
        f.state = pin_state::pending;
        f.registry = "docker.io";
        f.repository_prefix = "library/redis";
        auto l = pins.list(f);
        ASSERT_TRUE(l);
        EXPECT_EQ(l->size(), 0u) << "every 100th pin is of library/nginx";
        f.repository_prefix = "library/nginx";
        f.limit = 15;
        l = pins.list(f);
        ASSERT_TRUE(l);
        ASSERT_EQ(l->size(), 15u);
        f.after = l->back().key;
        l = pins.list(f);
        ASSERT_TRUE(l);
        EXPECT_EQ(l->size(), 5u);
    }
    remove_pins_underneath(dir);
    storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
    EXPECT_EQ(*pins.count(), 2000u) << "the open counted the pins instead of reading the count";
    EXPECT_EQ(*pins.count_awaiting(), 28u);
}

TEST(RocksDbPinStore, AFolderFromBeforeTheKeptCountsIsCountedOnceAndIndexed) {
    temp_dir dir;
    {
        auto db = open_at(dir, storage::open_mode::read_write);
        storage::rocksdb_pin_store pins(db);
        seed(pins);
        // What a regpin before the counts left: no "pins/" records in the meta column family.
        ASSERT_TRUE(db->db()->DeleteRange({}, db->meta(), "pins/", "pins0").ok());
    }
    {
        // Read-only (regpin resolve --data, while a regpin holds the folder): counted in
        // memory, nothing written; listing by state walks the pins.
        storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_only));
        expect_counts(pins, 2000, 28);
    }
    {
        storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
        expect_counts(pins, 2000, 28);
        // Changes after the count move the kept counts and the index.
        auto p = make_pin("t0", "body0");
        auto was = awaiting(p, pin_state::pending, "moved");
        ASSERT_TRUE(pins.apply(change_to(was, p, event_type::approved)));
        ASSERT_TRUE(
            pins.apply(change_to(make_pin("t2", "body2"), std::nullopt, event_type::unpinned)));
        expect_counts(pins, 1999, 27);
    }
    {
        storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
        expect_counts(pins, 1999, 27);
    }
    remove_pins_underneath(dir);
    storage::rocksdb_pin_store pins(open_at(dir, storage::open_mode::read_write));
    EXPECT_EQ(*pins.count(), 1999u) << "counted again: the first count was not kept";
}

}  // namespace regpin::testing
