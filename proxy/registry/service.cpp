#include "proxy/registry/service.hpp"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url.hpp>
#include <nlohmann/json.hpp>

#include "proxy/oci/media_types.hpp"
#include "proxy/oci/range.hpp"
#include "proxy/oci/route.hpp"
#include "proxy/registry/chunk_source.hpp"
#include "proxy/registry/on_pool.hpp"
#include "proxy/registry/router.hpp"
#include "proxy/registry/upstream_ops.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::registry {

namespace asio = boost::asio;
using oci::error_code;

namespace {

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

reply manifest_reply(const storage::digest& d, const storage::manifest& m, bool head) {
    reply r;
    r.header("Content-Type", m.media_type);
    r.header("Docker-Content-Digest", d.str());
    r.header("Etag", "\"" + d.str() + "\"");
    r.content_length = m.bytes.size();
    if (!head) r.body = m.bytes;
    return r;
}

// Serves a stored blob (or a range of it) chunk by chunk (chunk_source: sendfile from the blob
// files on plain connections, else RocksDB's pinned memory).
class stored_blob_stream final : public body_stream {
public:
    stored_blob_stream(storage::blob_store& store, storage::digest d, storage::blob_record rec,
                       std::uint64_t first, std::uint64_t end)
        : source_(store), digest_(std::move(d)), rec_(rec), offset_(first), end_(end) {}

    asio::awaitable<boost::system::result<body_part>> next(bool files) override {
        if (offset_ >= end_) co_return body_part{};
        auto index = offset_ / rec_.chunk_size;
        auto chunk_start = index * rec_.chunk_size;
        auto chunk_bytes = std::min<std::uint64_t>(rec_.chunk_size, rec_.size - chunk_start);
        auto stop = std::min<std::uint64_t>(chunk_bytes, end_ - chunk_start);
        auto part = source_.part(digest_, index, chunk_bytes, offset_ - chunk_start, stop, files);
        if (part) offset_ = chunk_start + stop;
        co_return part;
    }

private:
    chunk_source source_;
    storage::digest digest_;
    storage::blob_record rec_;
    std::uint64_t offset_;
    std::uint64_t end_;
};

reply stored_blob_reply(storage::blob_store& store, const storage::digest& d,
                        const storage::blob_record& rec, bool head, const std::string& range) {
    reply r;
    r.header("Content-Type", "application/octet-stream");
    r.header("Docker-Content-Digest", d.str());
    r.header("Etag", "\"" + d.str() + "\"");
    r.header("Accept-Ranges", "bytes");
    r.header("Cache-Control", "max-age=31536000");
    auto rr = oci::parse_range(range, rec.size);
    std::uint64_t first = 0, end = rec.size;
    if (!range.empty() && rr.outcome == oci::range_outcome::unsatisfiable) {
        auto e = error_reply({error_code::range_invalid, "range not satisfiable"});
        e.header("Content-Range", "bytes */" + std::to_string(rec.size));
        return e;
    }
    if (rr.outcome == oci::range_outcome::partial) {
        r.status = 206;
        first = rr.range.first;
        end = rr.range.last + 1;
        r.header("Content-Range", "bytes " + std::to_string(rr.range.first) + "-" +
                                      std::to_string(rr.range.last) + "/" +
                                      std::to_string(rec.size));
    }
    r.content_length = end - first;
    if (!head && end > first)
        r.stream = std::make_shared<stored_blob_stream>(store, d, rec, first, end);
    r.log_field("cache", "hit");
    return r;
}

const char* route_name(oci::endpoint e) {
    switch (e) {
        case oci::endpoint::base:
            return "base";
        case oci::endpoint::manifest:
            return "manifest";
        case oci::endpoint::blob:
            return "blob";
        case oci::endpoint::tags_list:
            return "tags";
        case oci::endpoint::referrers:
            return "referrers";
    }
    return "-";
}

}  // namespace

