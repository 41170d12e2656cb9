#include "proxy/app.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/admin/admin_api.hpp"
#include "proxy/admin/metrics.hpp"
#include "proxy/admin/webhooks.hpp"
#include "proxy/admission/webhook.hpp"
#include "proxy/cache/blob_fetcher.hpp"
#include "proxy/cache/evictor.hpp"
#include "proxy/cache/manifest_fetcher.hpp"
#include "proxy/cache/scrubber.hpp"
#include "proxy/etcd/audit_store.hpp"
#include "proxy/etcd/pin_store.hpp"
#include "proxy/http/listener.hpp"
#include "proxy/http/log_json.hpp"
#include "proxy/pins/actions.hpp"
#include "proxy/pins/checker.hpp"
#include "proxy/pins/closure.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/pins/scheduler.hpp"
#include "proxy/pins/views.hpp"
#include "proxy/pins/writer.hpp"
#include "proxy/registry/replies.hpp"
#include "proxy/registry/service.hpp"
#include "proxy/store/facade.hpp"
#include "proxy/upstream/upstreams.hpp"
#include "storage/clock.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy {

namespace asio = boost::asio;

namespace {

// A server TLS context: TLS 1.2 and 1.3 only, OpenSSL's default (modern) ciphers. Throws
// std::runtime_error naming the file that does not load.
std::shared_ptr<asio::ssl::context> server_tls(const config::tls_settings& t,
                                               const std::string& what) {
    if (!t.enabled()) return nullptr;
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::single_dh_use);
    boost::system::error_code ec;
    ctx->use_certificate_chain_file(t.cert_file, ec);
    if (ec)
        throw std::runtime_error(what + ": cannot load certificate " + t.cert_file + ": " +
                                 ec.message());
    ctx->use_private_key_file(t.key_file, asio::ssl::context::pem, ec);
    if (ec)
        throw std::runtime_error(what + ": cannot load key " + t.key_file + ": " + ec.message());
    return ctx;
}

// Refusals by either listener, as OCI error bodies: both APIs speak that format.
// A replica's name among those sharing pins: the host name (a pod's name) and the process id.
std::string default_replica_name() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "regpin");
    return std::string(host) + "-" + std::to_string(getpid());
}

http::reply oci_refusal(unsigned status, const std::string& message) {
    auto code = status == 503 ? oci::error_code::unavailable : oci::error_code::unsupported;
    auto r = registry::error_reply({code, message});
    r.status = status;
    return r;
}

// History retention (history.retention_days): once at start, then hourly, events older than the
// retention go with their history entries and undelivered alerts, a bounded batch per call to
// the blocking pool. With pins on etcd every replica sweeps, not only the webhook leader: the
// deletes are idempotent, and the simpler choice costs each replica one read of the oldest
// events an hour.
class history_sweeper : public std::enable_shared_from_this<history_sweeper> {
public:
    history_sweeper(asio::any_io_executor ex, store::pin_records& pins,
                    std::chrono::hours retention)
        : pins_(pins), retention_(retention), timer_(asio::make_strand(ex)) {}

    void start() { asio::co_spawn(timer_.get_executor(), run(), asio::detached); }
    void stop() {
        stopped_ = true;
        asio::post(timer_.get_executor(), [self = shared_from_this()] { self->timer_.cancel(); });
    }

private:
    static constexpr std::size_t batch = 1000;  // events per call: one pool task stays short

    asio::awaitable<void> run() {
        auto self = shared_from_this();
        while (!stopped_) {
            co_await sweep();
            timer_.expires_after(std::chrono::hours(1));
            auto [ec] = co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
        }
    }

