#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include <rocksdb/db.h>

#include "storage/blob_store.hpp"
#include "storage/chunk_locations.hpp"
#include "storage/database.hpp"
#include "storage/database_impl.hpp"
#include "storage/manifest_store.hpp"
#include "storage/referrers_store.hpp"
#include "storage/threads.hpp"
#include "tests/unit/temp_dir.hpp"

using namespace regpin::storage;
using regpin::testing::temp_dir;

namespace {

std::shared_ptr<database> open_at(const temp_dir& dir, open_report* out = nullptr) {
    open_report report;
    auto db = open_database(dir.str(), report);
    if (!db) throw std::runtime_error("open failed: " + report.error_detail);
    if (out) *out = report;
    return *db;
}

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131) ^ (i >> 9));
    return s;
}

// Writes `data` as a complete blob in chunks of `chunk` bytes.
void write_blob(blob_store& blobs, const std::string& data, std::uint32_t chunk) {
    auto d = sha256_of(data);
    ASSERT_TRUE(blobs.begin(d, chunk));
    for (std::uint64_t i = 0; i * chunk < data.size(); ++i)
        ASSERT_TRUE(blobs.put_chunk(d, i, std::string_view(data).substr(i * chunk, chunk)));
    ASSERT_TRUE(blobs.commit(d, data.size()));
}

std::string read_blob(const blob_store& blobs, const digest& d) {
    auto rec = blobs.find(d);
    EXPECT_TRUE(rec && *rec);
    std::string out;
    EXPECT_TRUE(blobs.read_blob(d, **rec, [&](std::string_view bytes) { out.append(bytes); }));
    return out;
}

}  // namespace

TEST(BlobStore, CompleteBlobReadsBackByteForByte) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    auto data = pattern(3 * 65536 + 17);
    write_blob(blobs, data, 65536);
    auto d = sha256_of(data);
    auto rec = blobs.find(d);
    ASSERT_TRUE(rec && *rec);
    EXPECT_EQ((*rec)->size, data.size());
    EXPECT_EQ(read_blob(blobs, d), data);
}

TEST(BlobStore, IncompleteBlobIsInvisible) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    auto d = sha256_of("partial");
    ASSERT_TRUE(blobs.begin(d, 4));
    ASSERT_TRUE(blobs.put_chunk(d, 0, "part"));
    auto rec = blobs.find(d);
    ASSERT_TRUE(rec);
    EXPECT_FALSE(*rec);
}

TEST(BlobStore, RestartRemovesIncompleteBlobsAndKeepsCompleteOnes) {
    temp_dir dir;
    auto data = pattern(100000);
    auto partial = sha256_of("never finished");
    {
        auto db = open_at(dir);
        blob_store blobs(db);
        write_blob(blobs, data, 4096);
        ASSERT_TRUE(blobs.begin(partial, 4));
        ASSERT_TRUE(blobs.put_chunk(partial, 0, "neve"));
    }
    open_report report;
    auto db = open_at(dir, &report);
    EXPECT_EQ(report.incomplete_blobs_removed, 1u);
    blob_store blobs(db);
    EXPECT_EQ(read_blob(blobs, sha256_of(data)), data);
    std::string chunk;
    EXPECT_FALSE(blobs.read_chunk(partial, 0, chunk)) << "chunks of an incomplete blob survived";
}

TEST(BlobStore, DiscardRemovesEverything) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    auto data = pattern(10000);
    write_blob(blobs, data, 1000);
    auto d = sha256_of(data);
    ASSERT_TRUE(blobs.discard(d));
    auto rec = blobs.find(d);
    ASSERT_TRUE(rec);
    EXPECT_FALSE(*rec);
    std::string chunk;
    EXPECT_FALSE(blobs.read_chunk(d, 0, chunk));
}

TEST(ManifestStore, KeepsExactBytesAndMediaType) {
    temp_dir dir;
    auto db = open_at(dir);
    manifest_store manifests(db);
    std::string body = "{\n  \"schemaVersion\": 2 }  ";  // odd whitespace must survive
    auto d = sha256_of(body);
    ASSERT_TRUE(manifests.put(d, {"application/vnd.oci.image.manifest.v1+json", body}));
    auto m = manifests.find(d);
    ASSERT_TRUE(m && *m);
    EXPECT_EQ((*m)->bytes, body);
    EXPECT_EQ((*m)->media_type, "application/vnd.oci.image.manifest.v1+json");
}

