#include "proxy/admin/webhooks.hpp"

#include <deque>
#include <map>
#include <set>

#include <openssl/hmac.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include "proxy/http/client.hpp"
#include "proxy/pins/views.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::admin {

namespace asio = boost::asio;

namespace {

std::int64_t backoff_ms(int attempts) {
    std::int64_t ms = 1000;
    for (int i = 1; i < attempts && ms < 600000; ++i) ms *= 2;
    return std::min<std::int64_t>(ms, 600000);
}

}  // namespace

std::string display_url(const std::string& url) {
    auto u = boost::urls::parse_uri(url);
    if (!u) return "(invalid URL)";
    std::string out = std::string(u->scheme()) + "://" + std::string(u->encoded_host_and_port());
    if (!u->encoded_path().empty() && u->encoded_path() != "/") out += "/...";
    return out;
}

std::string hmac_sha256_hex(const std::string& key, const std::string& body) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(body.data()), body.size(), out, &len);
    static constexpr char hex[] = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < len; ++i) {
        s.push_back(hex[out[i] >> 4]);
        s.push_back(hex[out[i] & 0xf]);
    }
    return s;
}

// Everything below runs on one strand (the timer's): the scan, and one worker per receiver.
struct webhook_sender::state : std::enable_shared_from_this<webhook_sender::state> {
    // Alerts queued for one receiver at most; the rest wait in the outbox for a later scan.
    static constexpr std::size_t max_queued = 64;

    struct target {
        config::webhook hook;
        http::origin origin;
        std::string path;  // origin form of the URL
        std::unique_ptr<http::client> client;
        // The receiver's own queue and worker: a dead receiver delays only its own alerts.
        std::deque<storage::outbox_entry> queue;
        std::set<std::uint64_t> queued;  // outbox ids in `queue` or being delivered
        std::unique_ptr<asio::steady_timer> wakeup;
        // After a failed attempt, the receiver's other alerts wait until then too.
        std::int64_t down_until_ms = 0;
    };

    asio::any_io_executor ex;
    store::pin_records& pins;
    std::function<void(std::string_view)> attempted;
    std::map<std::string, target> targets;  // by URL
    asio::steady_timer timer;
    std::atomic<bool> stopped{false};

    state(asio::any_io_executor e, const config::settings& s, store::pin_records& p,
          std::function<void(std::string_view)> a)
        : ex(e), pins(p), attempted(std::move(a)), timer(asio::make_strand(e)) {
        for (const auto& w : s.webhooks) {
            auto split = http::split_url(w.url);
            if (!split) continue;
            http::client_options o;
            o.name = "webhook " + split->first.host;
            o.ca_file = w.ca_file;
            o.tls_verify = w.tls_verify;
            o.connect_timeout = w.timeout;
            o.read_timeout = w.timeout;
            o.max_idle_per_origin = 2;
            // A redirect is not a delivery: the alert is re-sent to the configured URL later,
            // never re-POSTed elsewhere.
            o.redirects = http::redirect_policy::none();
            target t{w, split->first, split->second, std::make_unique<http::client>(e, o)};
            t.wakeup = std::make_unique<asio::steady_timer>(timer.get_executor());
            targets.emplace(w.url, std::move(t));
        }
    }

    // One attempt to deliver `entry` to its receiver `t`.
    asio::awaitable<bool> deliver(const target& t, const storage::outbox_entry& entry) {
        auto ev = co_await pins.event(entry.event_id);
        if (!ev) co_return false;
        if (!*ev) co_return true;  // the event is gone: nothing to say
        auto body = pins::alert_json(**ev).dump();
        http::request req;
        req.method = boost::beast::http::verb::post;
        req.origin = t.origin;
        req.target = t.path;
        req.body = body;
        req.content_type = "application/json";
        req.header("X-Regpin-Event-Id", std::to_string(entry.event_id));
        req.header("X-Regpin-Delivery-Attempt", std::to_string(entry.attempts + 1));
        if (!t.hook.secret.empty())
            req.header("X-Regpin-Signature-256", "sha256=" + hmac_sha256_hex(t.hook.secret, body));
        auto resp = co_await t.client->send(std::move(req));
        if (!resp) {
            spdlog::warn("webhook {}: alert {} not delivered: {}", display_url(entry.target),
                         entry.event_id, resp.error().message());
            co_return false;
        }
        auto status = resp->status();
        (void)co_await resp->read_all(64 * 1024);
        if (status < 200 || status > 299) {
            spdlog::warn("webhook {}: alert {} refused with {}", display_url(entry.target),
                         entry.event_id, status);
            co_return false;
        }
        co_return true;
    }

