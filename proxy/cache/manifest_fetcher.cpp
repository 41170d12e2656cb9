#include "proxy/cache/manifest_fetcher.hpp"

#include <boost/beast/http/verb.hpp>

#include "proxy/cache/fetch_through.hpp"
#include "proxy/oci/media_types.hpp"

namespace regpin::proxy::cache {

namespace asio = boost::asio;

manifest_fetcher::manifest_fetcher(asio::any_io_executor ex, store::content& content)
    : content_(content), flights_(std::move(ex)) {}

std::string manifest_fetcher::flight_key(const upstream::registry_client& client,
                                         const std::string& repository,
                                         const std::string& reference, const std::string& accept) {
    // Clients of one accept class get one answer from the upstream (pins are kept per class),
    // so the class, not the exact Accept value, tells fetches apart.
    return client.settings().registry + " " + repository + " " + reference + " " +
           std::to_string(oci::accept_class(accept));
}

asio::awaitable<oci::result<found_manifest>> manifest_fetcher::by_digest(
    upstream::registry_client& client, std::string repository, storage::digest d,
    std::string accept, std::size_t max_bytes) {
    auto cached = co_await content_.find_manifest(d);
    if (!cached) co_return storage_error("reading a manifest");
    if (*cached) co_return found_manifest{std::move(**cached), true};
    auto* self = this;
    auto* upstream = &client;
    single_flight<found_manifest>::work_type work = [self, upstream, repository, d, accept,
                                                     max_bytes] {
        return self->fetch_and_store(*upstream, repository, d, accept, max_bytes);
    };
    auto key = flight_key(client, repository, d.str(), accept);
    co_return co_await flights_.run(key, work);
}

asio::awaitable<oci::result<found_manifest>> manifest_fetcher::fetch_and_store(
    upstream::registry_client& client, std::string repository, storage::digest d,
    std::string accept, std::size_t max_bytes) {
    // Stored meanwhile by a fetch that ended between the caller's look and this one's start.
    auto cached = co_await content_.find_manifest(d);
    if (!cached) co_return storage_error("reading a manifest");
    if (*cached) co_return found_manifest{std::move(**cached), true};
    const auto reference = d.str();
    auto got = co_await upstream::fetch_manifest(client, repository, reference, accept, max_bytes);
    if (!got) co_return got.error();
    auto stored = co_await content_.put_manifest(got->digest, got->manifest);
    if (!stored) co_return storage_error("storing a manifest", stored.error());
    co_return found_manifest{std::move(got->manifest), false};
}

asio::awaitable<oci::result<upstream::fetched_manifest>> manifest_fetcher::by_tag(
    upstream::registry_client& client, std::string repository, std::string tag, std::string accept,
    std::size_t max_bytes, bool head_first) {
    if (head_first) {
        auto head = co_await upstream::head_manifest(client, repository, tag, accept);
        if (!head) co_return head.error();
        if (head->digest) {
            const auto d = *head->digest;
            auto found = co_await by_digest(client, repository, d, accept, max_bytes);
            if (!found) co_return found.error();
            co_return upstream::fetched_manifest{d, std::move(found->manifest),
                                                 std::move(head->source)};
        }
    }
    co_return co_await upstream::fetch_manifest(client, repository, tag, accept, max_bytes);
}

}  // namespace regpin::proxy::cache
