#pragma once
// The contract every storage::pin_store backend must pass: first writer wins (also under
// concurrent callers), compare-and-set changes that fail whole, a tag's changes applied
// atomically, history order, alerts queued only as a change names them, cursor listing with
// limits, O(1) counts that never drift, durability (what a write acknowledged is there for a
// new store over the same state: a restart), deliveries by due time, and history retention.
//
// A backend's test instantiates it with a type that has:
//   storage::pin_store& store();   // the store (opened on first use)
//   storage::pin_store& reopen();  // a new store over the same state; the old one is gone
//
//   INSTANTIATE_TYPED_TEST_SUITE_P(RocksDb, PinStoreContract, ::testing::Types<my_backend>);

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/pin_store.hpp"

namespace regpin::testing {

using storage::alert;
using storage::errc;
using storage::event_type;
using storage::pin;
using storage::pin_change;
using storage::pin_event;
using storage::pin_filter;
using storage::pin_key;
using storage::pin_state;
using storage::pin_store;
using storage::sha256_of;

inline pin make_pin(const std::string& tag, const std::string& body) {
    pin p{{"docker.io", "library/nginx", tag, 15}, sha256_of(body)};
    p.media_type = "application/vnd.oci.image.index.v1+json";
    p.size = body.size();
    p.first_seen_ms = 1000;
    p.last_verified_ms = 2000;
    return p;
}

inline pin_event event_of(event_type type, const pin_key& key, const std::string& actor = "test",
                          std::int64_t time_ms = 0) {
    pin_event e;
    e.type = type;
    e.key = key;
    e.actor = actor;
    e.time_ms = time_ms;
    return e;
}

inline storage::result<pin> first_pull(pin_store& pins, const pin& p,
                                       const std::string& actor = "first-pull") {
    auto e = event_of(event_type::pinned, p.key, actor, p.first_seen_ms);
    e.new_digest = p.manifest_digest.str();
    return pins.create_if_absent(p, e);
}

inline pin_change change_to(const pin& from, std::optional<pin> to, event_type type) {
    pin_change change{from.key, from, std::move(to)};
    change.events.push_back(event_of(type, from.key));
    return change;
}

// `from` serving the manifest `body` instead.
inline pin moved_to(const pin& from, const std::string& body) {
    auto p = from;
    p.manifest_digest = sha256_of(body);
    return p;
}

inline pin awaiting(const pin& from, pin_state state, const std::string& upstream) {
    auto p = from;
    p.state = state;
    p.pending_digest = sha256_of(upstream);
    return p;
}

// Both counts, checked against a full listing so they cannot drift from the stored pins.
inline void expect_counts(const pin_store& pins, std::size_t total, std::size_t awaiting) {
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
    // Listing by state agrees (a store may answer it from an index of awaiting pins).
    std::size_t by_state = 0;
    for (auto st : {pin_state::pending, pin_state::rejected}) {
        pin_filter f;
        f.state = st;
        f.limit = static_cast<std::size_t>(-1);
        auto l = pins.list(f);
        ASSERT_TRUE(l);
        for (const auto& p : *l) EXPECT_EQ(p.state, st);
        by_state += l->size();
    }
    EXPECT_EQ(by_state, awaiting);
}

// The targets of the outbox entries due at `now_ms`, in the order the store gives them.
inline std::vector<std::string> due_targets(const pin_store& pins, std::int64_t now_ms,
                                            std::size_t limit) {
    auto due = pins.due_deliveries(now_ms, limit);
    if (!due) return {"error: " + due.error().message()};
    std::vector<std::string> out;
    for (const auto& e : *due) out.push_back(e.target);
    return out;
}

// A change of `p` that serves alike, with a re-point event at `time_ms` alerted to `targets`.
inline pin_change alerted_at(const pin& p, std::int64_t time_ms,
                             const std::vector<std::string>& targets) {
    pin_change change{p.key, p, p};
    change.events.push_back(event_of(event_type::repointed, p.key, "policy", time_ms));
    for (const auto& t : targets) change.alerts.push_back(alert{0, t});
    return change;
}

template <class Backend>
class PinStoreContract : public ::testing::Test {
protected:
    Backend backend;
};

TYPED_TEST_SUITE_P(PinStoreContract);

TYPED_TEST_P(PinStoreContract, FirstWriterWinsAndLaterCandidatesGetTheOlderPin) {
    auto& pins = this->backend.store();
    auto first = make_pin("1.27", "first manifest");
    auto second = make_pin("1.27", "second manifest");
    auto a = first_pull(pins, first);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->manifest_digest, first.manifest_digest);
    auto b = first_pull(pins, second);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->manifest_digest, first.manifest_digest) << "a pin was overwritten";
    auto found = pins.find(first.key);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->manifest_digest, first.manifest_digest);
}

