#pragma once
// Blocking storage calls (reads that may reach the disk, synced writes, chunk writes, flushes)
// from a coroutine: run on a thread pool, never on a network thread. The facades of this module
// (content.hpp, pin_records.hpp) are its only users.
//
//   auto r = co_await on_pool<&storage::manifest_store::find>(pool, &manifests, d, mode);
//
// The arguments are copied into the coroutine frames as value parameters: no lambda, no
// closure, because g++ 12 destroys a coroutine lambda's captures, and temporaries passed to a
// coroutine inside a co_await expression, twice (proxy/README.md). Pass lvalues, or values
// with nothing to destroy (pointers, string_views, numbers).

#include <functional>
#include <optional>
#include <type_traits>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "storage/errors.hpp"

namespace regpin::proxy::store {

namespace detail {

// co_spawn needs a default-constructible result, hence the optional.
template <auto Fn, class... Args>
boost::asio::awaitable<std::optional<std::invoke_result_t<decltype(Fn), Args&...>>> call(
    Args... args) {
    co_return std::invoke(Fn, args...);
}

}  // namespace detail

// Fn(args...) on `pool`; the caller resumes on its own executor with the result.
template <auto Fn, class... Args>
boost::asio::awaitable<std::invoke_result_t<decltype(Fn), Args&...>> on_pool(
    boost::asio::thread_pool& pool, Args... args) {
    auto r =
        co_await boost::asio::co_spawn(pool, detail::call<Fn>(args...), boost::asio::use_awaitable);
    co_return std::move(*r);
}

// A point read `Fn(store, key, mode)`: answered inline when RocksDB has it in memory
// (read_mode::memory_only), else read on `pool`. The fast path costs no thread hop.
template <auto Fn, class Store, class Key>
boost::asio::awaitable<std::invoke_result_t<decltype(Fn), const Store*, Key&, storage::read_mode>>
memory_first(boost::asio::thread_pool& pool, const Store* store, Key key) {
    auto r = std::invoke(Fn, store, key, storage::read_mode::memory_only);
    if (r || r.error() != storage::errc::would_block) co_return r;
    auto mode = storage::read_mode::may_block;
    co_return co_await on_pool<Fn>(pool, store, key, mode);
}

}  // namespace regpin::proxy::store
