#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "storage/blob_store.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"
#include "storage/rocksdb_pin_store.hpp"
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

pin make_pin(const std::string& tag, const std::string& body) {
    pin p{{"docker.io", "library/nginx", tag, 15}, sha256_of(body)};
    p.media_type = "application/vnd.oci.image.index.v1+json";
    p.size = body.size();
    p.first_seen_ms = 1000;
    p.last_verified_ms = 2000;
    return p;
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
    std::string out, chunk;
    for (std::uint64_t i = 0; i * (*rec)->chunk_size < (*rec)->size; ++i) {
        EXPECT_TRUE(blobs.read_chunk(d, i, chunk));
        out += chunk;
    }
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

TEST(PinStore, FirstWriterWinsAndLaterCandidatesGetTheOlderPin) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto first = make_pin("1.27", "first manifest");
    auto second = make_pin("1.27", "second manifest");
    auto a = pins.create_if_absent(first, "test");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->manifest_digest, first.manifest_digest);
    auto b = pins.create_if_absent(second, "test");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->manifest_digest, first.manifest_digest) << "a pin was overwritten";
    auto found = pins.find(first.key);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->manifest_digest, first.manifest_digest);
}

TEST(PinStore, AcceptClassIsPartOfTheKey) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto oci = make_pin("v1", "index");
    auto docker = make_pin("v1", "schema2");
    docker.key.accept_class = 1;
    ASSERT_TRUE(pins.create_if_absent(oci, "test"));
    auto d = pins.create_if_absent(docker, "test");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->manifest_digest, docker.manifest_digest);
}

TEST(PinStore, PinsSurviveRestartAndListByRepository) {
    temp_dir dir;
    {
        auto db = open_at(dir);
        rocksdb_pin_store pins(db);
        ASSERT_TRUE(pins.create_if_absent(make_pin("b", "B"), "test"));
        ASSERT_TRUE(pins.create_if_absent(make_pin("a", "A"), "test"));
        auto other = make_pin("a", "other repo");
        other.key.repository = "library/nginx-extra";
        ASSERT_TRUE(pins.create_if_absent(other, "test"));
    }
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto found = pins.find(make_pin("a", "A").key);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->manifest_digest, sha256_of("A"));
    EXPECT_EQ((*found)->first_seen_ms, 1000);
    auto listed = pins.list_repository("docker.io", "library/nginx");
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 2u);
    EXPECT_EQ((*listed)[0].key.tag, "a");
    EXPECT_EQ((*listed)[1].key.tag, "b");
}

TEST(Database, SecondOpenOfALiveFolderSaysLocked) {
    temp_dir dir;
    auto db = open_at(dir);
    open_report report;
    auto again = open_database(dir.str(), report);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), errc::locked);
}

TEST(PinStore, ApplyIsCompareAndSetAndRecordsHistory) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto first = make_pin("v1", "A");
    ASSERT_TRUE(pins.create_if_absent(first, "first-pull"));

    auto moved = first;
    moved.manifest_digest = sha256_of("B");
    pin_change change{first.key, first, moved};
    pin_event e;
    e.type = "approved";
    e.key = first.key;
    e.old_digest = first.manifest_digest.str();
    e.new_digest = moved.manifest_digest.str();
    e.actor = "token:ops";
    change.events.push_back(e);
    auto applied = pins.apply(change);
    ASSERT_TRUE(applied);
    ASSERT_EQ(applied->size(), 1u);
    EXPECT_EQ((*applied)[0].id, 2u) << "the first-pull event has id 1";

    // The same change again was computed from a pin that no longer holds.
    auto stale = pins.apply(change);
    ASSERT_FALSE(stale);
    EXPECT_EQ(stale.error(), errc::conflict);

    auto history = pins.history(first.key);
    ASSERT_TRUE(history);
    ASSERT_EQ(history->size(), 2u);
    EXPECT_EQ((*history)[0].type, "pinned");
    EXPECT_EQ((*history)[0].actor, "first-pull");
    EXPECT_EQ((*history)[1].type, "approved");
    EXPECT_EQ((*history)[1].new_digest, sha256_of("B").str());
}