TYPED_TEST_P(PinStoreContract, ConcurrentFirstPullsHaveExactlyOneWinner) {
    auto& pins = this->backend.store();
    constexpr int callers = 8;
    std::vector<pin> candidates;
    for (int i = 0; i < callers; ++i)
        candidates.push_back(make_pin("race", "candidate " + std::to_string(i)));
    std::vector<std::string> held(callers);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < callers; ++i)
        threads.emplace_back([&, i] {
            ++ready;
            while (ready.load() < callers) std::this_thread::yield();
            auto r = first_pull(pins, candidates[i], "caller-" + std::to_string(i));
            held[i] = r ? r->manifest_digest.str() : "error: " + r.error().message();
        });
    for (auto& t : threads) t.join();
    std::set<std::string> distinct(held.begin(), held.end());
    ASSERT_EQ(distinct.size(), 1u) << "callers got different pins";
    auto winner = *distinct.begin();
    EXPECT_TRUE(std::any_of(candidates.begin(), candidates.end(), [&](const pin& c) {
        return c.manifest_digest.str() == winner;
    })) << winner;
    auto history = pins.history(candidates[0].key);
    ASSERT_TRUE(history);
    ASSERT_EQ(history->size(), 1u) << "one first sight, one event";
    EXPECT_EQ((*history)[0].new_digest, winner);
    expect_counts(pins, 1, 0);
}

TYPED_TEST_P(PinStoreContract, AcceptClassIsPartOfTheKey) {
    auto& pins = this->backend.store();
    auto oci = make_pin("v1", "index");
    auto docker = make_pin("v1", "schema2");
    docker.key.accept_class = 1;
    ASSERT_TRUE(first_pull(pins, oci));
    auto d = first_pull(pins, docker);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->manifest_digest, docker.manifest_digest);
}