    // One receiver's alerts, one at a time, in outbox order.
    asio::awaitable<void> work(target* t) {
        auto self = shared_from_this();
        while (!stopped) {
            if (t->queue.empty()) {
                t->wakeup->expires_at(asio::steady_timer::time_point::max());
                (void)co_await t->wakeup->async_wait(asio::as_tuple(asio::use_awaitable));
                continue;
            }
            auto entry = t->queue.front();
            t->queue.pop_front();
            bool ok = false;
            try {
                ok = co_await deliver(*t, entry);
            } catch (const std::exception& e) {
                spdlog::error("webhook {}: {}", display_url(entry.target), e.what());
            }
            if (attempted) attempted(ok ? "ok" : "failed");
            if (ok) {
                auto removed = co_await pins.delivered(entry.id);
                if (!removed) spdlog::error("webhook: cannot remove delivered alert {}", entry.id);
                spdlog::info("webhook {}: alert {} delivered", display_url(entry.target),
                             entry.event_id);
            } else {
                ++entry.attempts;
                entry.next_attempt_ms = storage::now_ms() + backoff_ms(entry.attempts);
                t->down_until_ms = entry.next_attempt_ms;
                (void)co_await pins.reschedule(entry);
                // The rest of its queue waits with it (rescheduled by the next scan).
                for (const auto& q : t->queue) t->queued.erase(q.id);
                t->queue.clear();
            }
            t->queued.erase(entry.id);
        }
    }

    asio::awaitable<void> run() {
        auto self = shared_from_this();
        for (auto& [url, t] : targets)
            asio::co_spawn(timer.get_executor(), work(&t), asio::detached);
        while (!stopped) {
            auto now = storage::now_ms();
            auto due = co_await pins.due_deliveries(now, 1024);
            if (due) {
                for (auto& entry : *due) {
                    if (stopped) co_return;
                    auto it = targets.find(entry.target);
                    if (it == targets.end()) {
                        spdlog::warn("webhook {} is no longer configured: alert {} dropped",
                                     display_url(entry.target), entry.event_id);
                        (void)co_await pins.delivered(entry.id);
                        continue;
                    }
                    auto& t = it->second;
                    if (t.queued.count(entry.id)) continue;
                    if (t.down_until_ms > now) {
                        // A receiver that is down: its alerts move to its next attempt, out of
                        // the way of the other receivers' in the next scans.
                        entry.next_attempt_ms = t.down_until_ms;
                        (void)co_await pins.reschedule(entry);
                        continue;
                    }
                    if (t.queue.size() >= max_queued) continue;
                    t.queue.push_back(entry);
                    t.queued.insert(entry.id);
                    t.wakeup->cancel();
                }
            }
            timer.expires_after(std::chrono::seconds(1));
            (void)co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
};

webhook_sender::webhook_sender(asio::any_io_executor ex, const config::settings& settings,
                               store::pin_records& pins,
                               std::function<void(std::string_view)> attempted)
    : state_(std::make_shared<state>(std::move(ex), settings, pins, std::move(attempted))) {}

webhook_sender::~webhook_sender() { stop(); }

void webhook_sender::start() {
    if (state_->targets.empty()) return;
    asio::co_spawn(state_->timer.get_executor(), state_->run(), asio::detached);
}

void webhook_sender::wake() {
    asio::post(state_->timer.get_executor(), [st = state_] { st->timer.cancel(); });
}

void webhook_sender::stop() {
    state_->stopped = true;
    wake();
    asio::post(state_->timer.get_executor(), [st = state_] {
        for (auto& [url, t] : st->targets) t.wakeup->cancel();
    });
}

}  // namespace regpin::proxy::admin