TEST(PinStore, RepointEventsQueueOneDeliveryPerTargetDurably) {
    temp_dir dir;
    auto p = make_pin("v1", "A");
    {
        auto db = open_at(dir);
        rocksdb_pin_store pins(db);
        ASSERT_TRUE(pins.create_if_absent(p, "first-pull"));
        auto pending = p;
        pending.state = pin_state::pending;
        pending.pending_digest = sha256_of("B");
        pin_change change{p.key, p, pending};
        pin_event e;
        e.type = "repointed";
        e.key = p.key;
        e.time_ms = 5000;
        change.events.push_back(e);
        change.alert_targets = {"http://a/hook", "http://b/hook"};
        ASSERT_TRUE(pins.apply(change));
    }
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto due = pins.due_deliveries(5000, 10);
    ASSERT_TRUE(due);
    ASSERT_EQ(due->size(), 2u);
    EXPECT_EQ((*due)[0].target, "http://a/hook");
    EXPECT_EQ((*due)[0].event_id, 2u);
    auto later = (*due)[1];
    later.attempts = 1;
    later.next_attempt_ms = 9000;
    ASSERT_TRUE(pins.reschedule(later));
    ASSERT_TRUE(pins.delivered((*due)[0].id));
    auto now_due = pins.due_deliveries(5000, 10);
    ASSERT_TRUE(now_due);
    EXPECT_TRUE(now_due->empty());
    EXPECT_EQ(*pins.pending_deliveries(), 1u);
    auto found = pins.find(p.key);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->state, pin_state::pending);
    EXPECT_EQ((*found)->pending_digest, sha256_of("B"));

    // Ids continue after a restart: a new event never reuses an old id.
    auto again = **found;
    pin_change change{p.key, again, again};
    pin_event e;
    e.type = "approved";
    e.key = p.key;
    change.events.push_back(e);
    auto applied = pins.apply(change);
    ASSERT_TRUE(applied);
    EXPECT_EQ((*applied)[0].id, 3u);
}

TEST(PinStore, UnpinDeletesThePinButKeepsItsHistory) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto p = make_pin("v1", "A");
    ASSERT_TRUE(pins.create_if_absent(p, "first-pull"));
    pin_change change{p.key, p, std::nullopt};
    pin_event e;
    e.type = "unpinned";
    e.key = p.key;
    change.events.push_back(e);
    ASSERT_TRUE(pins.apply(change));
    auto found = pins.find(p.key);
    ASSERT_TRUE(found);
    EXPECT_FALSE(*found);
    EXPECT_EQ(pins.history(p.key)->size(), 2u);
    auto next = make_pin("v1", "C");
    auto created = pins.create_if_absent(next, "first-pull");
    ASSERT_TRUE(created);
    EXPECT_EQ(created->manifest_digest, sha256_of("C"));
}

TEST(PinStore, ListFiltersByRegistryPrefixAndState) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto a = make_pin("a", "A");
    auto b = make_pin("b", "B");
    b.key.repository = "library/redis";
    b.state = pin_state::rejected;
    b.pending_digest = sha256_of("X");
    auto c = make_pin("c", "C");
    c.key.registry = "ghcr.io";
    for (const auto& p : {a, b, c}) ASSERT_TRUE(pins.create_if_absent(p, "t"));
    EXPECT_EQ(pins.list({})->size(), 3u);
    EXPECT_EQ(pins.list({"docker.io"})->size(), 2u);
    EXPECT_EQ(pins.list({"docker.io", "library/re"})->size(), 1u);
    pin_filter rejected{"", "", pin_state::rejected};
    auto r = pins.list(rejected);
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0].key.tag, "b");
    EXPECT_EQ(*pins.count(), 3u);
    auto events = pins.events(1, 0, 10);
    ASSERT_TRUE(events);
    EXPECT_EQ(events->size(), 2u) << "events after id 1";
    EXPECT_EQ(pins.events(0, 0, 1)->size(), 1u);
    EXPECT_TRUE(pins.events(0, 0, 0)->empty()) << "a limit of 0 reads nothing";
}