TYPED_TEST_P(PinStoreContract, PinsSurviveRestartAndListByRepository) {
    {
        auto& pins = this->backend.store();
        ASSERT_TRUE(first_pull(pins, make_pin("b", "B")));
        ASSERT_TRUE(first_pull(pins, make_pin("a", "A")));
        auto other = make_pin("a", "other repo");
        other.key.repository = "library/nginx-extra";
        ASSERT_TRUE(first_pull(pins, other));
    }
    auto& pins = this->backend.reopen();
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

TYPED_TEST_P(PinStoreContract, ApplyIsCompareAndSetAndRecordsHistory) {
    auto& pins = this->backend.store();
    auto first = make_pin("v1", "A");
    ASSERT_TRUE(first_pull(pins, first));

    auto moved = moved_to(first, "B");
    pin_change change{first.key, first, moved};
    auto e = event_of(event_type::approved, first.key, "token:ops");
    e.old_digest = first.manifest_digest.str();
    e.new_digest = moved.manifest_digest.str();
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
    EXPECT_EQ((*history)[0].type, event_type::pinned);
    EXPECT_EQ((*history)[0].actor, "first-pull");
    EXPECT_EQ((*history)[1].type, event_type::approved);
    EXPECT_EQ((*history)[1].new_digest, sha256_of("B").str());
}

TYPED_TEST_P(PinStoreContract, ATagsChangesApplyTogetherOrNotAtAll) {
    auto& pins = this->backend.store();
    auto oci = make_pin("v1", "A");
    auto docker = make_pin("v1", "A-docker");
    docker.key.accept_class = 1;
    ASSERT_TRUE(first_pull(pins, oci));
    ASSERT_TRUE(first_pull(pins, docker));

    // One of the two was computed from a stale pin: neither changes, no event is written.
    auto stale_docker = awaiting(docker, pin_state::pending, "old");
    std::vector<pin_change> mixed{change_to(oci, std::nullopt, event_type::unpinned),
                                  change_to(stale_docker, std::nullopt, event_type::unpinned)};
    auto refused = pins.apply(mixed);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error(), errc::conflict);
    EXPECT_TRUE(*pins.find(oci.key)) << "a change of a failed set was written";
    EXPECT_TRUE(*pins.find(docker.key));
    EXPECT_EQ(pins.history(oci.key)->size(), 2u) << "only the two first pulls";
    expect_counts(pins, 2, 0);

    std::vector<pin_change> both{change_to(oci, std::nullopt, event_type::unpinned),
                                 change_to(docker, std::nullopt, event_type::unpinned)};
    auto applied = pins.apply(both);
    ASSERT_TRUE(applied);
    ASSERT_EQ(applied->size(), 2u);
    EXPECT_LT((*applied)[0].id, (*applied)[1].id) << "events keep the changes' order";
    EXPECT_FALSE(*pins.find(oci.key));
    EXPECT_FALSE(*pins.find(docker.key));
    expect_counts(pins, 0, 0);

    // Two changes of one key in one set is a caller's mistake, refused whole.
    std::vector<pin_change> twice{change_to(oci, std::nullopt, event_type::unpinned),
                                  change_to(oci, std::nullopt, event_type::unpinned)};
    ASSERT_TRUE(first_pull(pins, oci));
    auto dup = pins.apply(twice);
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error(), errc::invalid_argument);
}

TYPED_TEST_P(PinStoreContract, AlertsAreQueuedAsTheChangeNamesThemDurably) {
    auto p = make_pin("v1", "A");
    {
        auto& pins = this->backend.store();
        ASSERT_TRUE(first_pull(pins, p));
        auto pending = awaiting(p, pin_state::pending, "B");
        pin_change change{p.key, p, pending};
        change.events.push_back(event_of(event_type::repointed, p.key, "policy", 5000));
        change.alerts = {alert{0, "http://a/hook"}, alert{0, "http://b/hook"}};
        ASSERT_TRUE(pins.apply(change));
        EXPECT_EQ(*pins.pending_deliveries(), 2u);
    }
    auto& pins = this->backend.reopen();
    EXPECT_EQ(*pins.pending_deliveries(), 2u) << "the count is rebuilt on reopening";
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
    ASSERT_TRUE(pins.delivered((*due)[0].id)) << "delivered twice is still fine";
    auto now_due = pins.due_deliveries(5000, 10);
    ASSERT_TRUE(now_due);
    EXPECT_TRUE(now_due->empty());
    EXPECT_EQ(*pins.pending_deliveries(), 1u);
    auto found = pins.find(p.key);
    ASSERT_TRUE(found && *found);
    EXPECT_EQ((*found)->state, pin_state::pending);
    EXPECT_EQ((*found)->pending_digest, sha256_of("B"));

    // Ids continue after a restart: a new event never reuses an old id. An event whose change
    // names no alert queues nothing, whatever its type: storage does not decide what alerts.
    auto again = **found;
    pin_change change{p.key, again, again};
    change.events.push_back(event_of(event_type::repointed, p.key));
    auto applied = pins.apply(change);
    ASSERT_TRUE(applied);
    EXPECT_EQ((*applied)[0].id, 3u);
    EXPECT_EQ(*pins.pending_deliveries(), 1u);

    // An alert naming an event the change does not have is refused.
    pin_change bad{p.key, again, again};
    bad.alerts = {alert{0, "http://a/hook"}};
    auto refused = pins.apply(bad);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error(), errc::invalid_argument);
}