service::service(asio::any_io_executor ex, const config::settings& settings,
                 std::shared_ptr<storage::database> db, pin_hooks hooks,
                 upstream::observer upstream_observer)
    : settings_(settings),
      db_(std::move(db)),
      blobs_(db_),
      manifests_(db_),
      pins_(std::make_unique<storage::rocksdb_pin_store>(db_)),
      fetcher_(ex, blobs_, blocking_) {
    std::vector<upstream::registry_client*> raw;
    for (const auto& u : settings_.upstreams) {
        if (!u.tls_verify)
            spdlog::warn("upstream {}: TLS certificate verification is DISABLED", u.registry);
        clients_.push_back(std::make_unique<upstream::registry_client>(ex, u, upstream_observer));
        raw.push_back(clients_.back().get());
    }
    manager_ = std::make_unique<pin_manager>(ex, settings_, *pins_, manifests_, blobs_, fetcher_,
                                             std::move(raw), blocking_, std::move(hooks));
}

service::~service() {
    manager_->stop();
    blocking_.join();
}

void service::start() { manager_->start_sweep(); }
void service::stop() { manager_->stop(); }

asio::awaitable<reply> service::handle(incoming req) {
    auto parsed = oci::parse_route(req.target);
    if (auto* e = std::get_if<oci::error>(&parsed)) {
        auto r = error_reply(*e);
        r.route = "invalid";
        co_return r;
    }
    auto& route = std::get<oci::route>(parsed);
    if (route.kind == oci::endpoint::base) {
        reply r;
        r.body = "{}";
        r.header("Content-Type", "application/json");
        r.route = "base";
        co_return r;
    }
    auto routed_or = route_to_upstream(route, settings_);
    if (auto* e = std::get_if<oci::error>(&routed_or)) co_return error_reply(*e);
    target t{route, std::get<routed>(routed_or), nullptr};
    t.client = clients_[t.where.upstream_index].get();

    reply r;
    switch (route.kind) {
        case oci::endpoint::manifest:
            r = co_await manifest(t, req.head, req.accept);
            break;
        case oci::endpoint::blob:
            r = co_await blob(t, req.head, req.range);
            break;
        case oci::endpoint::tags_list:
            r = co_await tags(t);
            break;
        case oci::endpoint::referrers:
            r = co_await referrers(t, req.accept);
            break;
        case oci::endpoint::base:
            break;
    }
    r.log_field("upstream", t.where.registry);
    r.route = route_name(route.kind);
    if (route.ns) r.header("OCI-Namespace", *route.ns);
    co_return r;
}