namespace {

// Both counts, checked against a full listing so they cannot drift from the stored pins.
void expect_counts(const rocksdb_pin_store& pins, std::size_t total, std::size_t awaiting) {
    auto n = pins.count();
    auto a = pins.count_awaiting();
    ASSERT_TRUE(n && a);
    EXPECT_EQ(*n, total);
    EXPECT_EQ(*a, awaiting);
    pin_filter all;
    all.limit = static_cast<std::size_t>(-1);
    auto listed = pins.list(all);
    ASSERT_TRUE(listed);
    EXPECT_EQ(listed->size(), total);
    EXPECT_EQ(static_cast<std::size_t>(
                  std::count_if(listed->begin(), listed->end(),
                                [](const pin& p) { return p.state != pin_state::pinned; })),
              awaiting);
}

pin_change change_to(const pin& from, std::optional<pin> to, const std::string& type) {
    pin_change change{from.key, from, std::move(to)};
    pin_event e;
    e.type = type;
    e.key = from.key;
    change.events.push_back(e);
    return change;
}

pin awaiting(const pin& from, pin_state state, const std::string& upstream) {
    auto p = from;
    p.state = state;
    p.pending_digest = sha256_of(upstream);
    return p;
}

}  // namespace

TEST(PinStore, CountsFollowCreatesRepointsApprovalsAndUnpins) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    expect_counts(pins, 0, 0);
    auto a = make_pin("a", "A");
    auto b = make_pin("b", "B");
    auto c = make_pin("c", "C");
    for (const auto& p : {a, b, c}) ASSERT_TRUE(pins.create_if_absent(p, "first-pull"));
    ASSERT_TRUE(pins.create_if_absent(make_pin("a", "A2"), "first-pull")) << "already pinned";
    expect_counts(pins, 3, 0);

    auto a_pending = awaiting(a, pin_state::pending, "A2");
    ASSERT_TRUE(pins.apply(change_to(a, a_pending, "repointed")));
    expect_counts(pins, 3, 1);
    auto b_rejected = awaiting(b, pin_state::rejected, "B2");
    ASSERT_TRUE(pins.apply(change_to(b, b_rejected, "repointed")));
    expect_counts(pins, 3, 2);

    // A pending pin that moves again stays one awaiting pin.
    auto a_again = awaiting(a, pin_state::pending, "A3");
    ASSERT_TRUE(pins.apply(change_to(a_pending, a_again, "repointed")));
    expect_counts(pins, 3, 2);

    auto a_approved = a;
    a_approved.manifest_digest = sha256_of("A3");
    ASSERT_TRUE(pins.apply(change_to(a_again, a_approved, "approved")));
    expect_counts(pins, 3, 1);

    ASSERT_TRUE(pins.apply(change_to(b_rejected, std::nullopt, "unpinned")));
    expect_counts(pins, 2, 0);
    ASSERT_TRUE(pins.apply(change_to(c, std::nullopt, "unpinned")));
    expect_counts(pins, 1, 0);
    ASSERT_TRUE(pins.touch_verified(a.key, 9000));
    expect_counts(pins, 1, 0);
}

TEST(PinStore, RefusedChangesLeaveTheCountsAlone) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto a = make_pin("a", "A");
    ASSERT_TRUE(pins.create_if_absent(a, "first-pull"));
    auto stale = awaiting(a, pin_state::pending, "old upstream");
    auto refused = pins.apply(change_to(stale, std::nullopt, "unpinned"));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error(), errc::conflict);
    auto never_created = make_pin("z", "Z");
    ASSERT_FALSE(pins.apply(
        change_to(never_created, awaiting(never_created, pin_state::rejected, "Z2"), "repointed")));
    expect_counts(pins, 1, 0);
}

