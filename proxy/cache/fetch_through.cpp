#include "proxy/cache/fetch_through.hpp"

#include <spdlog/spdlog.h>

#include "proxy/upstream/fetch.hpp"

namespace regpin::proxy::cache {

namespace asio = boost::asio;

oci::error storage_error(const char* what) {
    spdlog::error("storage failure while {}", what);
    return {oci::error_code::unknown, std::string("cache storage failure while ") + what};
}

asio::awaitable<oci::result<found_manifest>> manifest_by_digest(
    store::content& content, upstream::registry_client& client, std::string repository,
    storage::digest d, std::string accept, std::size_t max_bytes) {
    auto cached = co_await content.find_manifest(d);
    if (!cached) co_return storage_error("reading a manifest");
    if (*cached) co_return found_manifest{std::move(**cached), true};
    auto got = co_await upstream::fetch_manifest(client, repository, d.str(), accept, max_bytes);
    if (!got) co_return got.error();
    auto stored = co_await content.put_manifest(got->digest, got->manifest);
    if (!stored) co_return storage_error("storing a manifest");
    co_return found_manifest{std::move(got->manifest), false};
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