TYPED_TEST_P(PinStoreContract, UnpinDeletesThePinButKeepsItsHistory) {
    auto& pins = this->backend.store();
    auto p = make_pin("v1", "A");
    ASSERT_TRUE(first_pull(pins, p));
    ASSERT_TRUE(pins.apply(change_to(p, std::nullopt, event_type::unpinned)));
    auto found = pins.find(p.key);
    ASSERT_TRUE(found);
    EXPECT_FALSE(*found);
    EXPECT_EQ(pins.history(p.key)->size(), 2u);
    auto next = make_pin("v1", "C");
    auto created = first_pull(pins, next);
    ASSERT_TRUE(created);
    EXPECT_EQ(created->manifest_digest, sha256_of("C"));
}

TYPED_TEST_P(PinStoreContract, ListFiltersByRegistryPrefixAndState) {
    auto& pins = this->backend.store();
    auto a = make_pin("a", "A");
    auto b = make_pin("b", "B");
    b.key.repository = "library/redis";
    b.state = pin_state::rejected;
    b.pending_digest = sha256_of("X");
    auto c = make_pin("c", "C");
    c.key.registry = "ghcr.io";
    for (const auto& p : {a, b, c}) ASSERT_TRUE(first_pull(pins, p, "t"));
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

TYPED_TEST_P(PinStoreContract, EventsComeOldestFirstAndFromATime) {
    auto& pins = this->backend.store();
    std::vector<pin> created;
    for (int i = 0; i < 5; ++i) {
        auto p = make_pin("t" + std::to_string(i), "T" + std::to_string(i));
        p.first_seen_ms = 1000 * (i + 1);
        ASSERT_TRUE(first_pull(pins, p));
        created.push_back(p);
    }
    auto all = pins.events(0, 0, 100);
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 5u);
    for (std::size_t i = 1; i < all->size(); ++i) EXPECT_LT((*all)[i - 1].id, (*all)[i].id);
    auto since = pins.events(0, 3000, 100);
    ASSERT_TRUE(since);
    ASSERT_EQ(since->size(), 3u);
    EXPECT_EQ((*since)[0].key.tag, "t2");
    auto one = pins.event((*all)[3].id);
    ASSERT_TRUE(one && *one);
    EXPECT_EQ((*one)->key.tag, "t3");
    auto none = pins.event(9999);
    ASSERT_TRUE(none);
    EXPECT_FALSE(*none);
}

TYPED_TEST_P(PinStoreContract, CountsFollowCreatesRepointsApprovalsAndUnpins) {
    auto& pins = this->backend.store();
    expect_counts(pins, 0, 0);
    auto a = make_pin("a", "A");
    auto b = make_pin("b", "B");
    auto c = make_pin("c", "C");
    for (const auto& p : {a, b, c}) ASSERT_TRUE(first_pull(pins, p));
    ASSERT_TRUE(first_pull(pins, make_pin("a", "A2"))) << "already pinned";
    expect_counts(pins, 3, 0);

    auto a_pending = awaiting(a, pin_state::pending, "A2");
    ASSERT_TRUE(pins.apply(change_to(a, a_pending, event_type::repointed)));
    expect_counts(pins, 3, 1);
    auto b_rejected = awaiting(b, pin_state::rejected, "B2");
    ASSERT_TRUE(pins.apply(change_to(b, b_rejected, event_type::repointed)));
    expect_counts(pins, 3, 2);

    // A pending pin that moves again stays one awaiting pin.
    auto a_again = awaiting(a, pin_state::pending, "A3");
    ASSERT_TRUE(pins.apply(change_to(a_pending, a_again, event_type::repointed)));
    expect_counts(pins, 3, 2);

    ASSERT_TRUE(pins.apply(change_to(a_again, moved_to(a, "A3"), event_type::approved)));
    expect_counts(pins, 3, 1);

    ASSERT_TRUE(pins.apply(change_to(b_rejected, std::nullopt, event_type::unpinned)));
    expect_counts(pins, 2, 0);
    ASSERT_TRUE(pins.apply(change_to(c, std::nullopt, event_type::unpinned)));
    expect_counts(pins, 1, 0);
    ASSERT_TRUE(pins.touch_verified(a.key, 9000));
    expect_counts(pins, 1, 0);
    EXPECT_EQ((*pins.find(a.key))->last_verified_ms, 9000);
}