TEST(ManifestStore, RefusesBytesThatDoNotMatchTheDigest) {
    temp_dir dir;
    auto db = open_at(dir);
    manifest_store manifests(db);
    auto r = manifests.put(sha256_of("one"), {"x", "two"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::digest_mismatch);
    auto m = manifests.find(sha256_of("one"));
    ASSERT_TRUE(m);
    EXPECT_FALSE(*m);
}

TEST(Database, SecondOpenOfALiveFolderSaysLocked) {
    temp_dir dir;
    auto db = open_at(dir);
    open_report report;
    auto again = open_database(dir.str(), report);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), errc::locked);
}

// A chunk in a blob file is located (path, offset, size), and those bytes of that file are the
// chunk; a chunk still in the memtable is read instead. Writes unlogged, so commit flushes.
TEST(BlobStore, LocatesFlushedChunksInBlobFilesAndReadsTheRest) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    constexpr std::uint32_t chunk_size = 64 * 1024;
    auto data = pattern(5 * chunk_size + 5000);  // every chunk over min_blob_size
    auto d = sha256_of(data);
    ASSERT_TRUE(blobs.begin(d, chunk_size));
    for (std::uint64_t i = 0; i * chunk_size < data.size(); ++i)
        ASSERT_TRUE(blobs.put_chunk(d, i, std::string_view(data).substr(i * chunk_size, chunk_size),
                                    blob_store::durability::unlogged));

    chunk c;
    auto before = blobs.locate_chunk(d, 0, c);
    ASSERT_TRUE(before);
    EXPECT_FALSE(*before) << "an unflushed chunk cannot be in a blob file";
    EXPECT_EQ(c.bytes(), std::string_view(data).substr(0, chunk_size));

    ASSERT_TRUE(blobs.commit(d, data.size(), blob_store::durability::unlogged));
    for (std::uint64_t i = 0; i * chunk_size < data.size(); ++i) {
        auto expected = std::string_view(data).substr(i * chunk_size, chunk_size);
        auto span = blobs.locate_chunk(d, i, c);
        ASSERT_TRUE(span);
        ASSERT_TRUE(*span) << "chunk " << i << " not located after the flush";
        EXPECT_TRUE((*span)->path.ends_with(".blob")) << (*span)->path;
        ASSERT_EQ((*span)->size, expected.size());
        std::string from_file((*span)->size, '\0');
        auto* f = std::fopen((*span)->path.c_str(), "rb");
        ASSERT_NE(f, nullptr);
        ASSERT_EQ(std::fseek(f, static_cast<long>((*span)->offset), SEEK_SET), 0);
        EXPECT_EQ(std::fread(from_file.data(), 1, from_file.size(), f), from_file.size());
        std::fclose(f);
        EXPECT_EQ(from_file, expected) << "chunk " << i;
        // A plain read on the same thread is a real read again.
        std::string copy;
        ASSERT_TRUE(blobs.read_chunk(d, i, copy));
        EXPECT_EQ(copy, expected);
    }
}