asio::awaitable<reply> service::manifest(const target& t, bool head, const std::string& accept) {
    const auto& ref = t.route.reference;
    const auto& registry = t.where.registry;

    auto fetch = [&](const std::string& reference) {
        return fetch_manifest(*t.client, t.where.repository, reference, accept,
                              settings_.manifest_max_bytes);
    };
    // Serves a manifest by digest: the store, else the upstream (verified, then stored).
    // The log's cache column: "pin" for a pinned tag, else "hit" or "miss".
    auto by_digest = [&](const storage::digest& d, bool pinned) -> asio::awaitable<reply> {
        auto cached = manifests_.find(d);
        if (!cached) co_return storage_failure("reading a manifest");
        if (*cached) {
            auto r = manifest_reply(d, **cached, head);
            r.log_field("cache", pinned ? "pin" : "hit");
            co_return r;
        }
        auto got = co_await fetch(d.str());
        if (auto* e = std::get_if<oci::error>(&got)) co_return error_reply(*e);
        auto& f = std::get<fetched_manifest>(got);
        if (!manifests_.put(f.digest, f.manifest)) co_return storage_failure("storing a manifest");
        auto r = manifest_reply(f.digest, f.manifest, head);
        r.log_field("cache", pinned ? "pin" : "miss");
        co_return r;
    };

    if (oci::is_digest_reference(ref))
        co_return co_await by_digest(*storage::digest::parse(ref), false);

    storage::pin_key key{registry, t.where.repository, ref, oci::accept_class(accept)};
    auto existing = pins_->find(key);
    if (!existing) co_return storage_failure("reading a pin");
    // A pin answers whatever the upstream says now (and if its bytes are gone, they are
    // fetched again by digest, never by tag).
    if (*existing) {
        const auto& p = **existing;
        if (p.state == storage::pin_state::rejected) {
            auto pending = p.pending_digest ? p.pending_digest->str() : std::string();
            oci::error e{error_code::denied,
                         storage::display_name(key) +
                             " is rejected by policy: the upstream moved it from " +
                             p.manifest_digest.str() + " to " + pending +
                             "; an operator must approve a digest (regpin pins approve)"};
            e.detail_json = nlohmann::json{
                {"tag", storage::display_name(key)},
                {"pinned", p.manifest_digest.str()},
                {"upstream",
                 pending}}.dump();
            manager_->served(p, t.where.upstream_index);
            auto r = error_reply(e);
            r.log_field("cache", "pin");
            co_return r;
        }
        manager_->served(p, t.where.upstream_index);
        co_return co_await by_digest(p.manifest_digest, true);
    }

    auto got = co_await fetch(ref);
    if (auto* e = std::get_if<oci::error>(&got)) co_return error_reply(*e);
    auto& f = std::get<fetched_manifest>(got);
    if (!manifests_.put(f.digest, f.manifest)) co_return storage_failure("storing a manifest");
    storage::pin candidate{key,      f.digest, f.manifest.media_type, f.manifest.bytes.size(),
                           now_ms(), now_ms()};
    auto* pins = pins_.get();
    const char* actor = "first-pull";
    auto held =
        co_await on_pool<&storage::pin_store::create_if_absent>(blocking_, pins, candidate, actor);
    if (!held) co_return storage_failure("writing a pin");
    if (held->manifest_digest == f.digest) {
        spdlog::info("pinned {}/{}:{} to {} ({})", registry, key.repository, key.tag,
                     f.digest.str(), f.manifest.media_type);
        auto r = manifest_reply(f.digest, f.manifest, head);
        r.log_field("cache", "miss");
        co_return r;
    }
    // Another request pinned this tag first: its digest wins.
    auto m = manifests_.find(held->manifest_digest);
    if (!m || !*m) co_return storage_failure("reading a pinned manifest");
    auto r = manifest_reply(held->manifest_digest, **m, head);
    r.log_field("cache", "pin");
    co_return r;
}

asio::awaitable<reply> service::blob(const target& t, bool head, const std::string& range) {
    auto d = *storage::digest::parse(t.route.reference);
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto rec = blobs_.find(d);
        if (!rec) co_return storage_failure("reading a blob record");
        if (*rec) co_return stored_blob_reply(blobs_, d, **rec, head, range);

        if (head) {
            // Existence check only: ask the upstream, cache nothing.
            upstream::request req;
            req.method = boost::beast::http::verb::head;
            req.target = "/v2/" + t.where.repository + "/blobs/" + d.str();
            req.scope = "repository:" + t.where.repository + ":pull";
            auto resp = co_await t.client->send(req);
            if (!resp) co_return error_reply(transport_error(t.where.registry, resp.error()));
            if (resp->status() != 200)
                co_return error_reply(
                    upstream_error(t.where.registry, resp->status(), error_code::blob_unknown));
            reply r;
            r.header("Content-Type", "application/octet-stream");
            r.header("Docker-Content-Digest", d.str());
            r.header("Accept-Ranges", "bytes");
            r.content_length = resp->content_length().value_or(0);
            r.log_field("cache", "miss");
            co_return r;
        }

        if (!range.empty()) {
            // Partial reads of an uncached blob wait for the verified whole, then read the store.
            oci::error failure;
            if (!co_await fetcher_.wait_complete(d, *t.client, t.where.repository, failure))
                co_return error_reply(failure);
            continue;
        }

        auto started = co_await fetcher_.fetch(d, *t.client, t.where.repository);
        if (auto* e = std::get_if<oci::error>(&started)) co_return error_reply(*e);
        auto& s = std::get<download_started>(started);
        if (s.already_stored) continue;
        reply r;
        r.header("Content-Type", "application/octet-stream");
        r.header("Docker-Content-Digest", d.str());
        r.header("Etag", "\"" + d.str() + "\"");
        r.content_length = s.size;
        r.stream = s.stream;
        r.log_field("cache", "miss");
        co_return r;
    }
    co_return storage_failure("reading a just-stored blob");
}

}  // namespace regpin::proxy::registry
