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
#include "proxy/registry/router.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::registry {

namespace asio = boost::asio;
using oci::error_code;

reply error_reply(const oci::error& e) {
    reply r;
    r.status = e.status();
    r.body = e.body();
    r.header("Content-Type", "application/json");
    return r;
}

struct service::target {
    oci::route route;
    routed where;
    upstream::client* client = nullptr;
};

namespace {

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

reply storage_failure(const char* what) {
    spdlog::error("storage failure while {}", what);
    return error_reply({error_code::unknown, std::string("cache storage failure while ") + what});
}

// Maps an upstream transport error or non-success status to what the client gets. Never 429:
// containerd retries that in a tight loop; 503 makes it fall back at once.
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
    return {error_code::unavailable, "upstream " + registry + " unavailable: " + ec.message()};
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

// Serves a stored blob (or a range of it) chunk by chunk.
class stored_blob_stream final : public body_stream {
public:
    stored_blob_stream(storage::blob_store& store, storage::digest d, storage::blob_record rec,
                       std::uint64_t first, std::uint64_t end)
        : store_(store), digest_(std::move(d)), rec_(rec), offset_(first), end_(end) {}

    asio::awaitable<boost::system::result<std::string_view>> next() override {
        if (offset_ >= end_) co_return std::string_view{};
        auto index = offset_ / rec_.chunk_size;
        if (!store_.read_chunk(digest_, index, buf_))
            co_return make_error_code(boost::system::errc::io_error);
        auto start = offset_ - index * rec_.chunk_size;
        auto stop = std::min<std::uint64_t>(buf_.size(), end_ - index * rec_.chunk_size);
        if (start >= stop) co_return make_error_code(boost::system::errc::io_error);
        offset_ += stop - start;
        co_return std::string_view(buf_).substr(start, stop - start);
    }

private:
    storage::blob_store& store_;
    storage::digest digest_;
    storage::blob_record rec_;
    std::uint64_t offset_;
    std::uint64_t end_;
    std::string buf_;
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
    r.cache = "hit";
    return r;
}

// Runs on the blocking pool (the write is synced). A named coroutine rather than a lambda:
// g++ 12 destroys a coroutine lambda's by-value captures twice. co_spawn needs a
// default-constructible result, hence the optional.
asio::awaitable<std::optional<storage::result<storage::pin>>> create_pin(storage::pin_store* pins,
                                                                         storage::pin candidate) {
    co_return pins->create_if_absent(candidate);
}

struct fetched_manifest {
    storage::digest digest;
    storage::manifest manifest;
};

}  // namespace

service::service(asio::any_io_executor ex, const config::settings& settings,
                 std::shared_ptr<storage::database> db)
    : settings_(settings),
      db_(std::move(db)),
      blobs_(db_),
      manifests_(db_),
      pins_(std::make_unique<storage::rocksdb_pin_store>(db_)),
      fetcher_(ex, blobs_) {
    for (const auto& u : settings_.upstreams) {
        if (!u.tls_verify)
            spdlog::warn("upstream {}: TLS certificate verification is DISABLED", u.registry);
        clients_.push_back(std::make_unique<upstream::client>(ex, u));
    }
}

service::~service() { blocking_.join(); }