// A warm GET locates a chunk found before without reading RocksDB (whose read copies the value);
// a blob deleted (discarded or evicted) is located afresh once written again.
TEST(BlobStore, LocationsAreKeptUntilTheBlobIsDeleted) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    constexpr std::uint32_t chunk_size = 64 * 1024;
    auto data = pattern(3 * chunk_size);
    auto d = sha256_of(data);
    auto write = [&] {
        ASSERT_TRUE(blobs.begin(d, chunk_size));
        for (std::uint64_t i = 0; i * chunk_size < data.size(); ++i)
            ASSERT_TRUE(blobs.put_chunk(d, i,
                                        std::string_view(data).substr(i * chunk_size, chunk_size),
                                        blob_store::durability::unlogged));
        ASSERT_TRUE(blobs.commit(d, data.size(), blob_store::durability::unlogged));
    };
    write();
    chunk c;
    auto first = blobs.locate_chunk(d, 1, c);
    ASSERT_TRUE(first && *first);
    // The chunks gone behind the store's back: only a kept location still answers.
    ASSERT_TRUE(db->db()->DeleteRange({}, db->chunks(), chunk_key(d, 0), chunk_prefix_end(d)).ok());
    auto again = blobs.locate_chunk(d, 1, c);
    ASSERT_TRUE(again && *again) << "located through RocksDB, not from the kept location";
    EXPECT_EQ((*again)->path, (*first)->path);
    EXPECT_EQ((*again)->offset, (*first)->offset);

    ASSERT_TRUE(blobs.discard(d));
    EXPECT_FALSE(blobs.locate_chunk(d, 1, c)) << "a discarded blob's chunk was still located";
    write();  // into a new blob file
    auto fresh = blobs.locate_chunk(d, 1, c);
    ASSERT_TRUE(fresh && *fresh);
    EXPECT_NE((*fresh)->path, (*first)->path);

    // A download that begins anew forgets too (an earlier discard may have failed midway).
    ASSERT_TRUE(
        db->db()->DeleteRange({}, db->chunks(), chunk_key(d, 0), chunk_prefix_end(d)).ok());
    write();
    auto rewritten = blobs.locate_chunk(d, 1, c);
    ASSERT_TRUE(rewritten && *rewritten);
    EXPECT_NE((*rewritten)->path, (*fresh)->path);
}

TEST(ChunkLocations, HoldsAtMostItsBoundAndDropsTheBlobUsedLeast) {
    chunk_locations kept(4);
    auto a = sha256_of("a"), b = sha256_of("b"), c = sha256_of("c");
    auto at = [](std::uint64_t offset) { return chunk_span{"/f.blob", offset, 10}; };
    for (std::uint64_t i = 0; i < 2; ++i) kept.put(a, i, at(i), kept.epoch());
    for (std::uint64_t i = 0; i < 2; ++i) kept.put(b, i, at(10 + i), kept.epoch());
    ASSERT_TRUE(kept.find(a, 1));  // a is now the most recently used
    kept.put(c, 0, at(20), kept.epoch());
    EXPECT_EQ(kept.chunks(), 3u);
    EXPECT_FALSE(kept.find(b, 0)) << "b, used least, should have gone";
    EXPECT_EQ(kept.find(a, 1)->offset, 1u);
    EXPECT_EQ(kept.find(c, 0)->offset, 20u);
    EXPECT_FALSE(kept.find(c, 1));
}

TEST(ChunkLocations, ALocationReadBeforeAForgetIsNotKept) {
    chunk_locations kept(16);
    auto a = sha256_of("a"), b = sha256_of("b");
    kept.put(a, 0, {"/old.blob", 0, 10}, kept.epoch());
    auto began = kept.epoch();                     // a read of b's chunk begins ...
    kept.forget(a);                                // ... a deletion ends meanwhile ...
    kept.put(b, 0, {"/old.blob", 10, 10}, began);  // ... and the read's location comes back
    EXPECT_FALSE(kept.find(a, 0));
    EXPECT_FALSE(kept.find(b, 0)) << "a location from before the deletion was kept";
    EXPECT_EQ(kept.chunks(), 0u);
    kept.put(b, 0, {"/new.blob", 0, 10}, kept.epoch());
    EXPECT_EQ(kept.find(b, 0)->path, "/new.blob");
}

// The start-up probe: chunks are located only when a probe value was found byte for byte in a
// blob file. A RocksDB reading blob values another way (forced here by skewed offsets) turns
// locating off, and chunks are then served from RocksDB's memory, with the right bytes.
TEST(BlobStore, AFailedLocateProbeServesChunksFromMemory) {
    temp_dir good_dir;
    {
        open_report report;
        auto db = open_database(good_dir.str(), report);
        ASSERT_TRUE(db);
        EXPECT_TRUE(report.locate_verified) << report.locate_detail;
    }
    temp_dir dir;
    open_report report;
    open_hooks skewed;
    skewed.locate_offset_skew = 1;
    auto db = open_database(dir.str(), report, open_mode::read_write, skewed);
    ASSERT_TRUE(db);
    EXPECT_FALSE(report.locate_verified);
    EXPECT_NE(report.locate_detail.find("not the probe value"), std::string::npos)
        << report.locate_detail;
    blob_store blobs(*db);
    constexpr std::uint32_t chunk_size = 64 * 1024;
    auto data = pattern(3 * chunk_size);
    auto d = sha256_of(data);
    ASSERT_TRUE(blobs.begin(d, chunk_size));
    for (std::uint64_t i = 0; i * chunk_size < data.size(); ++i)
        ASSERT_TRUE(blobs.put_chunk(d, i, std::string_view(data).substr(i * chunk_size, chunk_size),
                                    blob_store::durability::unlogged));
    ASSERT_TRUE(blobs.commit(d, data.size(), blob_store::durability::unlogged));
    for (std::uint64_t i = 0; i * chunk_size < data.size(); ++i) {
        chunk c;
        auto span = blobs.locate_chunk(d, i, c);
        ASSERT_TRUE(span);
        EXPECT_FALSE(*span) << "chunk " << i << " located although the probe failed";
        EXPECT_EQ(c.bytes(), std::string_view(data).substr(i * chunk_size, chunk_size));
    }
}

