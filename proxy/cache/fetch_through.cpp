#include "proxy/cache/fetch_through.hpp"

#include <spdlog/spdlog.h>

#include "proxy/upstream/fetch.hpp"
#include "storage/errors.hpp"
namespace regpin::proxy::cache {

namespace asio = boost::asio;

oci::error storage_error(const char* what) {
    spdlog::error("storage failure while {}", what);
    return {oci::error_code::unknown, std::string("cache storage failure while ") + what};
}

oci::error storage_error(const char* what, const boost::system::error_code& ec) {
    if (ec == storage::errc::no_space) {
        // storage/database.cpp logged it (once a second at most).
        oci::error e{oci::error_code::unavailable,
                     std::string("regpin's data folder is full (no space left on its disk) "
                                 "while ") +
                         what +
                         ": cached content is still served, nothing new can be stored until "
                         "space comes back"};
        e.retry_after_s = 30;
        return e;
    }
    if (ec != storage::errc::unavailable) return storage_error(what);
    // Never a local decision another replica could contradict: the client retries later.
    spdlog::warn("pin store unreachable while {}: 503", what);
    oci::error e{oci::error_code::unavailable,
                 std::string("the pin store (etcd) cannot be reached while ") + what +
                     "; this tag has no pin in memory yet, so it cannot be answered"};
    e.retry_after_s = 5;
    return e;
}

asio::awaitable<std::optional<std::string>> small_blob(store::content& content,
                                                       upstream::registry_client& client,
                                                       std::string repository, storage::digest d,
                                                       std::uint64_t limit) {
    auto bytes = co_await content.read_small_blob(d, limit);
    if (!bytes) co_return std::nullopt;
    if (*bytes) co_return std::move(**bytes);
    auto record = co_await content.find_blob(d);
    if (record && *record) co_return std::nullopt;  // stored, but larger than the limit
    // Not through the blob fetcher: its downloads run to the end, and a descriptor can name a
    // blob of any size. Not stored either: a client that pulls the image caches it.
    upstream::request req;
    req.target = "/v2/" + repository + "/blobs/" + d.str();
    req.scope = upstream::pull_scope(repository);
    auto resp = co_await client.send(req);
    if (!resp || resp->status() != 200) co_return std::nullopt;
    if (auto announced = resp->content_length(); announced && *announced > limit) {
        spdlog::info("blob {} from {}: {} bytes, more than the {} regpin reads for itself", d.str(),
                     client.settings().registry, *announced, limit);
        co_return std::nullopt;
    }
    auto body = co_await resp->read_all(limit);
    if (!body || !storage::matches(d, *body)) co_return std::nullopt;
    co_return std::move(*body);
}

}  // namespace regpin::proxy::cache
