// Durability, proven: an acknowledged pin, its event and its outbox entry survive a power loss
// (unsynced data dropped, tests/unit/power_loss_fs.hpp), while a write that was not synced does
// not. The SIGKILL test (tests/integration/test_crash.py) cannot tell the two apart: the page
// cache survives a killed process.
#include <gtest/gtest.h>

#include "storage/blob_store.hpp"
#include "storage/database.hpp"
#include "storage/rocksdb_pin_store.hpp"
#include "tests/unit/pin_store_contract.hpp"
#include "tests/unit/power_loss_fs.hpp"
#include "tests/unit/temp_dir.hpp"

namespace regpin::testing {

namespace {

std::shared_ptr<storage::database> open_at(const temp_dir& dir,
                                           const storage::open_hooks& hooks = {}) {
    storage::open_report report;
    auto db = storage::open_database(dir.str(), report, storage::open_mode::read_write, hooks);
    if (!db) throw std::runtime_error("open failed: " + report.error_detail);
    return *db;
}

}  // namespace

TEST(PowerLoss, AnAcknowledgedPinItsEventAndItsAlertSurviveAndAnUnsyncedWriteDoesNot) {
    temp_dir dir;
    auto fs = std::make_shared<power_loss_fs>();
    storage::open_hooks hooks;
    hooks.file_system = fs;
    auto a = make_pin("v1", "A");
    auto control = storage::sha256_of("written, never synced");
    {
        auto db = open_at(dir, hooks);
        storage::rocksdb_pin_store pins(db);
        ASSERT_TRUE(first_pull(pins, a));
        auto pending = awaiting(a, pin_state::pending, "B");
        pin_change change{a.key, a, pending};
        change.events.push_back(event_of(event_type::repointed, a.key, "policy", 5000));
        change.alerts = {storage::alert{0, "http://hooks.example/regpin"}};
        ASSERT_TRUE(pins.apply(change)) << "acknowledged";

        // The control, after the last synced write: logged (in the WAL) but never synced.
        storage::blob_store blobs(db);
        ASSERT_TRUE(blobs.begin(control, 1024));
        ASSERT_TRUE(blobs.put_chunk(control, 0, std::string(1024, 'x')));
        ASSERT_TRUE(blobs.commit(control, 1024));
        ASSERT_TRUE(*blobs.find(control)) << "visible before the power loss";

        fs->power_off();  // the machine stops: closing the database writes nothing more
    }
    fs->drop_unsynced();

    auto db = open_at(dir);
    storage::rocksdb_pin_store pins(db);
    auto found = pins.find(a.key);
    ASSERT_TRUE(found);
    ASSERT_TRUE(*found) << "an acknowledged pin was lost";
    EXPECT_EQ((*found)->state, pin_state::pending);
    EXPECT_EQ((*found)->pending_digest, sha256_of("B"));
    auto history = pins.history(a.key);
    ASSERT_TRUE(history);
    ASSERT_EQ(history->size(), 2u) << "an acknowledged event was lost";
    EXPECT_EQ((*history)[1].type, event_type::repointed);
    auto due = pins.due_deliveries(5000, 10);
    ASSERT_TRUE(due);
    ASSERT_EQ(due->size(), 1u) << "an acknowledged alert was lost";
    EXPECT_EQ((*due)[0].event_id, (*history)[1].id);
    expect_counts(pins, 1, 1);

    storage::blob_store blobs(db);
    auto gone = blobs.find(control);
    ASSERT_TRUE(gone);
    EXPECT_FALSE(*gone) << "the unsynced write survived: the power loss dropped nothing, so the "
                           "test would not tell a synced write from an unsynced one";
}

}  // namespace regpin::testing
