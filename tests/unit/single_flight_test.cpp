#include "proxy/cache/single_flight.hpp"

#include <atomic>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace {

namespace asio = boost::asio;
using regpin::proxy::cache::single_flight;
using regpin::proxy::oci::error;
using regpin::proxy::oci::error_code;
using regpin::proxy::oci::result;

// The run under test: counts its starts, then waits until `gate` is cancelled, so every caller
// has joined before it ends.
asio::awaitable<result<int>> counted(std::atomic<int>* starts, asio::steady_timer* gate,
                                     int value) {
    starts->fetch_add(1);
    auto [ec] = co_await gate->async_wait(asio::as_tuple(asio::use_awaitable));
    (void)ec;
    co_return value;
}

asio::awaitable<result<int>> throwing() {
    throw std::runtime_error("boom");
    co_return 0;
}

asio::awaitable<void> ask(single_flight<int>* flights, std::string key,
                          single_flight<int>::work_type work, std::vector<result<int>>* out,
                          std::atomic<int>* done) {
    auto got = co_await flights->run(key, work);
    out->push_back(got);
    done->fetch_add(1);
}

TEST(SingleFlight, ConcurrentCallersOfOneKeyShareOneRunAndItsResult) {
    asio::io_context ioc;
    single_flight<int> flights(ioc.get_executor());
    std::atomic<int> starts{0}, done{0};
    asio::steady_timer gate(ioc, asio::steady_timer::time_point::max());
    std::vector<result<int>> answers;
    single_flight<int>::work_type work = [&] { return counted(&starts, &gate, 42); };
    for (int i = 0; i < 16; ++i)
        asio::co_spawn(ioc, ask(&flights, "k", work, &answers, &done), asio::detached);
    // Every caller joins before the run may end.
    while (starts.load() == 0 || flights.in_flight() == 0) ioc.run_one();
    for (int i = 0; i < 64 && ioc.poll_one(); ++i) {
    }
    EXPECT_EQ(flights.in_flight(), 1u);
    gate.cancel();
    ioc.run();
    EXPECT_EQ(starts.load(), 1);
    ASSERT_EQ(answers.size(), 16u);
    for (const auto& a : answers) {
        ASSERT_TRUE(a.has_value());
        EXPECT_EQ(*a, 42);
    }
    EXPECT_EQ(flights.in_flight(), 0u);
}

TEST(SingleFlight, DifferentKeysRunSeparatelyAndAKeyRunsAgainAfterItsRunEnded) {
    asio::io_context ioc;
    single_flight<int> flights(ioc.get_executor());
    std::atomic<int> starts{0}, done{0};
    asio::steady_timer gate(ioc);  // expired: runs end at once
    std::vector<result<int>> answers;
    single_flight<int>::work_type work = [&] { return counted(&starts, &gate, 7); };
    asio::co_spawn(ioc, ask(&flights, "a", work, &answers, &done), asio::detached);
    asio::co_spawn(ioc, ask(&flights, "b", work, &answers, &done), asio::detached);
    ioc.run();
    ioc.restart();
    asio::co_spawn(ioc, ask(&flights, "a", work, &answers, &done), asio::detached);
    ioc.run();
    EXPECT_EQ(starts.load(), 3);
    EXPECT_EQ(answers.size(), 3u);
}

TEST(SingleFlight, ARunThatThrowsGivesEveryCallerAnUnknownError) {
    asio::io_context ioc;
    single_flight<int> flights(ioc.get_executor());
    std::atomic<int> done{0};
    std::vector<result<int>> answers;
    single_flight<int>::work_type work = [] { return throwing(); };
    asio::co_spawn(ioc, ask(&flights, "k", work, &answers, &done), asio::detached);
    asio::co_spawn(ioc, ask(&flights, "k", work, &answers, &done), asio::detached);
    ioc.run();
    ASSERT_EQ(answers.size(), 2u);
    for (const auto& a : answers) {
        ASSERT_FALSE(a.has_value());
        EXPECT_EQ(a.error().code, error_code::unknown);
    }
    EXPECT_EQ(flights.in_flight(), 0u);
}

}  // namespace