TEST(PinStore, CountsAreRebuiltWhenTheDatabaseIsReopened) {
    temp_dir dir;
    {
        auto db = open_at(dir);
        rocksdb_pin_store pins(db);
        auto a = make_pin("a", "A");
        auto b = make_pin("b", "B");
        auto c = make_pin("c", "C");
        c.key.registry = "ghcr.io";
        for (const auto& p : {a, b, c}) ASSERT_TRUE(pins.create_if_absent(p, "first-pull"));
        ASSERT_TRUE(pins.apply(change_to(a, awaiting(a, pin_state::pending, "A2"), "repointed")));
        ASSERT_TRUE(pins.apply(change_to(c, awaiting(c, pin_state::rejected, "C2"), "repointed")));
        ASSERT_TRUE(pins.apply(change_to(b, std::nullopt, "unpinned")));
        expect_counts(pins, 2, 2);
    }
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    expect_counts(pins, 2, 2);
}

TEST(PinStore, ListAfterAKeyPagesThroughThePinsInKeyOrder) {
    temp_dir dir;
    auto db = open_at(dir);
    rocksdb_pin_store pins(db);
    auto ghcr = make_pin("a", "G");
    ghcr.key.registry = "ghcr.io";
    auto docker_class1 = make_pin("b", "B1");
    docker_class1.key.accept_class = 1;
    // Created out of order: the listing is in key order (registry, repository, tag, class).
    for (const auto& p :
         {make_pin("c", "C"), ghcr, make_pin("b", "B"), docker_class1, make_pin("a", "A")})
        ASSERT_TRUE(pins.create_if_absent(p, "t"));
    auto names = [](const std::vector<pin>& listed) {
        std::vector<std::string> out;
        for (const auto& p : listed)
            out.push_back(p.key.registry + "/" + p.key.tag + "#" +
                          std::to_string(p.key.accept_class));
        return out;
    };
    using names_t = std::vector<std::string>;

    pin_filter page;
    page.limit = 2;
    auto first = pins.list(page);
    ASSERT_TRUE(first);
    EXPECT_EQ(names(*first), (names_t{"docker.io/a#15", "docker.io/b#1"}));

    // Strictly after an existing key: the key itself is not repeated.
    page.after = first->back().key;
    auto second = pins.list(page);
    ASSERT_TRUE(second);
    EXPECT_EQ(names(*second), (names_t{"docker.io/b#15", "docker.io/c#15"}));

    page.after = second->back().key;
    auto third = pins.list(page);
    ASSERT_TRUE(third);
    EXPECT_EQ(names(*third), (names_t{"ghcr.io/a#15"})) << "fewer than asked: the end";

    page.after = third->back().key;
    auto past_end = pins.list(page);
    ASSERT_TRUE(past_end);
    EXPECT_TRUE(past_end->empty());

    pin_filter none_asked;
    none_asked.limit = 0;
    auto zero = pins.list(none_asked);
    ASSERT_TRUE(zero);
    EXPECT_TRUE(zero->empty()) << "a limit of 0 lists nothing";

    // A cursor that names no stored pin (unpinned meanwhile) starts at the next key.
    page.after = pin_key{"docker.io", "library/nginx", "bb", 15};
    page.limit = 10;
    auto from_gone = pins.list(page);
    ASSERT_TRUE(from_gone);
    EXPECT_EQ(names(*from_gone), (names_t{"docker.io/c#15", "ghcr.io/a#15"}));

    // With a registry filter: a cursor before the registry starts at its first pin, one past
    // it lists nothing.
    pin_filter in_ghcr{"ghcr.io"};
    in_ghcr.after = make_pin("a", "A").key;
    auto ghcr_pins = pins.list(in_ghcr);
    ASSERT_TRUE(ghcr_pins);
    EXPECT_EQ(names(*ghcr_pins), (names_t{"ghcr.io/a#15"}));
    pin_filter in_docker{"docker.io"};
    in_docker.after = ghcr.key;
    auto none = pins.list(in_docker);
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
    in_docker.after = make_pin("a", "A").key;
    auto rest = pins.list(in_docker);
    ASSERT_TRUE(rest);
    EXPECT_EQ(names(*rest), (names_t{"docker.io/b#1", "docker.io/b#15", "docker.io/c#15"}));
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
