#include <gtest/gtest.h>

#include <set>

#include <rocksdb/db.h>
#include <rocksdb/metadata.h>

#include "storage/blob_store.hpp"
#include "storage/cache_index.hpp"
#include "storage/database.hpp"
#include "tests/unit/temp_dir.hpp"

using namespace regpin::storage;
using regpin::testing::temp_dir;

namespace {

constexpr std::uint32_t chunk_len = blob_store::default_chunk_size;

std::shared_ptr<database> open_at(const temp_dir& dir) {
    open_report report;
    auto db = open_database(dir.str(), report);
    if (!db) throw std::runtime_error("open failed: " + report.error_detail);
    return *db;
}

std::string blob_bytes(std::size_t n, unsigned seed) {
    std::string s(n, '\0');
    std::uint32_t x = 2463534242u ^ seed;
    for (auto& c : s) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        c = static_cast<char>(x);
    }
    return s;
}

// Stores `data` as a download of a large blob does: unlogged chunks, flushed at commit, so
// each blob has blob files of its own.
digest store(blob_store& blobs, const std::string& data) {
    auto d = sha256_of(data);
    EXPECT_TRUE(blobs.begin(d, chunk_len));
    for (std::uint64_t i = 0; i * chunk_len < data.size(); ++i)
        EXPECT_TRUE(blobs.put_chunk(d, i, std::string_view(data).substr(i * chunk_len, chunk_len),
                                    blob_store::durability::unlogged));
    EXPECT_TRUE(blobs.commit(d, data.size(), blob_store::durability::unlogged));
    return d;
}

std::string read_all(const blob_store& blobs, const digest& d) {
    auto rec = blobs.find(d);
    if (!rec || !*rec) return {};
    std::string out;
    EXPECT_TRUE(blobs.read_blob(d, **rec, [&](std::string_view b) { out.append(b); }));
    return out;
}

std::set<std::string> blob_file_names(const temp_dir& dir) {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
        if (e.path().extension() == ".blob") names.insert(e.path().filename().string());
    return names;
}

}  // namespace

TEST(CacheIndex, EvictionFreesWholeBlobFilesAndCopiesNoLiveChunk) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    std::vector<std::string> data;
    std::vector<digest> ds;
    for (unsigned i = 0; i < 8; ++i) {
        data.push_back(blob_bytes(4 * chunk_len + 1000 * i, i));
        ds.push_back(store(blobs, data.back()));
    }
    cache_index index(db);
    ASSERT_TRUE(index.load());
    EXPECT_EQ(index.count(), 8u);
    std::uint64_t total = 0;
    for (const auto& d : data) total += d.size();
    EXPECT_EQ(index.bytes(), total);

    auto before = measure_disk_usage(dir.str());
    ASSERT_TRUE(before);
    auto files_before = blob_file_names(dir);
    for (unsigned i = 0; i < 4; ++i) {
        auto freed = index.evict(ds[i]);
        ASSERT_TRUE(freed);
        EXPECT_EQ(*freed, data[i].size());
    }
    EXPECT_EQ(*index.evict(ds[0]), 0u) << "evicting twice frees nothing";
    ASSERT_TRUE(index.reclaim());
    auto after = measure_disk_usage(dir.str());
    ASSERT_TRUE(after);
    auto files_after = blob_file_names(dir);

    // The evicted half of the bytes left the disk, as whole blob files deleted ...
    EXPECT_LE(after->folder_bytes + 15 * chunk_len, before->folder_bytes)
        << before->folder_bytes << " -> " << after->folder_bytes;
    EXPECT_LT(files_after.size(), files_before.size());
    // ... and no chunk_len was copied: every blob file left was there before.
    for (const auto& f : files_after) EXPECT_TRUE(files_before.count(f)) << f << " is new";
    auto stats = index.blob_files();
    EXPECT_EQ(stats.garbage_bytes, 0u) << "only wholly evicted files, no partial garbage";

    for (unsigned i = 0; i < 8; ++i) {
        if (i < 4) {
            auto rec = blobs.find(ds[i]);
            ASSERT_TRUE(rec);
            EXPECT_FALSE(*rec) << "evicted blob " << i << " is gone";
        } else {
            EXPECT_EQ(read_all(blobs, ds[i]), data[i]) << "kept blob " << i;
        }
    }
    EXPECT_EQ(index.count(), 4u);

    // Downloaded again after its eviction, a blob is whole.
    EXPECT_EQ(store(blobs, data[1]), ds[1]);
    EXPECT_EQ(read_all(blobs, ds[1]), data[1]);
}

