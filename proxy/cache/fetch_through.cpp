#include "proxy/cache/fetch_through.hpp"

#include <spdlog/spdlog.h>

#include "storage/errors.hpp"

namespace regpin::proxy::cache {

namespace asio = boost::asio;

oci::error storage_error(const char* what) {
    spdlog::error("storage failure while {}", what);
    return {oci::error_code::unknown, std::string("cache storage failure while ") + what};
}

oci::error storage_error(const char* what, const boost::system::error_code& ec) {
    if (ec != storage::errc::unavailable) return storage_error(what);
    // Never a local decision another replica could contradict: the client retries later.
    spdlog::warn("pin store unreachable while {}: 503", what);
    oci::error e{oci::error_code::unavailable,
                 std::string("the pin store (etcd) cannot be reached while ") + what +
                     "; this tag has no pin in memory yet, so it cannot be answered"};
    e.retry_after_s = 5;
    return e;
}

asio::awaitable<std::optional<std::string>> small_blob(blob_fetcher& fetcher,
                                                       upstream::registry_client& client,
                                                       std::string repository, storage::digest d,
                                                       std::uint64_t limit) {
    auto bytes = co_await fetcher.content().read_small_blob(d, limit);
    if (bytes && *bytes) co_return std::move(**bytes);
    if (!bytes) co_return std::nullopt;
    auto record = co_await fetcher.content().find_blob(d);
    if (record && *record) co_return std::nullopt;  // stored, but larger than the limit
    auto done = co_await fetcher.wait_complete(d, client, repository);
    if (!done) co_return std::nullopt;
    bytes = co_await fetcher.content().read_small_blob(d, limit);
    if (bytes && *bytes) co_return std::move(**bytes);
    co_return std::nullopt;
}

}  // namespace regpin::proxy::cache
