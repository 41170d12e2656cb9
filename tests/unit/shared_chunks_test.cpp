#include <gtest/gtest.h>

#include <latch>
#include <thread>
#include <vector>

#include "proxy/store/shared_chunks.hpp"
#include "storage/blob_store.hpp"
#include "storage/database.hpp"
#include "tests/unit/temp_dir.hpp"

using regpin::proxy::store::shared_chunks;
using namespace regpin::storage;
using regpin::testing::temp_dir;

namespace {

struct stored_blob {
    temp_dir dir;
    std::shared_ptr<database> db;
    std::unique_ptr<blob_store> blobs;
    std::string data = blob_data();
    digest d = sha256_of(data);

    static std::string blob_data() {
        return std::string(1024, 'a') + std::string(1024, 'b') + std::string(1024, 'c');
    }

    stored_blob() {
        open_report report;
        auto opened = open_database(dir.str(), report);
        if (!opened) throw std::runtime_error("open failed: " + report.error_detail);
        db = *opened;
        blobs = std::make_unique<blob_store>(db);
        if (!blobs->begin(d, 1024)) throw std::runtime_error("begin");
        for (std::uint64_t i = 0; i < 3; ++i)
            if (!blobs->put_chunk(d, i, std::string_view(data).substr(i * 1024, 1024)))
                throw std::runtime_error("put");
        if (!blobs->commit(d, data.size())) throw std::runtime_error("commit");
    }
};

}  // namespace

TEST(SharedChunks, ReadersOfOneChunkShareOneCopyThatGoesWithTheLastReader) {
    stored_blob b;
    shared_chunks copies;
    auto first = copies.get(*b.blobs, b.d, 1);
    ASSERT_TRUE(first);
    EXPECT_EQ((*first)->bytes(), std::string(1024, 'b'));
    auto second = copies.get(*b.blobs, b.d, 1);
    ASSERT_TRUE(second);
    EXPECT_EQ(first->get(), second->get()) << "a second reader got its own copy";
    EXPECT_EQ(copies.find(b.d, 1).get(), first->get());
    EXPECT_EQ(copies.find(b.d, 0), nullptr);
    auto other = copies.get(*b.blobs, b.d, 2);
    ASSERT_TRUE(other);
    EXPECT_NE(other->get(), first->get());
    EXPECT_EQ(copies.size(), 2u);
    first->reset();
    EXPECT_EQ(copies.size(), 2u) << "a copy went while a reader held it";
    second->reset();
    other->reset();
    EXPECT_EQ(copies.size(), 0u) << "copies outlived their readers";
    EXPECT_EQ(copies.find(b.d, 1), nullptr);
}

TEST(SharedChunks, AdoptedBytesAreSharedAndAnotherCopyIsDropped) {
    stored_blob b;
    shared_chunks copies;
    chunk read;
    ASSERT_TRUE(b.blobs->read_chunk(b.d, 0, read));
    auto adopted = copies.adopt(b.d, 0, std::move(read));
    EXPECT_EQ(adopted->bytes(), std::string(1024, 'a'));
    auto got = copies.get(*b.blobs, b.d, 0);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->get(), adopted.get());
    chunk again;
    ASSERT_TRUE(b.blobs->read_chunk(b.d, 0, again));
    EXPECT_EQ(copies.adopt(b.d, 0, std::move(again)).get(), adopted.get());
}

TEST(SharedChunks, ConcurrentReadersOfAChunkGetOneCopy) {
    stored_blob b;
    shared_chunks copies;
    constexpr int readers = 16;
    std::vector<shared_chunks::chunk_ptr> got(readers);
    std::latch start(readers);
    std::vector<std::thread> threads;
    for (int i = 0; i < readers; ++i)
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            auto r = copies.get(*b.blobs, b.d, 2);
            if (r) got[i] = *r;
        });
    for (auto& t : threads) t.join();
    for (const auto& p : got) {
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(p.get(), got[0].get());
    }
    got.clear();
    EXPECT_EQ(copies.size(), 0u);
}

TEST(SharedChunks, AMissingChunkIsAnErrorAndLeavesNothingBehind) {
    stored_blob b;
    shared_chunks copies;
    EXPECT_FALSE(copies.get(*b.blobs, b.d, 7));
    EXPECT_EQ(copies.size(), 0u);
}