TYPED_TEST_P(PinStoreContract, RefusedChangesLeaveTheCountsAlone) {
    auto& pins = this->backend.store();
    auto a = make_pin("a", "A");
    ASSERT_TRUE(first_pull(pins, a));
    auto stale = awaiting(a, pin_state::pending, "old upstream");
    auto refused = pins.apply(change_to(stale, std::nullopt, event_type::unpinned));
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error(), errc::conflict);
    auto never_created = make_pin("z", "Z");
    ASSERT_FALSE(pins.apply(change_to(
        never_created, awaiting(never_created, pin_state::rejected, "Z2"), event_type::repointed)));
    expect_counts(pins, 1, 0);
}

TYPED_TEST_P(PinStoreContract, CountsAreRebuiltWhenTheStoreIsReopened) {
    {
        auto& pins = this->backend.store();
        auto a = make_pin("a", "A");
        auto b = make_pin("b", "B");
        auto c = make_pin("c", "C");
        c.key.registry = "ghcr.io";
        for (const auto& p : {a, b, c}) ASSERT_TRUE(first_pull(pins, p));
        ASSERT_TRUE(
            pins.apply(change_to(a, awaiting(a, pin_state::pending, "A2"), event_type::repointed)));
        ASSERT_TRUE(pins.apply(
            change_to(c, awaiting(c, pin_state::rejected, "C2"), event_type::repointed)));
        ASSERT_TRUE(pins.apply(change_to(b, std::nullopt, event_type::unpinned)));
        expect_counts(pins, 2, 2);
    }
    expect_counts(this->backend.reopen(), 2, 2);
}

TYPED_TEST_P(PinStoreContract, ListAfterAKeyPagesThroughThePinsInKeyOrder) {
    auto& pins = this->backend.store();
    auto ghcr = make_pin("a", "G");
    ghcr.key.registry = "ghcr.io";
    auto docker_class1 = make_pin("b", "B1");
    docker_class1.key.accept_class = 1;
    // Created out of order: the listing is in key order (registry, repository, tag, class).
    for (const auto& p :
         {make_pin("c", "C"), ghcr, make_pin("b", "B"), docker_class1, make_pin("a", "A")})
        ASSERT_TRUE(first_pull(pins, p, "t"));
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

// No pin changes without an event (issue 12): a change of what a pin serves, of its state or
// of its pending digest, a creation or a removal, is refused without one; a change of
// bookkeeping alone (last verified, alerted) needs none.
TYPED_TEST_P(PinStoreContract, AChangeOfWhatAPinServesWithoutAnEventIsRefused) {
    auto& pins = this->backend.store();
    auto a = make_pin("a", "A");
    ASSERT_TRUE(first_pull(pins, a));
    const std::vector<std::optional<pin>> silent = {
        moved_to(a, "B"), awaiting(a, pin_state::pending, "B"),
        awaiting(a, pin_state::rejected, "B"), std::nullopt};
    for (const auto& to : silent) {
        auto refused = pins.apply(pin_change{a.key, a, to});
        ASSERT_FALSE(refused);
        EXPECT_EQ(refused.error(), errc::invalid_argument);
    }
    auto never = make_pin("new", "N");
    auto created = pins.apply(pin_change{never.key, std::nullopt, never});
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error(), errc::invalid_argument);
    EXPECT_EQ((*pins.find(a.key))->manifest_digest, a.manifest_digest);
    EXPECT_FALSE(*pins.find(never.key));
    EXPECT_EQ(pins.history(a.key)->size(), 1u);

    auto bookkeeping = a;
    bookkeeping.last_verified_ms = 7000;
    bookkeeping.alerted = {sha256_of("B").str()};
    ASSERT_TRUE(pins.apply(pin_change{a.key, a, bookkeeping}));
    EXPECT_EQ((*pins.find(a.key))->last_verified_ms, 7000);
    expect_counts(pins, 1, 0);
}