// Network threads mark themselves; a storage call that may block aborts there in builds with
// assertions (the sanitizer build the tests run), and is compiled out of Release builds. A
// memory-only read is allowed anywhere.
TEST(StorageThreads, ABlockingCallOnANetworkThreadIsCaughtWhereAssertionsAreOn) {
    temp_dir dir;
    auto db = open_at(dir);
    blob_store blobs(db);
    auto d = sha256_of("absent");
    std::thread([&] {
        mark_network_thread();
        auto quick = blobs.find(d, read_mode::memory_only);
        EXPECT_TRUE(quick || quick.error() == errc::would_block);
    }).join();
#ifdef NDEBUG
    std::thread([&] {
        mark_network_thread();
        EXPECT_TRUE(blobs.find(d)) << "Release builds never abort";
    }).join();
#else
    EXPECT_DEATH(std::thread([&] {
                     mark_network_thread();
                     (void)blobs.find(d);
                 }).join(),
                 "storage call 'blob_store::find' on a network thread");
#endif
}

TEST(ReferrersStore, KeepsTheListPerSubjectWithItsTime) {
    temp_dir dir;
    auto db = open_at(dir);
    referrers_store referrers(db);
    auto subject = sha256_of("subject");
    auto missing = referrers.find("docker.io", "library/x", subject);
    ASSERT_TRUE(missing);
    EXPECT_FALSE(*missing);
    ASSERT_TRUE(referrers.put("docker.io", "library/x", subject, {R"({"manifests":[]})", 1234}));
    auto found = referrers.find("docker.io", "library/x", subject);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->index, R"({"manifests":[]})");
    EXPECT_EQ((*found)->fetched_ms, 1234);
    auto other = referrers.find("docker.io", "library/y", subject);
    ASSERT_TRUE(other);
    EXPECT_FALSE(*other) << "kept per repository";
}

TEST(Database, AReadOnlyOpenOfAFolderFromBeforeTheReferrersFamilyWorks) {
    temp_dir dir;
    {
        // The column families of a folder written before "referrers" existed.
        rocksdb::Options opts;
        opts.create_if_missing = true;
        opts.create_missing_column_families = true;
        std::vector<rocksdb::ColumnFamilyDescriptor> descs;
        for (const char* name :
             {"default", "blob_chunks", "blob_records", "manifests", "pins", "events", "outbox"})
            descs.emplace_back(name, rocksdb::ColumnFamilyOptions());
        std::vector<rocksdb::ColumnFamilyHandle*> handles;
        rocksdb::DB* raw = nullptr;
        ASSERT_TRUE(rocksdb::DB::Open(opts, dir.str(), descs, &handles, &raw).ok());
        for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
        delete raw;
    }
    open_report report;
    auto db = open_database(dir.str(), report, open_mode::read_only);
    ASSERT_TRUE(db) << report.error_detail;
    referrers_store referrers(*db);
    auto found = referrers.find("docker.io", "library/x", sha256_of("s"));
    ASSERT_TRUE(found);
    EXPECT_FALSE(*found);
    // A read-write open adds the family.
    db = {};
    auto rw = open_database(dir.str(), report);
    ASSERT_TRUE(rw) << report.error_detail;
    EXPECT_TRUE(referrers_store(*rw).put("docker.io", "library/x", sha256_of("s"), {"{}", 1}));
}