    asio::awaitable<void> sweep() {
        const std::int64_t cutoff =
            storage::now_ms() -
            std::chrono::duration_cast<std::chrono::milliseconds>(retention_).count();
        const std::size_t limit = batch;
        std::size_t total = 0;
        while (!stopped_) {
            auto removed = co_await pins_.forget_before(cutoff, limit);
            if (!removed) {
                spdlog::warn("history retention: old events not removed: {}",
                             removed.error().message());
                break;
            }
            if (*removed == 0) break;
            total += *removed;
        }
        if (total > 0)
            spdlog::info(
                "history retention: {} event(s) older than {} day(s) removed, with their alerts",
                total, retention_.count() / 24);
    }

    store::pin_records& pins_;
    const std::chrono::hours retention_;
    asio::steady_timer timer_;
    std::atomic<bool> stopped_{false};
};

}  // namespace

// Declared in the order they are made: each part uses only those above it, and they are
// destroyed the other way round (the storage facade last, after waiting for its pool).
struct app::parts {
    asio::io_context& ioc;
    config::settings settings;
    admin::metrics metrics;
    std::unique_ptr<store::facade> stores;
    std::unique_ptr<upstream::upstreams> upstreams;
    std::unique_ptr<cache::blob_fetcher> fetcher;
    std::unique_ptr<cache::manifest_fetcher> manifests;
    std::unique_ptr<pins::closure_keeper> closure;
    std::unique_ptr<cache::evictor> evictor;
    std::unique_ptr<cache::scrubber> scrubber;
    std::unique_ptr<pins::policy_table> policies;
    std::unique_ptr<pins::writer> writer;
    std::unique_ptr<pins::checker> checker;
    std::unique_ptr<pins::scheduler> scheduler;
    std::unique_ptr<pins::actions> actions;
    std::unique_ptr<registry::service> service;
    std::unique_ptr<admin::webhook_sender> webhooks;
    std::shared_ptr<history_sweeper> history;
    std::unique_ptr<admin::admin_api> admin;
    std::unique_ptr<http::listener> registry_listener;
    std::unique_ptr<http::listener> admin_listener;
    std::unique_ptr<admission::webhook> admission;
    std::unique_ptr<http::listener> admission_listener;

    // Metric families, registered once.
    admin::counter_family* requests = nullptr;
    admin::counter_family* cache = nullptr;
    admin::counter_family* bytes = nullptr;
    admin::histogram_family* request_seconds = nullptr;
    admin::counter_family* upstream_requests = nullptr;
    admin::counter_family* upstream_errors = nullptr;
    admin::histogram_family* upstream_seconds = nullptr;
    admin::counter_family* checks = nullptr;
    admin::counter_family* repoints = nullptr;
    admin::counter_family* deliveries = nullptr;
    admin::counter_family* closure_walks = nullptr;
    admin::counter_family* downloads_dropped = nullptr;
    admin::counter_family* cache_evictions = nullptr;
    admin::counter_family* cache_evicted_bytes = nullptr;
    admin::counter_family* cache_reclaimed_bytes = nullptr;
    admin::gauge_family* cache_class_bytes = nullptr;
    admin::gauge_family* cache_folder_bytes = nullptr;
    admin::gauge_family* cache_limit_bytes = nullptr;
    admin::gauge_family* cache_free_bytes = nullptr;
    admin::gauge_family* cache_manifests = nullptr;
    admin::gauge_family* cache_over_limit = nullptr;
    admin::counter_family* cache_quarantined = nullptr;
    admin::counter_family* cache_scrub_bytes = nullptr;