TYPED_TEST_P(PinStoreContract, AMemoryOnlyFindNeverContradictsABlockingOne) {
    auto& pins = this->backend.store();
    auto a = make_pin("a", "A");
    ASSERT_TRUE(first_pull(pins, a));
    ASSERT_TRUE(pins.apply(change_to(a, moved_to(a, "A2"), event_type::approved)));
    for (const auto& key : {a.key, make_pin("never", "N").key}) {
        auto blocking = pins.find(key);
        ASSERT_TRUE(blocking);
        auto quick = pins.find(key, storage::read_mode::memory_only);
        if (!quick) {
            EXPECT_EQ(quick.error(), errc::would_block);
            continue;
        }
        ASSERT_EQ(quick->has_value(), blocking->has_value());
        if (*quick) {
            EXPECT_EQ((*quick)->manifest_digest, (*blocking)->manifest_digest);
        }
    }
}

TYPED_TEST_P(PinStoreContract, DueDeliveriesComeByDueTimeNotById) {
    using targets = std::vector<std::string>;
    const std::string a = "http://a/hook", b = "http://b/hook", c = "http://c/hook",
                      d = "http://d/hook";
    {
        auto& pins = this->backend.store();
        auto p = make_pin("v1", "A");
        ASSERT_TRUE(first_pull(pins, p));
        ASSERT_TRUE(pins.apply(alerted_at(p, 5000, {a, b, c, d})));
        auto due = pins.due_deliveries(5000, 10);
        ASSERT_TRUE(due);
        ASSERT_EQ(due->size(), 4u);
        EXPECT_EQ(due_targets(pins, 5000, 10), (targets{a, b, c, d})) << "equal times: by id";

        // a failed twice, b once: they wait behind c and d although their ids are lower.
        auto to_a = (*due)[0], to_b = (*due)[1], to_c = (*due)[2];
        to_a.attempts = 2;
        to_a.next_attempt_ms = 8000;
        to_b.attempts = 1;
        to_b.next_attempt_ms = 7000;
        ASSERT_TRUE(pins.reschedule(to_a));
        ASSERT_TRUE(pins.reschedule(to_b));
        EXPECT_EQ(due_targets(pins, 4999, 10), targets{}) << "nothing is due before its time";
        EXPECT_EQ(due_targets(pins, 6999, 10), (targets{c, d})) << "a and b are not due yet";
        EXPECT_EQ(due_targets(pins, 7000, 10), (targets{c, d, b}));
        EXPECT_EQ(due_targets(pins, 9000, 10), (targets{c, d, b, a}));
        EXPECT_EQ(due_targets(pins, 9000, 3), (targets{c, d, b})) << "at most the limit";

        ASSERT_TRUE(pins.delivered(to_c.id));
        to_c.attempts = 1;
        to_c.next_attempt_ms = 6000;
        ASSERT_TRUE(pins.reschedule(to_c));
        EXPECT_EQ(due_targets(pins, 9000, 10), (targets{d, b, a}))
            << "a delivered alert is never brought back";
        EXPECT_EQ(*pins.pending_deliveries(), 3u);
    }
    auto& pins = this->backend.reopen();
    EXPECT_EQ(*pins.pending_deliveries(), 3u);
    EXPECT_EQ(due_targets(pins, 9000, 10), (targets{d, b, a})) << "the order is rebuilt";
    EXPECT_EQ(due_targets(pins, 6000, 10), (targets{d}));
    auto due = pins.due_deliveries(9000, 10);
    ASSERT_TRUE(due);
    ASSERT_EQ(due->size(), 3u);
    EXPECT_EQ((*due)[2].attempts, 2);
    EXPECT_EQ((*due)[2].next_attempt_ms, 8000);
}

