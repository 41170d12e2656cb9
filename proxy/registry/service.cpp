#include "proxy/registry/service.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>
#include <boost/beast/http/verb.hpp>
#include <nlohmann/json.hpp>

#include "proxy/cache/chunk_source.hpp"
#include "proxy/cache/fetch_through.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/oci/range.hpp"
#include "proxy/pins/resolution.hpp"
#include "proxy/pins/views.hpp"
#include "proxy/registry/replies.hpp"
#include "proxy/upstream/fetch.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::registry {

namespace asio = boost::asio;
using oci::error_code;

namespace {

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
    stored_blob_stream(store::content& content, storage::digest d, storage::blob_record rec,
                       std::uint64_t first, std::uint64_t end, std::shared_ptr<void> held)
        : source_(content),
          digest_(std::move(d)),
          rec_(rec),
          offset_(first),
          end_(end),
          held_(std::move(held)) {}

    asio::awaitable<boost::system::result<body_part>> next(bool files) override {
        if (offset_ >= end_) co_return body_part{};
        auto index = offset_ / rec_.chunk_size;
        auto chunk_start = index * rec_.chunk_size;
        auto chunk_bytes = std::min<std::uint64_t>(rec_.chunk_size, rec_.size - chunk_start);
        auto stop = std::min<std::uint64_t>(chunk_bytes, end_ - chunk_start);
        auto chunks = (rec_.size + rec_.chunk_size - 1) / rec_.chunk_size;
        auto part = co_await source_.part(digest_, index, chunk_bytes, offset_ - chunk_start, stop,
                                          files, chunks - index);
        if (part) offset_ = chunk_start + stop;
        co_return part;
    }

private:
    cache::chunk_source source_;
    storage::digest digest_;
    storage::blob_record rec_;
    std::uint64_t offset_;
    std::uint64_t end_;
    std::shared_ptr<void> held_;  // no eviction of the blob while it is sent
};

reply stored_blob_reply(store::content& content, const storage::digest& d,
                        const storage::blob_record& rec, bool head, const std::string& range,
                        std::shared_ptr<void> held) {
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
        r.stream =
            std::make_shared<stored_blob_stream>(content, d, rec, first, end, std::move(held));
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

// DENIED for a tag its policy rejected, with both digests in the detail.
oci::error rejected_error(const storage::pin& p) {
    auto pending = p.pending_digest ? p.pending_digest->str() : std::string();
    oci::error e{error_code::denied, pins::rejected_reason(p)};
    e.detail_json = nlohmann::json{
        {"tag", storage::display_name(p.key)},
        {"pinned", p.manifest_digest.str()},
        {"upstream",
         pending}}.dump();
    return e;
}

reply rejected_reply(const storage::pin& p) {
    auto r = error_reply(rejected_error(p));
    r.log_field("cache", "pin");
    return r;
}

}  // namespace

service::service(asio::any_io_executor ex, const config::settings& settings,
                 upstream::upstreams& upstreams, store::facade& stores,
                 cache::manifest_fetcher& manifests, cache::blob_fetcher& fetcher,
                 pins::writer& writer, pins::scheduler& scheduler, pins::checker& checker)
    : settings_(settings),
      upstreams_(upstreams),
      content_(stores.content()),
      pins_(stores.pins()),
      audit_(stores.audit()),
      manifests_(manifests),
      fetcher_(fetcher),
      writer_(writer),
      scheduler_(scheduler),
      checker_(checker),
      first_sights_(std::move(ex)) {}