asio::awaitable<reply> service::handle(incoming req) {
    auto parsed = oci::parse_route(req.target);
    if (auto* e = std::get_if<oci::error>(&parsed)) co_return error_reply(*e);
    auto& route = std::get<oci::route>(parsed);
    if (route.kind == oci::endpoint::base) {
        reply r;
        r.body = "{}";
        r.header("Content-Type", "application/json");
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
    r.upstream = t.where.registry;
    if (route.ns) r.header("OCI-Namespace", *route.ns);
    co_return r;
}

asio::awaitable<reply> service::manifest(const target& t, bool head, const std::string& accept) {
    const auto& ref = t.route.reference;
    const auto& registry = t.where.registry;

    // Fetches ref from the upstream and checks its digest; the bytes are not stored yet.
    auto fetch = [&](const std::string& reference)
        -> asio::awaitable<std::variant<fetched_manifest, oci::error>> {
        upstream::request req;
        req.target = "/v2/" + t.where.repository + "/manifests/" + reference;
        req.accept = accept;
        req.scope = "repository:" + t.where.repository + ":pull";
        auto resp = co_await t.client->send(req);
        if (!resp) co_return transport_error(registry, resp.error());
        if (resp->status() != 200) {
            auto status = resp->status();
            (void)co_await resp->read_all(64 * 1024);
            co_return upstream_error(registry, status, error_code::manifest_unknown);
        }
        auto body = co_await resp->read_all(settings_.manifest_max_bytes);
        if (!body) {
            if (body.error() == upstream::errc::body_too_large)
                co_return oci::error{error_code::unavailable,
                                     "upstream " + registry + " sent a manifest larger than " +
                                         std::to_string(settings_.manifest_max_bytes) + " bytes"};
            co_return transport_error(registry, body.error());
        }
        auto media_type = oci::strip_parameters(resp->headers()["Content-Type"]);
        if (media_type.empty()) {
            auto j = nlohmann::json::parse(*body, nullptr, false);
            if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string())
                media_type = j["mediaType"].get<std::string>();
        }
        auto computed = storage::sha256_of(*body);
        std::optional<storage::digest> expected;
        if (oci::is_digest_reference(reference)) {
            expected = storage::digest::parse(reference);
        } else if (auto h = resp->headers()["Docker-Content-Digest"]; !h.empty()) {
            expected = storage::digest::parse(h);
            if (!expected)
                co_return oci::error{
                    error_code::unavailable,
                    "upstream " + registry + " sent an unusable Docker-Content-Digest"};
        }
        if (expected && !storage::matches(*expected, *body)) {
            spdlog::error("manifest {}:{} from {}: body hashes to {}, expected {}; not cached",
                          t.where.repository, reference, registry, computed.str(), expected->str());
            co_return oci::error{
                error_code::unavailable,
                "upstream " + registry + " sent a manifest that does not match its digest"};
        }
        fetched_manifest f{expected ? *expected : computed, {media_type, std::move(*body)}};
        co_return f;
    };

    if (oci::is_digest_reference(ref)) {
        auto d = *storage::digest::parse(ref);
        auto cached = manifests_.find(d);
        if (!cached) co_return storage_failure("reading a manifest");
        if (*cached) {
            auto r = manifest_reply(d, **cached, head);
            r.cache = "hit";
            co_return r;
        }
        auto got = co_await fetch(ref);
        if (auto* e = std::get_if<oci::error>(&got)) co_return error_reply(*e);
        auto& f = std::get<fetched_manifest>(got);
        if (!manifests_.put(f.digest, f.manifest)) co_return storage_failure("storing a manifest");
        auto r = manifest_reply(f.digest, f.manifest, head);
        r.cache = "miss";
        co_return r;
    }

    storage::pin_key key{registry, t.where.repository, ref, oci::accept_class(accept)};
    auto existing = pins_->find(key);
    if (!existing) co_return storage_failure("reading a pin");
    if (*existing) {
        const auto& p = **existing;
        auto m = manifests_.find(p.manifest_digest);
        if (!m) co_return storage_failure("reading a manifest");
        if (*m) {
            auto r = manifest_reply(p.manifest_digest, **m, head);
            r.cache = "pin";
            co_return r;
        }
        // The pin outlived its manifest bytes (they are re-fetched by digest, never by tag).
        auto got = co_await fetch(p.manifest_digest.str());
        if (auto* e = std::get_if<oci::error>(&got)) co_return error_reply(*e);
        auto& f = std::get<fetched_manifest>(got);
        if (!manifests_.put(f.digest, f.manifest)) co_return storage_failure("storing a manifest");
        auto r = manifest_reply(f.digest, f.manifest, head);
        r.cache = "pin";
        co_return r;
    }

    auto got = co_await fetch(ref);
    if (auto* e = std::get_if<oci::error>(&got)) co_return error_reply(*e);
    auto& f = std::get<fetched_manifest>(got);
    if (!manifests_.put(f.digest, f.manifest)) co_return storage_failure("storing a manifest");
    storage::pin candidate{key,      f.digest, f.manifest.media_type, f.manifest.bytes.size(),
                           now_ms(), now_ms()};
    auto* pins = pins_.get();
    auto written =
        co_await asio::co_spawn(blocking_, create_pin(pins, candidate), asio::use_awaitable);
    if (!written || !*written) co_return storage_failure("writing a pin");
    auto& held = *written;
    if (held->manifest_digest == f.digest) {
        spdlog::info("pinned {}/{}:{} to {} ({})", registry, key.repository, key.tag,
                     f.digest.str(), f.manifest.media_type);
        auto r = manifest_reply(f.digest, f.manifest, head);
        r.cache = "miss";
        co_return r;
    }
    // Another request pinned this tag first: its digest wins.
    auto m = manifests_.find(held->manifest_digest);
    if (!m || !*m) co_return storage_failure("reading a pinned manifest");
    auto r = manifest_reply(held->manifest_digest, **m, head);
    r.cache = "pin";
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
            r.cache = "miss";
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
        r.cache = "miss";
        co_return r;
    }
    co_return storage_failure("reading a just-stored blob");
}