TYPED_TEST_P(PinStoreContract, ForgetBeforeRemovesOldEventsTheirHistoryAndTheirAlerts) {
    auto a = make_pin("a", "A");  // first seen at 1000: event 1
    auto b = make_pin("b", "B");
    b.first_seen_ms = 2000;  // event 2
    {
        auto& pins = this->backend.store();
        ASSERT_TRUE(first_pull(pins, a));
        ASSERT_TRUE(first_pull(pins, b));
        ASSERT_TRUE(pins.apply(alerted_at(a, 3000, {"http://a/hook"})));  // event 3
        ASSERT_TRUE(pins.apply(alerted_at(b, 6000, {"http://a/hook"})));  // event 4
        EXPECT_EQ(*pins.pending_deliveries(), 2u);

        auto first = pins.forget_before(5000, 1);
        ASSERT_TRUE(first);
        EXPECT_EQ(*first, 1u) << "at most the limit";
        EXPECT_FALSE(*pins.event(1));
        EXPECT_TRUE(*pins.event(2));
        EXPECT_EQ(*pins.pending_deliveries(), 2u) << "event 1 had no alert";

        auto rest = pins.forget_before(5000, 100);
        ASSERT_TRUE(rest);
        EXPECT_EQ(*rest, 2u) << "events 2 and 3; event 4 is after the cutoff";
        auto none = pins.forget_before(5000, 100);
        ASSERT_TRUE(none);
        EXPECT_EQ(*none, 0u);

        auto events = pins.events(0, 0, 100);
        ASSERT_TRUE(events);
        ASSERT_EQ(events->size(), 1u);
        EXPECT_EQ((*events)[0].id, 4u);
        for (std::uint64_t id : {1u, 2u, 3u}) {
            auto e = pins.event(id);
            ASSERT_TRUE(e);
            EXPECT_FALSE(*e) << "event " << id << " was kept";
        }
        auto of_a = pins.history(a.key);
        ASSERT_TRUE(of_a);
        EXPECT_TRUE(of_a->empty());
        auto of_b = pins.history(b.key);
        ASSERT_TRUE(of_b);
        ASSERT_EQ(of_b->size(), 1u);
        EXPECT_EQ((*of_b)[0].id, 4u);

        EXPECT_EQ(*pins.pending_deliveries(), 1u) << "the alert of event 3 went with it";
        auto due = pins.due_deliveries(10000, 10);
        ASSERT_TRUE(due);
        ASSERT_EQ(due->size(), 1u);
        EXPECT_EQ((*due)[0].event_id, 4u);

        EXPECT_TRUE(*pins.find(a.key)) << "retention forgets history, never pins";
        EXPECT_TRUE(*pins.find(b.key));
        expect_counts(pins, 2, 0);

        auto newest = pins.forget_before(std::numeric_limits<std::int64_t>::max(), 100);
        ASSERT_TRUE(newest);
        EXPECT_EQ(*newest, 0u) << "the newest event stays, whatever its age";
    }
    auto& pins = this->backend.reopen();
    EXPECT_EQ(*pins.pending_deliveries(), 1u);
    auto of_a = pins.history(a.key);
    ASSERT_TRUE(of_a);
    EXPECT_TRUE(of_a->empty());
    auto applied = pins.apply(change_to(a, a, event_type::repointed));
    ASSERT_TRUE(applied);
    EXPECT_EQ((*applied)[0].id, 5u) << "ids continue after the newest event: none is reused";
}

