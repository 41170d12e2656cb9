// The pin store contract (pin_store_contract.hpp) against the etcd backend, on a real etcd
// server (tests/unit/etcd_process.hpp); and what only a shared store must do: two replicas over
// one prefix see each other's pins, split the checks and elect one webhook sender.
#include "proxy/etcd/pin_store.hpp"

#include <atomic>

#include "tests/unit/etcd_process.hpp"
#include "tests/unit/pin_store_contract.hpp"

namespace regpin::testing {

namespace {

std::string fresh_prefix() {
    static std::atomic<int> n{0};
    return "/unit-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "/";
}

std::unique_ptr<proxy::etcd::etcd_pin_store> open_store(const std::string& prefix,
                                                        const std::string& replica) {
    proxy::etcd::options o;
    o.endpoints = {etcd_process::shared().endpoint()};
    proxy::etcd::store_options so;
    so.prefix = prefix;
    so.replica = replica;
    so.lease_ttl = std::chrono::seconds(3);
    auto s = std::make_unique<proxy::etcd::etcd_pin_store>(o, so);
    if (!s->wait_loaded(std::chrono::seconds(10))) throw std::runtime_error("not loaded");
    return s;
}

// Waits (bounded) until `done` holds; false when it never did.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
}

class etcd_backend {
public:
    storage::pin_store& store() {
        if (!store_) open();
        return *store_;
    }
    storage::pin_store& reopen() {
        store_.reset();
        open();
        return *store_;
    }

private:
    void open() {
        store_ = open_store(prefix_, "unit-replica");
        // The contract reads the outbox at once: wait until this replica sends webhooks.
        auto* s = store_.get();
        if (!eventually([s] { return s->leading(); }))
            throw std::runtime_error("never became the webhook sender");
    }

    std::string prefix_ = fresh_prefix();
    std::unique_ptr<proxy::etcd::etcd_pin_store> store_;
};

}  // namespace

INSTANTIATE_TYPED_TEST_SUITE_P(Etcd, PinStoreContract, ::testing::Types<etcd_backend>);

TEST(EtcdPinStore, ReplicasSeeEachOthersPinsAndTheFirstWriterWinsAcrossThem) {
    auto prefix = fresh_prefix();
    auto a = open_store(prefix, "a");
    auto b = open_store(prefix, "b");
    auto p = make_pin("v1", "A");
    auto q = make_pin("v1", "B");
    auto won = first_pull(*a, p);
    ASSERT_TRUE(won);
    EXPECT_EQ(won->manifest_digest, p.manifest_digest);
    // b has not seen it yet or has; either way its create-if-absent returns a's pin.
    auto lost = first_pull(*b, q);
    ASSERT_TRUE(lost);
    EXPECT_EQ(lost->manifest_digest, p.manifest_digest) << "the loser serves the winner's digest";
    ASSERT_TRUE(eventually([&] {
        auto f = b->find(p.key, storage::read_mode::memory_only);
        return f && *f && (*f)->manifest_digest == p.manifest_digest;
    }));
    auto history = a->history(p.key);
    ASSERT_TRUE(history);
    EXPECT_EQ(history->size(), 1u) << "one event for the one pin";

    // An unpin through b is seen by a through the watch.
    auto held = b->find(p.key);
    ASSERT_TRUE(held && *held);
    pin_change unpin{p.key, **held, std::nullopt};
    unpin.events.push_back(event_of(event_type::unpinned, p.key, "token:ops"));
    ASSERT_TRUE(b->apply(unpin));
    EXPECT_TRUE(eventually([&] {
        auto f = a->find(p.key, storage::read_mode::memory_only);
        return f && !*f;
    }));
    EXPECT_TRUE(eventually([&] { return *a->count() == 0u; }));
}

TEST(EtcdPinStore, ConcurrentFirstSightsOnTwoReplicasPinOneDigest) {
    auto prefix = fresh_prefix();
    auto a = open_store(prefix, "a");
    auto b = open_store(prefix, "b");
    constexpr int tags = 20;
    std::vector<std::string> got_a(tags), got_b(tags);
    std::thread ta([&] {
        for (int i = 0; i < tags; ++i) {
            auto r = first_pull(*a, make_pin("t" + std::to_string(i), "A" + std::to_string(i)));
            got_a[i] = r ? r->manifest_digest.str() : "error";
        }
    });
    std::thread tb([&] {
        for (int i = 0; i < tags; ++i) {
            auto r = first_pull(*b, make_pin("t" + std::to_string(i), "B" + std::to_string(i)));
            got_b[i] = r ? r->manifest_digest.str() : "error";
        }
    });
    ta.join();
    tb.join();
    for (int i = 0; i < tags; ++i) {
        EXPECT_NE(got_a[i], "error");
        EXPECT_EQ(got_a[i], got_b[i]) << "tag t" << i << ": both replicas serve one digest";
        auto h = a->history(make_pin("t" + std::to_string(i), "").key);
        ASSERT_TRUE(h);
        EXPECT_EQ(h->size(), 1u) << "one pinned event per tag, cluster-wide";
    }
    auto events = a->events(0, 0, 1000);
    ASSERT_TRUE(events);
    ASSERT_EQ(events->size(), static_cast<std::size_t>(tags));
    for (std::size_t i = 1; i < events->size(); ++i)
        EXPECT_LT((*events)[i - 1].id, (*events)[i].id) << "ids increase in commit order";
}

TEST(EtcdPinStore, ChecksAreSplitAndOneReplicaSendsWebhooks) {
    auto prefix = fresh_prefix();
    auto a = open_store(prefix, "a");
    auto b = open_store(prefix, "b");
    ASSERT_TRUE(eventually([&] { return a->members() == 2 && b->members() == 2; }));
    ASSERT_TRUE(eventually([&] { return a->leading() != b->leading(); }))
        << "exactly one replica sends webhooks";
    int on_a = 0, on_b = 0;
    for (int i = 0; i < 200; ++i) {
        auto key = make_pin("c" + std::to_string(i), "").key;
        bool x = a->checks_here(key), y = b->checks_here(key);
        EXPECT_NE(x, y) << "each pin is checked by exactly one of the two";
        on_a += x;
        on_b += y;
    }
    EXPECT_GT(on_a, 50);
    EXPECT_GT(on_b, 50);
    // The sender goes: the other takes over once its lease is revoked.
    bool a_led = a->leading();
    if (a_led)
        a.reset();
    else
        b.reset();
    auto& rest = a_led ? *b : *a;
    EXPECT_TRUE(eventually([&] { return rest.leading(); }));
    EXPECT_TRUE(eventually([&] { return rest.members() == 1; }));
    EXPECT_TRUE(rest.checks_here(make_pin("c0", "").key));
}

}  // namespace regpin::testing