asio::awaitable<reply> service::tags(const target& t) {
    const auto& registry = t.where.registry;
    std::optional<std::size_t> n;
    if (t.route.n) {
        const auto& s = *t.route.n;
        if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), ::isdigit))
            co_return error_reply(
                {error_code::pagination_number_invalid, "n must be a non-negative integer"});
        n = std::stoul(s);
    }

    std::vector<std::string> tags;
    bool from_pins = false;
    std::string next = "/v2/" + t.where.repository + "/tags/list";
    std::optional<oci::error> failure;
    for (int page = 0; page < 100 && !next.empty(); ++page) {
        upstream::request req;
        req.target = next;
        req.scope = "repository:" + t.where.repository + ":pull";
        next.clear();
        auto resp = co_await t.client->send(req);
        if (!resp) {
            failure = transport_error(registry, resp.error());
            break;
        }
        auto status = resp->status();
        auto link = std::string(resp->headers()["Link"]);
        auto body = co_await resp->read_all(16 * 1024 * 1024);
        if (status != 200) {
            failure = upstream_error(registry, status, error_code::name_unknown);
            break;
        }
        if (!body) {
            failure = transport_error(registry, body.error());
            break;
        }
        auto j = nlohmann::json::parse(*body, nullptr, false);
        if (!j.is_object()) {
            failure = oci::error{error_code::unavailable,
                                 "upstream " + registry + " sent an invalid tag list"};
            break;
        }
        if (j.contains("tags") && j["tags"].is_array())
            for (const auto& tag : j["tags"])
                if (tag.is_string()) tags.push_back(tag.get<std::string>());
        // Link: </v2/repo/tags/list?n=100&last=x>; rel="next"
        auto lt = link.find('<'), gt = link.find('>');
        if (lt != std::string::npos && gt != std::string::npos && gt > lt &&
            link.find("rel=\"next\"") != std::string::npos) {
            next = link.substr(lt + 1, gt - lt - 1);
            if (next.rfind("/v2/", 0) != 0) next.clear();  // only same-origin paths
        }
    }
    if (failure) {
        // Offline: the tags regpin has pinned are still an honest (partial) answer.
        auto pinned = pins_->list_repository(registry, t.where.repository);
        if (!pinned || pinned->empty() || failure->code != error_code::unavailable)
            co_return error_reply(*failure);
        for (const auto& p : *pinned) tags.push_back(p.key.tag);
        from_pins = true;
    }
    std::sort(tags.begin(), tags.end());
    tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
    auto begin = tags.begin();
    if (t.route.last) begin = std::upper_bound(tags.begin(), tags.end(), *t.route.last);
    auto end = tags.end();
    bool more = false;
    if (n && static_cast<std::size_t>(end - begin) > *n) {
        end = begin + static_cast<std::ptrdiff_t>(*n);
        more = *n > 0;
    }
    nlohmann::json out = {{"name", t.route.name}, {"tags", std::vector<std::string>(begin, end)}};
    reply r;
    r.body = out.dump();
    r.header("Content-Type", "application/json");
    if (more) {
        boost::urls::url link("/v2/" + t.route.name + "/tags/list");
        link.params().append({"n", std::to_string(*n)});
        link.params().append({"last", *(end - 1)});
        if (t.route.ns) link.params().append({"ns", *t.route.ns});
        r.header("Link", "<" + std::string(link.buffer()) + ">; rel=\"next\"");
    }
    if (from_pins)
        r.header("Warning", "299 - \"upstream unavailable: only pinned tags are listed\"");
    r.cache = from_pins ? "pin" : "miss";
    co_return r;
}

asio::awaitable<reply> service::referrers(const target& t, const std::string& accept) {
    upstream::request req;
    boost::urls::url u("/v2/" + t.where.repository + "/referrers/" + t.route.reference);
    if (t.route.artifact_type) u.params().append({"artifactType", *t.route.artifact_type});
    req.target = std::string(u.buffer());
    req.accept = accept;
    req.scope = "repository:" + t.where.repository + ":pull";
    auto resp = co_await t.client->send(req);
    if (!resp) co_return error_reply(transport_error(t.where.registry, resp.error()));
    auto status = resp->status();
    auto content_type = oci::strip_parameters(resp->headers()["Content-Type"]);
    auto filters = std::string(resp->headers()["OCI-Filters-Applied"]);
    auto link = std::string(resp->headers()["Link"]);
    auto body = co_await resp->read_all(settings_.manifest_max_bytes);
    if (status == 404) {
        // No referrers API upstream: clients fall back to the sha256-<hex> tag schema.
        co_return error_reply(
            {error_code::manifest_unknown,
             "upstream " + t.where.registry + " does not support the referrers API"});
    }
    if (status != 200)
        co_return error_reply(
            upstream_error(t.where.registry, status, error_code::manifest_unknown));
    if (!body) co_return error_reply(transport_error(t.where.registry, body.error()));
    reply r;
    r.body = std::move(*body);
    r.header("Content-Type", content_type.empty() ? std::string(oci::oci_index) : content_type);
    if (!filters.empty()) r.header("OCI-Filters-Applied", filters);
    if (!link.empty() && link.find("</v2/") != std::string::npos) r.header("Link", link);
    r.cache = "miss";
    co_return r;
}

}  // namespace regpin::proxy::registry