TYPED_TEST_P(PinStoreContract, ListsATagAndSearchesNamesAndPagesThroughAwaitingPins) {
    auto& pins = this->backend.store();
    auto a = make_pin("a", "A");
    auto a2 = make_pin("a", "A2");
    a2.key.accept_class = 3;
    auto a1 = make_pin("a1", "A1");  // a tag that starts like "a": not one of a's pins
    auto w = make_pin("Web-Frontend", "W");
    w.state = pin_state::pending;
    w.pending_digest = sha256_of("W2");
    auto x = make_pin("x", "X");
    x.state = pin_state::rejected;
    x.pending_digest = sha256_of("X2");
    auto y = make_pin("y", "Y");
    y.state = pin_state::pending;
    y.pending_digest = sha256_of("Y2");
    for (const auto& p : {a, a2, a1, w, x, y}) ASSERT_TRUE(first_pull(pins, p, "t"));
    auto tag = pins.list_tag("docker.io", "library/nginx", "a");
    ASSERT_TRUE(tag);
    ASSERT_EQ(tag->size(), 2u);
    EXPECT_EQ((*tag)[0].key.accept_class, 3) << "key order: the class byte";
    EXPECT_EQ((*tag)[1].key.accept_class, a.key.accept_class);
    EXPECT_TRUE(pins.list_tag("docker.io", "library/nginx", "b")->empty());

    pin_filter f;
    f.contains = "nginx:WEB-front";  // any case
    auto found = pins.list(f);
    ASSERT_TRUE(found);
    ASSERT_EQ(found->size(), 1u);
    EXPECT_EQ((*found)[0].key.tag, "Web-Frontend");
    f.contains = "no-such";
    EXPECT_TRUE(pins.list(f)->empty());

    // Pending pins, one page at a time.
    pin_filter pending;
    pending.state = pin_state::pending;
    pending.limit = 1;
    auto first = pins.list(pending);
    ASSERT_TRUE(first);
    ASSERT_EQ(first->size(), 1u);
    EXPECT_EQ((*first)[0].key.tag, "Web-Frontend");
    pending.after = (*first)[0].key;
    auto second = pins.list(pending);
    ASSERT_TRUE(second);
    ASSERT_EQ(second->size(), 1u);
    EXPECT_EQ((*second)[0].key.tag, "y");
    pending.after = (*second)[0].key;
    EXPECT_TRUE(pins.list(pending)->empty());
    expect_counts(pins, 6, 3);
}

TYPED_TEST_P(PinStoreContract, TheNewestEventIdMovesWithEveryChangeAndSurvivesReopen) {
    auto newest = [](const pin_store& pins) {
        auto id = pins.newest_event_id();
        EXPECT_TRUE(id);
        return id ? *id : std::uint64_t{0};
    };
    auto a = make_pin("a", "A");
    {
        auto& pins = this->backend.store();
        EXPECT_EQ(newest(pins), 0u);
        ASSERT_TRUE(first_pull(pins, a));
        auto first = newest(pins);
        EXPECT_GT(first, 0u);
        // A touch changes nothing a pin serves: no event, the same id.
        ASSERT_TRUE(pins.touch_verified(a.key, 9000));
        EXPECT_EQ(newest(pins), first);
        ASSERT_TRUE(
            pins.apply(change_to(a, awaiting(a, pin_state::pending, "A2"), event_type::repointed)));
        auto second = newest(pins);
        EXPECT_GT(second, first);
        auto all = pins.events(0, 0, 100);
        ASSERT_TRUE(all);
        ASSERT_FALSE(all->empty());
        EXPECT_EQ(all->back().id, second);
    }
    auto& reopened = this->backend.reopen();
    auto all = reopened.events(0, 0, 100);
    ASSERT_TRUE(all);
    ASSERT_FALSE(all->empty());
    EXPECT_EQ(newest(reopened), all->back().id);
}

REGISTER_TYPED_TEST_SUITE_P(
    PinStoreContract, TheNewestEventIdMovesWithEveryChangeAndSurvivesReopen,
    FirstWriterWinsAndLaterCandidatesGetTheOlderPin, ConcurrentFirstPullsHaveExactlyOneWinner,
    AcceptClassIsPartOfTheKey, PinsSurviveRestartAndListByRepository,
    ApplyIsCompareAndSetAndRecordsHistory, ATagsChangesApplyTogetherOrNotAtAll,
    AlertsAreQueuedAsTheChangeNamesThemDurably, UnpinDeletesThePinButKeepsItsHistory,
    ListFiltersByRegistryPrefixAndState, EventsComeOldestFirstAndFromATime,
    CountsFollowCreatesRepointsApprovalsAndUnpins, RefusedChangesLeaveTheCountsAlone,
    CountsAreRebuiltWhenTheStoreIsReopened, ListAfterAKeyPagesThroughThePinsInKeyOrder,
    AChangeOfWhatAPinServesWithoutAnEventIsRefused, AMemoryOnlyFindNeverContradictsABlockingOne,
    DueDeliveriesComeByDueTimeNotById, ForgetBeforeRemovesOldEventsTheirHistoryAndTheirAlerts,
    ListsATagAndSearchesNamesAndPagesThroughAwaitingPins);

}  // namespace regpin::testing