    parts(asio::io_context& c, config::settings s) : ioc(c), settings(std::move(s)) {
        requests =
            &metrics.counter("regpin_requests_total", "Registry API requests by route and status",
                             {"route", "status"});
        cache = &metrics.counter("regpin_cache_requests_total",
                                 "Manifest and blob answers by cache outcome: pin, hit or miss",
                                 {"route", "result"});
        bytes =
            &metrics.counter("regpin_served_bytes_total", "Body bytes sent to clients", {"route"});
        request_seconds = &metrics.histogram("regpin_request_duration_seconds",
                                             "Time to answer a registry API request", {"route"});
        upstream_requests = &metrics.counter("regpin_upstream_requests_total",
                                             "Requests to upstream registries by final status",
                                             {"registry", "status"});
        upstream_errors =
            &metrics.counter("regpin_upstream_errors_total",
                             "Upstream requests that failed without an answer", {"registry"});
        upstream_seconds =
            &metrics.histogram("regpin_upstream_request_duration_seconds",
                               "Time to an upstream's response header", {"registry"});
        checks = &metrics.counter("regpin_pin_checks_total", "Background pin checks by outcome",
                                  {"registry", "outcome"});
        repoints = &metrics.counter("regpin_repoints_total", "Upstream tag re-points detected",
                                    {"registry", "policy"});
        closure_walks = &metrics.counter(
            "regpin_pin_content_walks_total",
            "Background walks of a pinned digest's content by result (complete, incomplete: "
            "something could not be fetched, dropped: the queue was full)",
            {"result"});
        deliveries = &metrics.counter("regpin_webhook_deliveries_total",
                                      "Webhook delivery attempts by result", {"result"});
        downloads_dropped = &metrics.counter(
            "regpin_blob_downloads_dropped_total",
            "Upstream blob downloads not run to the end: queue_full (the client got 503), "
            "abandoned (nobody waited for it any more, downloads.abandon_after_s)",
            {"reason"});
        cache_evictions = &metrics.counter("regpin_cache_evictions_total",
                                           "Blobs evicted to keep the data folder within its "
                                           "limit (cache.max_bytes, cache.min_free_*)");
        cache_evicted_bytes =
            &metrics.counter("regpin_cache_evicted_bytes_total", "Bytes of the blobs evicted");
        cache_reclaimed_bytes = &metrics.counter(
            "regpin_cache_reclaimed_bytes_total",
            "Bytes the data folder shrank by after evictions (blob files deleted)");
        cache_class_bytes = &metrics.gauge(
            "regpin_cache_bytes",
            "Bytes of stored blobs by class: protected (a pin needs them, cache.protect) or "
            "evictable; as of the last look at the pins (at most a minute ago)",
            {"class"});
        cache_folder_bytes =
            &metrics.gauge("regpin_cache_data_folder_bytes", "Bytes the data folder takes on disk");
        cache_limit_bytes =
            &metrics.gauge("regpin_cache_limit_bytes",
                           "Bytes the data folder may take now: cache.max_bytes, or less to keep "
                           "cache.min_free_* of its file system free");
        cache_free_bytes = &metrics.gauge("regpin_cache_filesystem_free_bytes",
                                          "Free bytes on the data folder's file system");
        cache_manifests = &metrics.gauge("regpin_cache_manifests",
                                         "Manifests stored (an estimate; never evicted)");
        cache_quarantined = &metrics.counter(
            "regpin_cache_quarantined_total",
            "Stored blobs and manifests that no longer matched their digest when re-hashed "
            "(regpin verify, cache.scrub_mib_per_s): removed, fetched again when asked for",
            {"kind"});
        cache_scrub_bytes = &metrics.counter(
            "regpin_cache_scrub_bytes_total",
            "Bytes of stored blobs and manifests re-hashed (regpin verify, cache.scrub_mib_per_s)");
        cache_over_limit = &metrics.gauge(
            "regpin_cache_over_limit",
            "1 while the data folder is over its limit with nothing left to evict but what pins "
            "need: new blobs are served without being kept");
    }
};

void use_log_format(const config::settings& settings) {
    if (settings.log_format == "json") http::use_json_logs();
}

std::string check_cache_limits(const config::settings& settings, std::string& summary) {
    auto c = cache::check_limits(settings);
    summary = c.summary;
    return c.error;
}

app::app(asio::io_context& ioc, config::settings settings)
    : parts_(std::make_unique<parts>(ioc, std::move(settings))) {}