asio::awaitable<reply> service::handle(incoming req) {
    auto route = oci::parse_route(req.target);
    if (!route) {
        auto r = error_reply(route.error());
        r.route = "invalid";
        co_return r;
    }
    if (route->kind == oci::endpoint::base) {
        reply r;
        r.body = "{}";
        r.header("Content-Type", "application/json");
        r.route = "base";
        co_return r;
    }
    auto where = route_to_upstream(*route, settings_);
    if (!where) co_return error_reply(where.error());
    target t{*route, *where, &upstreams_.at(where->upstream_index)};

    reply r;
    switch (route->kind) {
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
    r.route = route_name(route->kind);
    if (route->kind == oci::endpoint::manifest && r.status == 200) {
        // The pull audit: who was sent which manifest (memory only; written in batches).
        for (const auto& [name, value] : r.headers)
            if (name == "Docker-Content-Digest") {
                const auto& ref = route->reference;
                audit_.record(t.where.registry, t.where.repository,
                              oci::is_digest_reference(ref) ? std::string() : ref, value, req.peer,
                              req.node);
                break;
            }
    }
    if (route->ns) r.header("OCI-Namespace", *route->ns);
    co_return r;
}

asio::awaitable<reply> service::manifest(const target& t, bool head, std::string accept) {
    const auto& ref = t.route.reference;
    const auto& registry = t.where.registry;
    const auto& repository = t.where.repository;
    const auto cls = oci::accept_class(accept);

    // By digest: the store, else the upstream (verified, then stored). The log's cache column
    // says "pin" for a pinned tag, else "hit" or "miss".
    std::optional<storage::digest> by_digest;
    // Set when the tag has no pin of this client's accept class: its pins of other classes.
    std::optional<pins::class_answer> others;
    if (oci::is_digest_reference(ref)) {
        by_digest = storage::digest::parse(ref);
    } else {
        storage::pin_key key{registry, repository, ref, cls};
        auto existing = pins_.peek(key);
        if (!existing && existing.error() == storage::errc::would_block)
            existing = co_await pins_.find(key);
        if (!existing) co_return storage_failure("reading a pin", existing.error());
        std::optional<storage::pin> answer = std::move(*existing);
        if (!answer) {
            // One tag, one truth: a pin of another class that this client accepts answers it.
            auto tag_pins = co_await pins_.list_tag(registry, repository, ref);
            if (!tag_pins) co_return storage_failure("reading a tag's pins", tag_pins.error());
            auto pick = pins::pick_for_class(*tag_pins, cls);
            answer = std::move(pick.answer);
            others = std::move(pick.others);
        }
        // A pin answers whatever the upstream says now (and if its bytes are gone, they are
        // fetched again by digest, never by tag).
        if (answer) {
            if (auto quick = quick_pinned_reply(t, *answer, head)) co_return std::move(*quick);
            co_return co_await pinned_reply(t, *answer, head, accept);
        }
    }
    if (by_digest) {
        if (auto quick = content_.peek_manifest(*by_digest); quick && *quick) {
            auto r = manifest_reply(*by_digest, **quick, head);
            r.log_field("cache", "hit");
            co_return r;
        }
        const bool pinned = false;
        co_return co_await fetched_reply(t, *by_digest, head, accept, pinned);
    }

    // First sight of the tag for this client's class: one upstream fetch and one pin however
    // many nodes ask at once (a rollout).
    const std::string actor = "first-pull";
    auto settled = co_await first_sight_flight(t, accept, others, head, actor);
    if (!settled) co_return error_reply(settled.error());
    if (settled->fetched && settled->pin.manifest_digest == settled->fetched->digest) {
        auto r = manifest_reply(settled->fetched->digest, settled->fetched->manifest, head);
        r.log_field("cache", "miss");
        co_return r;
    }
    co_return co_await pinned_reply(t, settled->pin, head, accept);
}

asio::awaitable<oci::result<service::first_sight>> service::first_sight_flight(
    const target& t, std::string accept, std::optional<pins::class_answer> others, bool head,
    std::string actor) {
    auto* self = this;
    cache::single_flight<first_sight>::work_type work = [self, t, accept, others, head, actor] {
        return self->settle_first_sight(t, accept, others, head, actor);
    };
    auto key = cache::manifest_fetcher::flight_key(*t.client, t.where.repository, t.route.reference,
                                                   accept);
    co_return co_await first_sights_.run(key, work);
}

asio::awaitable<oci::result<service::first_sight>> service::settle_first_sight(
    target t, std::string accept, std::optional<pins::class_answer> others, bool head,
    std::string actor) {
    const auto& ref = t.route.reference;
    const auto& registry = t.where.registry;
    const auto& repository = t.where.repository;
    const auto cls = oci::accept_class(accept);
    // Pinned meanwhile, by a flight that ended between this request's look and this one's
    // start: that pin answers, and the upstream is not asked again.
    storage::pin_key key{registry, repository, ref, cls};
    if (auto now_pinned = co_await pins_.find(key); now_pinned && *now_pinned)
        co_return first_sight{**now_pinned, std::nullopt};
    // A client's HEAD costs the upstream a HEAD (not counted against Docker Hub's pull quota)
    // and, unless the store has the manifest, a GET by digest.
    auto got = co_await manifests_.by_tag(*t.client, repository, ref, accept,
                                          settings_.manifest_max_bytes, head);
    const bool single_answers = others && others->serve;
    if (!got) {
        // The upstream cannot answer: the tag's single-platform pin still can.
        if (single_answers) co_return first_sight{*others->serve, std::nullopt};
        co_return got.error();
    }
    std::optional<storage::pin> diverges_from;
    if (others && others->first) {
        // A new representation of a pinned tag: the same image as the tag's pin, or not.
        const auto& compare = single_answers ? *others->serve : *others->first;
        auto compared = co_await content_.find_manifest(compare.manifest_digest);
        if (!compared) co_return cache::storage_error("reading a pinned manifest");
        pins::manifest_identity theirs{compare.manifest_digest.str(), std::nullopt};
        if (*compared)
            theirs.refs = oci::read_manifest((*compared)->media_type, (*compared)->bytes);
        pins::manifest_identity mine{
            got->digest.str(), oci::read_manifest(got->manifest.media_type, got->manifest.bytes)};
        bool same = pins::same_image(theirs, mine);
        if (single_answers && (!same || !oci::is_index_type(got->manifest.media_type))) {
            // Not this image's index: the pinned manifest answers, and its own checks will see
            // what the upstream did to the tag.
            co_return first_sight{*others->serve, std::nullopt};
        }
        if (!same) diverges_from = compare;
    }
    auto stored = co_await content_.put_manifest(got->digest, got->manifest);
    if (!stored) co_return cache::storage_error("storing a manifest", stored.error());
    auto now = storage::now_ms();
    storage::pin candidate{{registry, repository, ref, cls}, got->digest, got->manifest.media_type,
                           got->manifest.bytes.size(),       now,         now};
    if (diverges_from) {
        auto held = co_await checker_.diverged_first_sight(candidate, got->manifest, *diverges_from,
                                                           t.where.upstream_index, got->source);
        if (!held) co_return cache::storage_error("writing a pin", held.error());
        co_return first_sight{*held, std::nullopt};
    }
    auto held = co_await writer_.first_sight(candidate, actor, got->source);
    if (!held) co_return cache::storage_error("writing a pin", held.error());
    if (held->manifest_digest == got->digest)
        spdlog::info("pinned {}/{}:{} to {} ({})", registry, repository, ref, got->digest.str(),
                     got->manifest.media_type);
    // Another request (another replica) pinned this tag first: its digest wins.
    co_return first_sight{*held, std::move(*got)};
}

asio::awaitable<oci::result<service::resolved>> service::resolve(std::string registry,
                                                                 std::string repository,
                                                                 std::string tag, std::string who,
                                                                 std::string actor, bool may_pin) {
    oci::route route;
    route.kind = oci::endpoint::manifest;
    route.name = repository;
    route.reference = tag;
    route.ns = registry;
    auto where = route_to_upstream(route, settings_);
    if (!where) co_return where.error();
    target t{route, *where, &upstreams_.at(where->upstream_index)};
    const auto& repo = t.where.repository;
    // As containerd asks: all four manifest types (its pins are the ones nodes get).
    const std::string accept = oci::accept_for_class(oci::accepts_all);
    auto tag_pins = co_await pins_.list_tag(t.where.registry, repo, tag);
    if (!tag_pins) co_return cache::storage_error("reading a tag's pins", tag_pins.error());
    // manifest()'s rule, for containerd's class.
    auto pick = pins::pick_for_class(*tag_pins, oci::accepts_all);
    auto& answer = pick.answer;
    const auto& others = pick.others;
    std::optional<storage::manifest> fetched;
    if (!answer && !may_pin)
        co_return oci::error{error_code::manifest_unknown,
                             t.where.registry + "/" + repo + ":" + tag +
                                 " is not pinned yet (a dry run does not pin it)"};
    if (!answer) {
        const bool head = false;
        auto settled = co_await first_sight_flight(t, accept, others, head, actor);
        if (!settled) co_return settled.error();
        answer = settled->pin;
        if (settled->fetched && settled->pin.manifest_digest == settled->fetched->digest)
            fetched = settled->fetched->manifest;
    }
    scheduler_.served(*answer, t.where.upstream_index);
    if (answer->state == storage::pin_state::rejected) {
        auto denied = rejected_error(*answer);
        denied.detail_json = pins::pin_json(*answer).dump();
        co_return denied;
    }
    if (!fetched) {
        // The pinned manifest, for an index's platforms: the store, else the upstream by digest
        // (verified), as a pull of it would.
        auto found = co_await manifests_.by_digest(*t.client, repo, answer->manifest_digest, accept,
                                                   settings_.manifest_max_bytes);
        if (found) fetched = std::move(found->manifest);
    }
    audit_.record(t.where.registry, repo, tag, answer->manifest_digest.str(), "resolve:" + who, "");
    co_return resolved{std::move(*answer), std::move(fetched)};
}

std::optional<reply> service::quick_pinned_reply(const target& t, const storage::pin& p,
                                                 bool head) {
    if (p.state == storage::pin_state::rejected) {
        scheduler_.served(p, t.where.upstream_index);
        return rejected_reply(p);
    }
    auto quick = content_.peek_manifest(p.manifest_digest);
    if (!quick || !*quick) return std::nullopt;
    scheduler_.served(p, t.where.upstream_index);
    auto r = manifest_reply(p.manifest_digest, **quick, head);
    r.log_field("cache", "pin");
    return r;
}

asio::awaitable<reply> service::pinned_reply(const target& t, const storage::pin& p, bool head,
                                             const std::string& accept) {
    scheduler_.served(p, t.where.upstream_index);
    if (p.state == storage::pin_state::rejected) co_return rejected_reply(p);
    const bool pinned = true;
    co_return co_await fetched_reply(t, p.manifest_digest, head, accept, pinned);
}

asio::awaitable<reply> service::fetched_reply(const target& t, const storage::digest& d, bool head,
                                              const std::string& accept, bool pinned) {
    // The store (from disk: callers on the warm path peeked at memory already), else upstream.
    auto found = co_await manifests_.by_digest(*t.client, t.where.repository, d, accept,
                                               settings_.manifest_max_bytes);
    if (!found) co_return error_reply(found.error());
    auto r = manifest_reply(d, found->manifest, head);
    r.log_field("cache", pinned ? "pin" : (found->was_cached ? "hit" : "miss"));
    co_return r;
}

asio::awaitable<reply> service::blob(const target& t, bool head, std::string range) {
    auto d = *storage::digest::parse(t.route.reference);
    const auto& repository = t.where.repository;
    // A third look when the blob was evicted between the look and the hold, or stored between
    // the look and the download's start.
    for (int attempt = 0; attempt < 3; ++attempt) {
        auto rec = content_.peek_blob(d);
        if (!rec && rec.error() == storage::errc::would_block) rec = co_await content_.find_blob(d);
        if (!rec) co_return storage_failure("reading a blob record");
        if (*rec && head) co_return stored_blob_reply(content_, d, **rec, head, range, nullptr);
        if (*rec) {
            // Held while it is sent (cache/evictor.hpp), and looked at again once held: an
            // eviction that began before the hold has removed the record by then.
            auto held = content_.index().hold(d);
            if (!held) continue;
            auto again = co_await content_.find_blob(d);  // memory first, then the pool
            if (!again) co_return storage_failure("reading a blob record");
            if (!*again) continue;
            co_return stored_blob_reply(content_, d, **again, head, range, std::move(held));
        }

        if (head) {
            // Existence check only: the upstream's HEAD (shared), nothing cached.
            auto size = co_await fetcher_.head(d, *t.client, repository);
            if (!size) co_return error_reply(size.error());
            reply r;
            r.header("Content-Type", "application/octet-stream");
            r.header("Docker-Content-Digest", d.str());
            r.header("Accept-Ranges", "bytes");
            r.content_length = *size;
            r.log_field("cache", "miss");
            co_return r;
        }

        // Partial reads of an uncached blob wait for the verified whole, then read the store. A
        // blob that will not be kept (the cache is over its limit) is sent whole: a 200 with
        // the full body is a valid answer to a Range request (RFC 9110, 14.2).
        if (!range.empty() && fetcher_.admitting()) {
            auto done = co_await fetcher_.wait_complete(d, *t.client, repository);
            if (!done) co_return error_reply(done.error());
            continue;
        }

        auto started = co_await fetcher_.fetch(d, *t.client, repository);
        if (!started) co_return error_reply(started.error());
        if (started->already_stored) continue;
        reply r;
        r.header("Content-Type", "application/octet-stream");
        r.header("Docker-Content-Digest", d.str());
        r.header("Etag", "\"" + d.str() + "\"");
        r.content_length = started->size;
        r.stream = started->stream;
        r.log_field("cache", "miss");
        co_return r;
    }
    co_return storage_failure("reading a just-stored blob");
}

}  // namespace regpin::proxy::registry
