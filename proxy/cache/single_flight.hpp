#pragma once
// One run of an operation per key among concurrent callers ("single flight"). The first caller
// starts it; everyone who asks for the same key while it runs waits for the same result. The run
// belongs to no caller: it goes on to the end (and fills the cache) when every caller has left.
// Thread-safe: run() may be called from any thread concurrently.
//
// Used for manifests, where a rollout asks for one never-seen tag from many nodes at once and
// Docker Hub counts every manifest GET against the pull quota of regpin's one address. Blobs
// have their own single flight (blob_fetcher), which also shares the body as it streams in.

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/oci/errors.hpp"

namespace regpin::proxy::cache {

template <class T>
class single_flight {
public:
    using value_type = oci::result<T>;
    // Must be a plain function returning a coroutine (not a lambda coroutine: what a lambda
    // captures dies with the lambda); it is called once, on a strand of its own.
    using work_type = std::function<boost::asio::awaitable<value_type>()>;

    explicit single_flight(boost::asio::any_io_executor ex) : ex_(std::move(ex)) {}

    // The result of `work()` for `key`: a run in flight for `key` is joined, else one starts.
    // A run that throws gives every caller 500 UNKNOWN (logged).
    [[nodiscard]] boost::asio::awaitable<value_type> run(std::string key, work_type work) {
        namespace asio = boost::asio;
        auto w = std::make_shared<waker>(co_await asio::this_coro::executor, 1);
        std::shared_ptr<flight> f;
        bool start = false;
        {
            std::lock_guard lock(mutex_);
            auto& slot = flights_[key];
            if (!slot) {
                slot = std::make_shared<flight>();
                start = true;
            }
            f = slot;
            // Under both locks: a run ends by leaving the map first, so a caller that found
            // it here is among the waiters it wakes.
            std::lock_guard flock(f->mutex);
            f->waiters.push_back(w);
        }
        if (start) asio::co_spawn(asio::make_strand(ex_), fly(key, f, work), asio::detached);
        while (true) {
            {
                std::lock_guard flock(f->mutex);
                if (f->value) co_return *f->value;
            }
            auto [ec] = co_await w->async_receive(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return oci::error{oci::error_code::unavailable, "cancelled"};
        }
    }

    // Runs in flight, for tests and metrics.
    std::size_t in_flight() const {
        std::lock_guard lock(mutex_);
        return flights_.size();
    }

private:
    using waker = boost::asio::experimental::concurrent_channel<void(boost::system::error_code)>;

    struct flight {
        std::mutex mutex;
        std::optional<value_type> value;
        std::vector<std::shared_ptr<waker>> waiters;
    };

    boost::asio::awaitable<void> fly(std::string key, std::shared_ptr<flight> f, work_type work) {
        value_type v = oci::error{oci::error_code::unknown, "regpin failed while fetching " + key};
        try {
            v = co_await work();
        } catch (const std::exception& e) {
            spdlog::error("fetching {} failed: {}", key, e.what());
        }
        {
            std::lock_guard lock(mutex_);
            flights_.erase(key);
        }
        std::vector<std::shared_ptr<waker>> ws;
        {
            std::lock_guard flock(f->mutex);
            f->value = std::move(v);
            ws.swap(f->waiters);
        }
        for (auto& w : ws) w->try_send(boost::system::error_code{});
    }

    boost::asio::any_io_executor ex_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::shared_ptr<flight>> flights_;
};

}  // namespace regpin::proxy::cache
