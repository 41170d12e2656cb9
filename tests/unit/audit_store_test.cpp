#include <gtest/gtest.h>

#include "storage/audit_store.hpp"
#include "storage/database.hpp"
#include "storage/database_impl.hpp"
#include "tests/unit/temp_dir.hpp"

using namespace regpin::storage;
using regpin::testing::temp_dir;

namespace {

std::shared_ptr<database> open_at(const temp_dir& dir) {
    open_report report;
    auto db = open_database(dir.str(), report);
    if (!db) throw std::runtime_error("open failed: " + report.error_detail);
    return *db;
}

pull_record pull(std::string digest, std::string node, std::string tag, std::int64_t at,
                 std::string repository = "library/app", std::string address = "10.0.0.1") {
    return {"docker.io",
            std::move(repository),
            std::move(digest),
            std::move(address),
            std::move(node),
            std::move(tag),
            at,
            at,
            1};
}

const std::string a = "sha256:" + std::string(64, 'a');
const std::string b = "sha256:" + std::string(64, 'b');

std::vector<std::string> clients(const std::vector<pull_record>& rs) {
    std::vector<std::string> out;
    for (const auto& r : rs) out.push_back(r.client());
    return out;
}

}  // namespace

TEST(AuditStore, MergesPullsOfOneClientIntoOneRecord) {
    temp_dir dir;
    auto store = *open_audit_store(open_at(dir));
    ASSERT_TRUE(store->merge({pull(a, "node-1", "v1", 1000)}));
    ASSERT_TRUE(store->merge({pull(a, "node-1", "", 3000), pull(a, "node-2", "v1", 2000)}));
    ASSERT_TRUE(store->merge({pull(a, "node-1", "v1", 500)}));  // an older batch, late
    EXPECT_EQ(store->count(), 2u);

    auto found = *store->query({.digest = a});
    ASSERT_EQ(found.size(), 2u);
    // Most recent first; the tag of the latest pull that named one.
    EXPECT_EQ(found[0].node, "node-1");
    EXPECT_EQ(found[0].first_ms, 500);
    EXPECT_EQ(found[0].last_ms, 3000);
    EXPECT_EQ(found[0].count, 3u);
    EXPECT_EQ(found[0].tag, "v1");
    EXPECT_EQ(found[1].node, "node-2");
}

TEST(AuditStore, AnswersByDigestRepositoryTagAndClient) {
    temp_dir dir;
    auto store = *open_audit_store(open_at(dir));
    ASSERT_TRUE(store->merge({pull(a, "node-1", "v1", 1000), pull(b, "node-1", "v2", 2000),
                              pull(b, "", "v2", 3000, "library/app", "10.0.0.9"),
                              pull(a, "node-3", "v1", 4000, "library/other")}));
    EXPECT_EQ(clients(*store->query({.digest = b})),
              (std::vector<std::string>{"10.0.0.9", "node-1"}));
    EXPECT_EQ(store->query({.registry = "docker.io", .repository = "library/app"})->size(), 3u);
    EXPECT_EQ(
        clients(*store->query({.registry = "docker.io", .repository = "library/app", .tag = "v1"})),
        (std::vector<std::string>{"node-1"}));
    // A node by name, or by address (every record from 10.0.0.1 whatever its node).
    EXPECT_EQ(store->query({.client = "node-1"})->size(), 2u);
    EXPECT_EQ(store->query({.client = "10.0.0.9"})->size(), 1u);
    EXPECT_EQ(store->query({.client = "10.0.0.1"})->size(), 3u);
    EXPECT_EQ(store->query({.since_ms = 2500})->size(), 2u);
    EXPECT_EQ(store->query({.limit = 1})->front().last_ms, 4000);
    EXPECT_TRUE(store->query({.digest = "sha256:" + std::string(64, 'c')})->empty());
}

TEST(AuditStore, RetentionRemovesEveryKeyOfOldRecordsAndSurvivesReopen) {
    temp_dir dir;
    {
        auto store = *open_audit_store(open_at(dir));
        ASSERT_TRUE(store->merge({pull(a, "node-1", "v1", 1000), pull(b, "node-2", "v1", 5000)}));
        EXPECT_EQ(*store->forget_before(2000), 1u);
        EXPECT_EQ(store->count(), 1u);
        // Gone from every index, not only the digest's.
        EXPECT_TRUE(store->query({.client = "node-1"})->empty());
        EXPECT_TRUE(store->query({.client = "10.0.0.1"})->size() == 1u);
        EXPECT_EQ(store->query({.registry = "docker.io"})->size(), 1u);
    }
    auto store = *open_audit_store(open_at(dir));
    EXPECT_EQ(store->count(), 1u);
    EXPECT_EQ(clients(*store->query({})), (std::vector<std::string>{"node-2"}));
}

TEST(AuditStore, TheCountIsKeptNotRecountedWhenOpened) {
    temp_dir dir;
    {
        auto store = *open_audit_store(open_at(dir));
        std::vector<pull_record> batch;
        for (int i = 0; i < 5000; ++i)
            batch.push_back(pull(a, "node-" + std::to_string(i), "v1", 1000 + i));
        ASSERT_TRUE(store->merge(batch));
        ASSERT_TRUE(store->merge({pull(a, "node-1", "v1", 9000), pull(b, "node-1", "v1", 9000)}));
        EXPECT_EQ(store->count(), 5001u);
        // Nodes 0 to 3999 but node-1, pulled again at 9000.
        EXPECT_EQ(*store->forget_before(1000 + 4000), 3999u);
        EXPECT_EQ(store->count(), 1002u);
    }
    {
        auto store = *open_audit_store(open_at(dir));
        EXPECT_EQ(store->count(), 1002u);
        EXPECT_EQ(store->query({.limit = 10000})->size(), 1002u);
    }
    // The records gone behind the store's back: a store that counted them when opened would
    // count none.
    {
        auto db = open_at(dir);
        ASSERT_TRUE(
            db->db()->DeleteRange({}, db->audit(), std::string(), std::string(1, '\xff')).ok());
    }
    EXPECT_EQ((*open_audit_store(open_at(dir)))->count(), 1002u);
}