app::~app() { stop(); }

void app::start(std::shared_ptr<storage::database> db) {
    auto& p = *parts_;
    auto* pp = &p;

    pins::hooks hooks;
    hooks.checked = [pp](const std::string& registry, pins::check_outcome outcome) {
        pp->checks->with({registry, std::string(pins::to_string(outcome))}).inc();
    };
    hooks.repointed = [pp](const storage::pin_event& e) {
        pp->repoints->with({e.key.registry, e.policy}).inc();
        std::string summary = "-";
        auto j = pins::event_json(e);
        if (j["summary"].is_object() && j["summary"].contains("text") &&
            j["summary"]["text"].is_string())
            summary = j["summary"]["text"].get<std::string>();
        // Signatures and attestations move by design (policy "artifact"): no alert, no warning.
        spdlog::log(e.policy == "artifact" ? spdlog::level::info : spdlog::level::warn,
                    "re-point: {} moved upstream from {} to {}; policy {}, action {}, event {}, "
                    "detected at {}; {}",
                    storage::display_name(e.key), e.old_digest, e.new_digest, e.policy, e.action,
                    e.id, pins::format_time(e.time_ms), summary);
        if (pp->webhooks) pp->webhooks->wake();
    };
    hooks.holds = [pp](const storage::pin_key& key, const std::string& digest) {
        if (pp->closure) pp->closure->hold(key, digest);
    };
    hooks.changed = [](const storage::pin_event& e) {
        spdlog::info("pin {}: {} {} -> {} by {}", storage::display_name(e.key),
                     storage::to_string(e.type), e.old_digest.empty() ? "-" : e.old_digest,
                     e.new_digest.empty() ? "-" : e.new_digest, e.actor);
    };
    upstream::observer observe = [pp](const std::string& registry, unsigned status,
                                      const boost::system::error_code& ec, double seconds) {
        if (ec) {
            pp->upstream_errors->with({registry}).inc();
            pp->upstream_requests->with({registry, "error"}).inc();
        } else {
            pp->upstream_requests->with({registry, std::to_string(status)}).inc();
            pp->upstream_seconds->with({registry}).observe(seconds);
        }
    };

    auto ex = p.ioc.get_executor();
    std::unique_ptr<storage::pin_store> pin_store;
    std::unique_ptr<storage::audit_store> audit_records;  // nullptr: the database's own
    etcd::etcd_pin_store* shared_pins = nullptr;
    if (p.settings.pin_store.backend == "etcd") {
        const auto& ps = p.settings.pin_store;
        auto eo = etcd::options_from(ps);
        etcd::store_options so;
        so.prefix = ps.prefix;
        so.replica = ps.replica.empty() ? default_replica_name() : ps.replica;
        spdlog::info("pins on etcd {} under {} as replica {}", fmt::join(ps.endpoints, ","),
                     ps.prefix, so.replica);
        // Pins a single instance wrote into this data folder are not read any more: say so.
        if (auto local = storage::rocksdb_pin_store(db).count(); local && *local > 0)
            spdlog::warn(
                "the data folder {} holds {} pins of the embedded store, which are not used "
                "with pins on etcd; copy them with 'regpin pins migrate --data {} --to-etcd ...'",
                p.settings.data_dir, *local, p.settings.data_dir);
        auto store = std::make_unique<etcd::etcd_pin_store>(eo, so);
        shared_pins = store.get();
        pin_store = std::move(store);
        // The pull audit too, so that any replica answers for the whole cluster.
        auto local = storage::open_audit_store(db);
        if (!local)
            throw std::runtime_error("cannot read the pull audit: " + local.error().message());
        // On the pin store's client; the facade destroys the audit before the pin store.
        audit_records = std::make_unique<etcd::etcd_audit_store>(
            shared_pins->etcd_client(), so.prefix, so.replica, std::move(*local));
    } else {
        pin_store = std::make_unique<storage::rocksdb_pin_store>(db);
    }
    p.stores = std::make_unique<store::facade>(db, std::move(pin_store), p.settings.audit,
                                               std::move(audit_records));
    p.upstreams = std::make_unique<upstream::upstreams>(ex, p.settings, observe);
    p.fetcher = std::make_unique<cache::blob_fetcher>(
        ex, p.stores->content(), p.settings.downloads, [pp](std::string_view reason) {
            pp->downloads_dropped->with({std::string(reason)}).inc();
        });
    p.manifests = std::make_unique<cache::manifest_fetcher>(ex, p.stores->content());
    p.closure = std::make_unique<pins::closure_keeper>(
        ex, p.settings, *p.upstreams, p.stores->content(), *p.manifests, *p.fetcher,
        [pp](std::string_view result) { pp->closure_walks->with({std::string(result)}).inc(); });
    p.evictor = std::make_unique<cache::evictor>(
        p.settings, p.stores->content().index(), p.stores->pin_store(), db,
        [pp](const cache::cache_status& s, const cache::evictor::pass_report& r) {
            if (r.evictions > 0 && pp->closure) pp->closure->forget_complete();
            pp->cache_evictions->with({}).inc(r.evictions);
            pp->cache_evicted_bytes->with({}).inc(r.evicted_bytes);
            pp->cache_reclaimed_bytes->with({}).inc(r.reclaimed_bytes);
            pp->cache_class_bytes->with({"protected"}).set(static_cast<double>(s.protected_bytes));
            pp->cache_class_bytes->with({"evictable"})
                .set(static_cast<double>(s.blob_bytes - std::min(s.blob_bytes, s.protected_bytes)));
            pp->cache_folder_bytes->with({}).set(static_cast<double>(s.usage.folder_bytes));
            pp->cache_limit_bytes->with({}).set(static_cast<double>(s.limit_bytes));
            pp->cache_free_bytes->with({}).set(static_cast<double>(s.usage.fs_free_bytes));
            pp->cache_manifests->with({}).set(static_cast<double>(s.manifests));
            pp->cache_over_limit->with({}).set(s.over_limit ? 1.0 : 0.0);
        });
    p.scrubber =
        std::make_unique<cache::scrubber>(p.settings, db, p.stores->content().index(),
                                          [pp](const std::string& kind, std::uint64_t n) {
                                              if (kind == "bytes")
                                                  pp->cache_scrub_bytes->with({}).inc(n);
                                              else
                                                  pp->cache_quarantined->with({kind}).inc(n);
                                          });
    auto* evictor = p.evictor.get();
    p.fetcher->set_admission([evictor] {
        if (evictor->disk_full()) return cache::blob_fetcher::admission::refuse;
        return evictor->admitting() ? cache::blob_fetcher::admission::keep
                                    : cache::blob_fetcher::admission::transient;
    });
    p.policies = std::make_unique<pins::policy_table>(p.settings);
    p.writer = std::make_unique<pins::writer>(p.stores->pins(), hooks);
    p.checker = std::make_unique<pins::checker>(p.settings, *p.policies, *p.upstreams,
                                                p.stores->pins(), *p.manifests, *p.writer);
    p.checker->set_audit(&p.stores->audit());
    p.scheduler = std::make_unique<pins::scheduler>(ex, p.settings, *p.policies, *p.upstreams,
                                                    p.stores->pins(), *p.checker);
    p.actions = std::make_unique<pins::actions>(p.settings, *p.upstreams, p.stores->pins(),
                                                *p.manifests, *p.writer);
    p.service =
        std::make_unique<registry::service>(ex, p.settings, *p.upstreams, *p.stores, *p.manifests,
                                            *p.fetcher, *p.writer, *p.scheduler, *p.checker);
    auto* pins = &p.stores->pins();
    // O(1) counts kept by the pin store: a scrape reads no storage.
    p.metrics.gauge("regpin_pins", "Pins stored").set_callback([pins] {
        return static_cast<double>(pins->count());
    });
    p.metrics
        .gauge("regpin_pins_pending",
               "Pins whose upstream moved and that await an operator (pending or rejected)")
        .set_callback([pins] { return static_cast<double>(pins->count_awaiting()); });
    auto* fetcher = p.fetcher.get();
    p.metrics
        .gauge("regpin_blob_downloads",
               "Upstream blob downloads running (downloads.max_concurrent)")
        .set_callback([fetcher] { return static_cast<double>(fetcher->running()); });
    p.metrics
        .gauge("regpin_blob_downloads_queued",
               "Upstream blob downloads waiting for a slot (downloads.max_queued)")
        .set_callback([fetcher] { return static_cast<double>(fetcher->queued()); });
    auto* upstreams = p.upstreams.get();
    p.metrics
        .gauge("regpin_upstream_quota_low",
               "Upstreams whose pull quota (ratelimit-remaining) is at or below "
               "pin_checks.ratelimit_low_water: no new manifests are fetched from them")
        .set_callback([upstreams] {
            std::size_t n = 0;
            for (std::size_t i = 0; i < upstreams->size(); ++i)
                if (upstreams->at(i).quota_exhausted()) ++n;
            return static_cast<double>(n);
        });
    p.metrics
        .gauge("regpin_upstream_urls_backing_off",
               "Upstream URLs (mirrors) skipped after failing, until their back-off ends")
        .set_callback([upstreams] {
            std::size_t n = 0;
            for (std::size_t i = 0; i < upstreams->size(); ++i)
                for (const auto& u : upstreams->at(i).health()) n += u.up ? 0 : 1;
            return static_cast<double>(n);
        });
    // Gauges that add up one count of every upstream's client.
    auto upstream_total = [&p, upstreams](std::string name, std::string help,
                                          std::size_t (upstream::registry_client::*count)() const) {
        p.metrics.gauge(std::move(name), std::move(help)).set_callback([upstreams, count] {
            std::size_t n = 0;
            for (std::size_t i = 0; i < upstreams->size(); ++i) n += (upstreams->at(i).*count)();
            return static_cast<double>(n);
        });
    };
    upstream_total("regpin_upstream_connections",
                   "Connections to the upstreams open now, in use or idle (downloads."
                   "max_per_upstream and each upstream's max_idle_connections bound them)",
                   &upstream::registry_client::open_connections);
    upstream_total("regpin_upstream_tokens_cached",
                   "Bearer tokens cached for the upstreams, by scope (bounded: an LRU of 1024 per "
                   "upstream, expired ones swept)",
                   &upstream::registry_client::cached_tokens);
    auto* closure = p.closure.get();
    p.metrics
        .gauge("regpin_pin_content_queue",
               "Pinned digests whose content (pin_content) is queued or being fetched")
        .set_callback([closure] { return static_cast<double>(closure->queued()); });
    p.metrics
        .gauge("regpin_pin_store_degraded",
               "1 while the pin store cannot be reached (etcd): pinned tags are served from "
               "memory, tags never seen get 503")
        .set_callback([pins] { return pins->degraded() ? 1.0 : 0.0; });
    if (shared_pins) {
        p.metrics
            .gauge("regpin_pin_store_replicas",
                   "Live replicas sharing the pins through etcd (background checks are split "
                   "among them)")
            .set_callback([shared_pins] { return static_cast<double>(shared_pins->members()); });
        p.metrics
            .gauge("regpin_pin_store_webhook_leader",
                   "1 on the one replica that delivers webhooks for the cluster")
            .set_callback([shared_pins] { return shared_pins->leading() ? 1.0 : 0.0; });
    }
    p.metrics.gauge("regpin_webhook_queue", "Alert deliveries waiting in the outbox")
        .set_callback([pins] { return static_cast<double>(pins->pending_deliveries()); });
    p.webhooks = std::make_unique<admin::webhook_sender>(
        p.ioc.get_executor(), p.settings, *pins,
        [pp](std::string_view result) { pp->deliveries->with({std::string(result)}).inc(); });
    p.admin = std::make_unique<admin::admin_api>(p.settings, *pins, *p.actions, *p.scheduler,
                                                 *p.upstreams, *p.closure, p.metrics);
    p.admin->set_evictor(p.evictor.get());
    p.admin->set_content(&p.stores->content());
    p.admin->set_scrubber(p.scrubber.get());
    p.admin->set_audit(&p.stores->audit());
    p.admin->set_registry(p.service.get());
    auto* audit = &p.stores->audit();
    p.metrics
        .gauge("regpin_audit_records", "Pull audit records (registry, repository, digest, client)")
        .set_callback([audit] { return static_cast<double>(audit->records()); });
    auto* audit_dropped =
        &p.metrics
             .counter("regpin_audit_dropped_total",
                      "Pulls not recorded in the audit: too many new records waited to be written")
             .with({});
    audit->on_dropped([audit_dropped] { audit_dropped->inc(); });
    auto* scrubber = p.scrubber.get();
    p.metrics.gauge("regpin_cache_scrub_running", "1 while a walk re-hashes what is stored")
        .set_callback([scrubber] { return scrubber->status().running ? 1.0 : 0.0; });
    auto* index = &p.stores->content().index();
    p.metrics.gauge("regpin_cache_blobs", "Blobs stored complete").set_callback([index] {
        return static_cast<double>(index->count());
    });
    p.metrics.gauge("regpin_cache_blob_bytes", "Bytes of the blobs stored complete")
        .set_callback([index] { return static_cast<double>(index->bytes()); });

    http::listener_options ro;
    ro.listen = p.settings.listen;
    ro.max_header_bytes = p.settings.max_header_bytes;
    ro.idle_timeout = p.settings.client_idle_timeout;
    ro.header_timeout = p.settings.client_header_timeout;
    ro.max_connections = p.settings.max_connections;
    ro.tls = server_tls(p.settings.tls, "tls");
    ro.name = "registry";
    ro.log_fields = {"cache", "upstream"};
    ro.headers = {{"Docker-Distribution-API-Version", "registry/2.0"}};
    ro.read_only_note = "regpin is a read-only pull-through cache";
    ro.log_json = p.settings.log_format == "json";
    ro.refusal = oci_refusal;
    auto* service = p.service.get();
    p.registry_listener = std::make_unique<http::listener>(
        p.ioc, ro, [service](http::incoming in) { return service->handle(std::move(in)); },
        [pp](const http::incoming&, const http::reply& r, std::uint64_t body_bytes,
             double seconds) {
            pp->requests->with({r.route, std::to_string(r.status)}).inc();
            if (auto cache = r.log_field("cache"); cache != "-")
                pp->cache->with({r.route, std::string(cache)}).inc();
            if (body_bytes > 0) pp->bytes->with({r.route}).inc(body_bytes);
            pp->request_seconds->with({r.route}).observe(seconds);
        });
    auto ep = p.registry_listener->local_endpoint();
    spdlog::info("serving the registry API on {}://{}:{}", ro.tls ? "https" : "http",
                 ep.address().to_string(), ep.port());

    if (!p.settings.admin.listen.empty()) {
        http::listener_options ao;
        ao.name = "admin";
        ao.listen = p.settings.admin.listen;
        ao.methods = {"GET", "HEAD", "POST"};
        ao.max_body_bytes = 64 * 1024;
        ao.log_requests = false;
        // Probes (/healthz is the liveness probe) must always get through: connections idle
        // for 5 s go, and at the cap the one idle longest makes room for a new one.
        ao.max_connections = 64;
        ao.idle_timeout = std::chrono::seconds(5);
        ao.header_timeout = std::min<std::chrono::milliseconds>(p.settings.client_header_timeout,
                                                                std::chrono::seconds(5));
        ao.tls = server_tls(p.settings.admin.tls, "admin.tls");
        ao.refusal = oci_refusal;
        ao.log_json = p.settings.log_format == "json";
        auto* admin = p.admin.get();
        p.admin_listener = std::make_unique<http::listener>(
            p.ioc, ao, [admin](http::incoming in) { return admin->handle(std::move(in)); });
        auto aep = p.admin_listener->local_endpoint();
        spdlog::info(
            "serving the admin API on http://{}:{}{}", aep.address().to_string(), aep.port(),
            p.settings.admin.tokens.empty() ? " (no token configured: /api/ is disabled)" : "");
    }
    if (!p.settings.admission.listen.empty()) {
        p.admission = std::make_unique<admission::webhook>(p.settings.admission, *p.service);
        http::listener_options wo;
        wo.name = "admission";
        wo.listen = p.settings.admission.listen;
        wo.methods = {"POST"};
        // An AdmissionReview carries the object and, on an update, the old one: Kubernetes
        // objects are at most ~1.5 MiB in etcd, requests at most 3 MiB.
        wo.max_body_bytes = 8 * 1024 * 1024;
        wo.max_connections = 256;
        wo.header_timeout = p.settings.client_header_timeout;
        wo.tls = server_tls(p.settings.admission.tls, "admission.tls");
        wo.refusal = oci_refusal;
        wo.log_json = p.settings.log_format == "json";
        auto* hook = p.admission.get();
        p.admission_listener = std::make_unique<http::listener>(
            p.ioc, wo, [hook](http::incoming in) { return hook->handle(std::move(in)); });
        auto wep = p.admission_listener->local_endpoint();
        spdlog::info("serving the admission webhook on https://{}:{}/mutate (unpinned images: {})",
                     wep.address().to_string(), wep.port(), p.settings.admission.unpinned);
    }
    for (const auto& w : p.settings.webhooks)
        spdlog::info("webhook {}{}", admin::display_url(w.url),
                     w.secret.empty() ? "" : " (signed)");

    p.registry_listener->start();
    if (p.admin_listener) p.admin_listener->start();
    if (p.admission_listener) p.admission_listener->start();
    p.scheduler->start_sweep();
    p.webhooks->start();
    p.evictor->start();
    p.scrubber->start();
    p.stores->audit().start();
    if (p.settings.history.retention.count() > 0) {
        p.history = std::make_shared<history_sweeper>(ex, *pins, p.settings.history.retention);
        p.history->start();
    }
}

void app::drain() {
    auto& p = *parts_;
    // The listener closes before /readyz says "draining": whoever sees the 503 (a probe, a
    // test) may rely on new connections being refused. The other order left a window in which
    // a connection made after the 503 was still accepted.
    if (p.registry_listener) p.registry_listener->drain();
    if (p.admin) p.admin->set_draining();
    if (p.scheduler) p.scheduler->stop();
    if (p.closure) p.closure->stop();
    if (p.history) p.history->stop();
}

std::size_t app::in_flight() const {
    auto& p = *parts_;
    return p.registry_listener ? p.registry_listener->open_connections() : 0;
}

void app::stop() {
    auto& p = *parts_;
    if (p.evictor) p.evictor->stop();
    if (p.scrubber) p.scrubber->stop();
    if (p.stores) p.stores->audit().stop();
    if (p.registry_listener) p.registry_listener->stop();
    if (p.admin_listener) p.admin_listener->stop();
    if (p.admission_listener) p.admission_listener->stop();
    if (p.scheduler) p.scheduler->stop();
    if (p.webhooks) p.webhooks->stop();
    if (p.history) p.history->stop();
    if (p.closure) p.closure->stop();
}

}  // namespace regpin::proxy
