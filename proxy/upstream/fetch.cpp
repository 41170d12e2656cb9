#include "proxy/upstream/fetch.hpp"

#include <spdlog/spdlog.h>
#include <boost/beast/http/verb.hpp>

#include "proxy/oci/manifest.hpp"
#include "proxy/oci/route.hpp"

namespace regpin::proxy::upstream {

namespace asio = boost::asio;
using oci::error_code;

oci::error upstream_error(const std::string& registry, unsigned status, error_code not_found) {
    if (status == 404) return {not_found, "not found on upstream " + registry};
    if (status == 401 || status == 403)
        return {error_code::name_unknown, "upstream " + registry + " refused access (" +
                                              std::to_string(status) +
                                              "): the repository does not exist or regpin's "
                                              "credentials cannot read it"};
    if (status == 429)
        return {error_code::unavailable, "upstream " + registry + " is rate limiting regpin (429)"};
    return {error_code::unavailable,
            "upstream " + registry + " answered " + std::to_string(status)};
}

oci::error transport_error(const std::string& registry, const boost::system::error_code& ec) {
    if (ec == errc::offline)
        return {error_code::unavailable,
                "not in regpin's cache, and regpin is offline: " + registry +
                    " is never contacted (import a bundle or prefetch while online)"};
    return {error_code::unavailable, "upstream " + registry + " unavailable: " + ec.message()};
}

std::string pull_scope(const std::string& repository) {
    return "repository:" + repository + ":pull";
}

asio::awaitable<oci::result<named_digest>> head_manifest(registry_client& client,
                                                         const std::string& repository,
                                                         const std::string& reference,
                                                         const std::string& accept) {
    const auto& registry = client.settings().registry;
    request req;
    req.method = boost::beast::http::verb::head;
    req.target = "/v2/" + repository + "/manifests/" + reference;
    req.accept = accept;
    req.scope = pull_scope(repository);
    auto resp = co_await client.send(req);
    if (!resp) co_return transport_error(registry, resp.error());
    if (resp->status() != 200)
        co_return upstream_error(registry, resp->status(), error_code::manifest_unknown);
    named_digest named;
    // Only the registry's own word names a digest, not a host it redirected to.
    auto source = client.url_at(resp->final_origin());
    if (!source) co_return named;
    named.source = *source;
    if (auto h = resp->headers()["Docker-Content-Digest"]; !h.empty())
        if (auto d = storage::digest::parse(h)) named.digest = *d;
    co_return named;
}

asio::awaitable<oci::result<std::uint64_t>> head_blob(registry_client& client,
                                                      std::string repository, storage::digest d) {
    request req;
    req.method = boost::beast::http::verb::head;
    req.target = "/v2/" + repository + "/blobs/" + d.str();
    req.scope = pull_scope(repository);
    auto resp = co_await client.send(req);
    if (!resp) co_return transport_error(client.settings().registry, resp.error());
    if (resp->status() != 200)
        co_return upstream_error(client.settings().registry, resp->status(),
                                 error_code::blob_unknown);
    co_return resp->content_length().value_or(0);
}

asio::awaitable<oci::result<fetched_manifest>> fetch_manifest(registry_client& client,
                                                              const std::string& repository,
                                                              const std::string& reference,
                                                              const std::string& accept,
                                                              std::size_t max_bytes) {
    const auto& registry = client.settings().registry;
    // Docker Hub counts manifest GETs against the pull quota: near its end, none for content
    // regpin does not have (what is pinned and cached never comes here).
    if (auto low = client.quota_exhausted()) {
        oci::error e{error_code::unavailable,
                     "upstream " + registry + "'s pull quota is at " +
                         std::to_string(low->remaining) +
                         " (ratelimit-remaining), at or below pin_checks.ratelimit_low_water: "
                         "regpin fetches no new manifests from it for " +
                         std::to_string(low->wait.count()) +
                         " s; pinned and cached content is still served"};
        e.retry_after_s = static_cast<unsigned>(low->wait.count());
        co_return e;
    }
    request req;
    req.target = "/v2/" + repository + "/manifests/" + reference;
    req.accept = accept;
    req.scope = pull_scope(repository);
    auto resp = co_await client.send(req);
    if (!resp) co_return transport_error(registry, resp.error());
    if (resp->status() != 200) {
        auto status = resp->status();
        (void)co_await resp->read_all(64 * 1024);
        co_return upstream_error(registry, status, error_code::manifest_unknown);
    }
    // A manifest is small: it must arrive whole within one read timeout.
    auto body = co_await resp->read_all(
        max_bytes, std::chrono::steady_clock::now() + client.settings().read_timeout);
    if (!body) {
        if (body.error() == http::errc::body_too_large)
            co_return oci::error{error_code::unavailable, "upstream " + registry +
                                                              " sent a manifest larger than " +
                                                              std::to_string(max_bytes) + " bytes"};
        co_return transport_error(registry, body.error());
    }
    auto media_type = oci::manifest_media_type(resp->headers()["Content-Type"], *body);
    std::optional<storage::digest> expected;
    auto source = client.url_at(resp->final_origin()).value_or(std::string());
    if (oci::is_digest_reference(reference)) {
        expected = storage::digest::parse(reference);
        if (source.empty()) source = client.url_at(resp->sent_to()).value_or(std::string());
    } else if (source.empty()) {
        // A tag's bytes from another host (a redirect): pinned only when the registry itself
        // names their digest, never on the word of wherever it sent regpin.
        auto named = co_await head_manifest(client, repository, reference, accept);
        if (!named) co_return named.error();
        if (!named->digest) {
            spdlog::error(
                "manifest {}:{} from {}: redirected to {}, and the registry names no "
                "digest for it; not cached",
                repository, reference, registry, resp->final_origin().key());
            co_return oci::error{error_code::unavailable,
                                 "upstream " + registry + " redirected the manifest of " +
                                     reference +
                                     " to another host without naming its digest itself"};
        }
        expected = *named->digest;
        source = named->source;
    } else if (auto h = resp->headers()["Docker-Content-Digest"]; !h.empty()) {
        expected = storage::digest::parse(h);
        if (!expected)
            co_return oci::error{
                error_code::unavailable,
                "upstream " + registry + " sent an unusable Docker-Content-Digest"};
    }
    // The digest covers the body, or a signed schema 1 manifest's JWS payload
    // (storage::digested_bytes).
    storage::manifest m{media_type, std::move(*body)};
    if (expected && !storage::manifest_matches(*expected, m)) {
        spdlog::error(
            "manifest {}:{} from {}: {} does not hash to {}; not cached", repository, reference,
            registry,
            media_type == storage::docker_schema1_signed ? "the signed payload" : "the body",
            expected->str());
        co_return oci::error{
            error_code::unavailable,
            "upstream " + registry + " sent a manifest that does not match its digest"};
    }
    auto d = expected ? expected : storage::manifest_digest(m);
    if (!d)
        co_return oci::error{error_code::unavailable,
                             "upstream " + registry +
                                 " sent a signed schema 1 manifest whose signatures describe no "
                                 "payload"};
    co_return fetched_manifest{*d, std::move(m), std::move(source)};
}

}  // namespace regpin::proxy::upstream