TEST(CacheIndex, OrdersByLastReadAndKeepsReadsAcrossARestart) {
    temp_dir dir;
    std::vector<digest> ds;
    {
        auto db = open_at(dir);
        blob_store blobs(db);
        for (unsigned i = 0; i < 3; ++i) ds.push_back(store(blobs, blob_bytes(chunk_len + i, i)));
        cache_index index(db);
        index.touch(ds[0]);  // before load: kept through it
        ASSERT_TRUE(index.load());
        auto order = index.by_last_access();
        ASSERT_EQ(order.size(), 3u);
        EXPECT_EQ(order.back().d, ds[0]) << "the blob read last comes last";
        // Reads are memory only until flushed.
        auto written = index.flush();
        ASSERT_TRUE(written);
        EXPECT_EQ(*written, 1u);
        EXPECT_EQ(*index.flush(), 0u) << "nothing read since";
        ASSERT_TRUE(index.evict(ds[2]));
    }
    auto db = open_at(dir);
    cache_index index(db);
    ASSERT_TRUE(index.load());
    auto order = index.by_last_access();
    ASSERT_EQ(order.size(), 2u) << "the evicted blob stays evicted";
    EXPECT_EQ(order.front().d, ds[1]);
    EXPECT_EQ(order.back().d, ds[0]) << "the read time survived the restart";
    EXPECT_GE(order.back().last_access_ms, order.front().last_access_ms);
    // A blob committed later counts as read when committed.
    blob_store blobs(db);
    auto fresh = store(blobs, blob_bytes(10, 99));
    index.added(fresh, 10);
    EXPECT_EQ(index.by_last_access().back().d, fresh);
    EXPECT_EQ(index.size_of(fresh), 10u);
}

TEST(DiskUsage, CountsTheFolderAndItsFileSystem) {
    temp_dir dir;
    {
        auto db = open_at(dir);
        blob_store blobs(db);
        store(blobs, blob_bytes(3 * chunk_len, 7));
    }
    auto u = measure_disk_usage(dir.str());
    ASSERT_TRUE(u);
    EXPECT_GE(u->folder_bytes, 3ull * chunk_len);
    EXPECT_GT(u->fs_bytes, u->folder_bytes);
    EXPECT_LE(u->fs_free_bytes, u->fs_bytes);
    EXPECT_FALSE(measure_disk_usage((dir.path() / "missing").string()));
}

TEST(CacheIndex, AHeldBlobIsNotEvictedUntilItsReadersAreDone) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    auto data = blob_bytes(2 * chunk_len, 5);
    auto d = store(blobs, data);
    cache_index index(db);
    ASSERT_TRUE(index.load());
    {
        auto held = index.hold(d);
        ASSERT_TRUE(held);
        auto again = index.hold(d);
        auto freed = index.evict(d);
        ASSERT_TRUE(freed);
        EXPECT_EQ(*freed, 0u) << "a blob being sent is never evicted under its reader";
        held.reset();
        EXPECT_EQ(*index.evict(d), 0u) << "one reader is still there";
        EXPECT_EQ(read_all(blobs, d), data);
    }
    EXPECT_EQ(*index.evict(d), data.size()) << "evictable once every reader let go";
    // A blob the index does not know (evicted since the reader found it, or not committed
    // yet) is held too, and forgotten with its last reader.
    auto unknown = sha256_of("not stored");
    auto held = index.hold(unknown);
    EXPECT_TRUE(held);
    EXPECT_EQ(index.count(), 0u);
    index.added(unknown, 10);  // committed while held: still held
    EXPECT_EQ(index.count(), 1u);
    EXPECT_EQ(*index.evict(unknown), 0u);
    held.reset();
    EXPECT_EQ(*index.evict(unknown), 10u);
}
