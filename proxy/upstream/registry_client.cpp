#include "proxy/upstream/registry_client.hpp"

#include <algorithm>
#include <charconv>
#include <mutex>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/url.hpp>
#include <nlohmann/json.hpp>

namespace regpin::proxy::upstream {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

constexpr std::size_t drain_limit = 64 * 1024;
constexpr std::size_t token_body_limit = 1024 * 1024;

class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "regpin.upstream"; }
    std::string message(int ev) const override {
        if (ev == static_cast<int>(errc::auth_failed)) return "upstream token request failed";
        if (ev == static_cast<int>(errc::offline))
            return "regpin is offline: upstreams are never contacted";
        return ev == 0 ? "ok" : "upstream error";
    }
};

std::string base64(std::string_view in) {
    namespace b64 = boost::beast::detail::base64;
    std::string out(b64::encoded_size(in.size()), '\0');
    out.resize(b64::encode(out.data(), in.data(), in.size()));
    return out;
}

http::client_options options_for(const config::upstream& cfg,
                                 std::vector<boost::asio::ip::tcp::endpoint> own_listeners) {
    http::client_options o;
    o.destinations.allow = cfg.allow_destinations;
    o.destinations.own_listeners = std::move(own_listeners);
    o.name = "upstream " + cfg.registry;
    o.connect_timeout = cfg.connect_timeout;
    o.read_timeout = cfg.read_timeout;
    o.max_idle_per_origin = cfg.max_idle_connections;
    o.ca_file = cfg.ca_file;
    o.tls_verify = cfg.tls_verify;
    return o;
}

bool same_host(const http::origin& a, const http::origin& b) {
    return a.host == b.host && a.port == b.port;
}

// Docker Hub: "ratelimit-remaining: 76;w=21600" -> 76; nullopt when absent or unparsable.
std::optional<long> parse_ratelimit_remaining(std::string_view header) {
    if (header.empty()) return std::nullopt;
    long v = 0;
    auto [p, ec] = std::from_chars(header.data(), header.data() + header.size(), v);
    if (ec != std::errc{}) return std::nullopt;
    return v;
}

}  // namespace

const boost::system::error_category& upstream_category() noexcept {
    static const category c;
    return c;
}

struct registry_client::state {
    state(asio::any_io_executor ex, const config::upstream& c, observer obs,
          std::vector<boost::asio::ip::tcp::endpoint> own, quota_policy q)
        : cfg(c),
          http(std::move(ex), options_for(c, std::move(own))),
          observe(std::move(obs)),
          quota(q) {
        if (cfg.urls.empty())
            throw std::invalid_argument("upstream " + cfg.registry + " has no url");
        for (const auto& url : cfg.urls) {
            auto split = http::split_url(url);
            if (!split) throw std::invalid_argument("bad upstream url " + url);
            mirrors.push_back({url, split->first});
        }
    }

    // One of the upstream's URLs, and how it has fared (under mutex).
    struct mirror {
        std::string url;
        http::origin base;
        int failures = 0;  // in a row
        std::chrono::steady_clock::time_point down_until;
        bool basic_challenged = false;
    };

    config::upstream cfg;
    http::client http;
    std::vector<mirror> mirrors;  // in the configured order; the vector never changes
    observer observe;

    token_cache tokens;  // keyed by mirror index and scope: each host has its own tokens
    std::mutex mutex;
    quota_policy quota;
    std::optional<long> remaining;  // under mutex: the last ratelimit-remaining stated
    std::chrono::steady_clock::time_point remaining_seen;

    void note_quota(const http::response& r) {
        auto stated = parse_ratelimit_remaining(r.headers()["ratelimit-remaining"]);
        if (!stated) return;
        bool fell = false;
        auto now = std::chrono::steady_clock::now();
        {
            std::lock_guard lock(mutex);
            bool was_low =
                remaining && *remaining <= quota.low_water && now - remaining_seen < quota.pause;
            fell = *stated <= quota.low_water && !was_low;
            remaining = stated;
            remaining_seen = now;
        }
        if (fell)
            spdlog::warn(
                "upstream {}: pull quota at {} (ratelimit-remaining), at or below {} "
                "(pin_checks.ratelimit_low_water): pin checks pause and no new manifests are "
                "fetched from it for {} s; pinned and cached content is still served",
                cfg.registry, *stated, quota.low_water, quota.pause.count());
    }

    static std::string token_key(std::size_t mirror, const std::string& scope) {
        return std::to_string(mirror) + " " + scope;
    }

    std::optional<std::string> authorization_for(std::size_t m, const std::string& scope) {
        if (auto token = tokens.find(token_key(m, scope))) return "Bearer " + *token;
        std::lock_guard lock(mutex);
        if (mirrors[m].basic_challenged && !cfg.username.empty())
            return "Basic " + base64(cfg.username + ":" + cfg.password);
        return std::nullopt;
    }

    // The mirrors a request tries, in order: the healthy ones; when every one is backing off,
    // all of them (a request may as well find out whether one is back).
    std::vector<std::size_t> candidates() {
        std::vector<std::size_t> healthy, all;
        auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(mutex);
        for (std::size_t i = 0; i < mirrors.size(); ++i) {
            all.push_back(i);
            if (mirrors[i].down_until <= now) healthy.push_back(i);
        }
        return healthy.empty() ? all : healthy;
    }

    // A mirror failed (no answer, 5xx, 429): it backs off 1 s, doubling to 60 s while it
    // keeps failing. A success ends the back-off.
    void failed(std::size_t m, const std::string& why) {
        int failures = 0;
        std::chrono::seconds pause{};
        {
            std::lock_guard lock(mutex);
            auto& mi = mirrors[m];
            failures = ++mi.failures;
            pause = std::chrono::seconds(1 << std::min(failures - 1, 6));
            pause = std::min(pause, max_backoff);
            mi.down_until = std::chrono::steady_clock::now() + pause;
        }
        if (mirrors.size() > 1)
            spdlog::warn(
                "upstream {}: {} failed ({}, {} in a row); requests go to the next "
                "URL for {} s",
                cfg.registry, mirrors[m].url, why, failures, pause.count());
    }

    void succeeded(std::size_t m) {
        bool recovered = false;
        {
            std::lock_guard lock(mutex);
            auto& mi = mirrors[m];
            recovered = mi.failures > 0;
            mi.failures = 0;
            mi.down_until = {};
        }
        if (recovered && mirrors.size() > 1)
            spdlog::info("upstream {}: {} answers again", cfg.registry, mirrors[m].url);
    }

    static constexpr std::chrono::seconds max_backoff{60};

    asio::awaitable<result<void>> fetch_token(std::size_t m, const challenge& ch,
                                              const std::string& scope);
    // One mirror: the request, with one auth challenge answered.
    asio::awaitable<result<http::response>> send_to(std::size_t m, const request& req,
                                                    const std::string& target);
    asio::awaitable<result<http::response>> send(request req);
};

asio::awaitable<result<void>> registry_client::state::fetch_token(std::size_t mirror,
                                                                  const challenge& ch,
                                                                  const std::string& scope) {
    const auto& base = mirrors[mirror].base;
    auto realm = boost::urls::parse_uri(ch.realm);
    if (!realm) co_return make_error_code(errc::auth_failed);
    auto where = http::split_url(ch.realm);
    if (!where) co_return make_error_code(errc::auth_failed);
    boost::urls::url u(*realm);
    if (!ch.service.empty()) u.params().append({"service", ch.service});
    auto want = ch.scope.empty() ? scope : ch.scope;
    if (!want.empty()) u.params().append({"scope", want});

    http::request m;
    m.origin = where->first;
    m.target = std::string(u.encoded_resource());
    m.redirects = http::redirect_policy::none();
    m.vouched_by = base;  // the realm is the upstream's word, checked as a redirect is
    // Credentials go to the token server only over TLS or to the upstream's own host.
    if (!cfg.username.empty() && (m.origin.tls || m.origin.host == base.host))
        m.header("Authorization", "Basic " + base64(cfg.username + ":" + cfg.password));
    auto r = co_await http.send(std::move(m));
    if (!r) co_return r.error();
    auto body = co_await r->read_all(token_body_limit);
    if (!body || r->status() != 200) {
        spdlog::warn("upstream {}: token request to {} answered {}", cfg.registry,
                     r->final_origin().key(), r->status());
        co_return make_error_code(errc::auth_failed);
    }
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (!j.is_object()) co_return make_error_code(errc::auth_failed);
    std::string token;
    if (j.contains("token") && j["token"].is_string())
        token = j["token"].get<std::string>();
    else if (j.contains("access_token") && j["access_token"].is_string())
        token = j["access_token"].get<std::string>();
    if (token.empty()) co_return make_error_code(errc::auth_failed);
    std::int64_t expires_in = 60;
    if (j.contains("expires_in") && j["expires_in"].is_number_integer())
        expires_in = std::max<std::int64_t>(j["expires_in"].get<std::int64_t>(), 1);
    // Renew a little early so a token never expires between the check and the request.
    auto margin = std::min<std::int64_t>(10, expires_in / 4);
    tokens.put(token_key(mirror, scope), token,
               std::chrono::steady_clock::now() + std::chrono::seconds(expires_in - margin));
    co_return result<void>{};
}

asio::awaitable<result<http::response>> registry_client::state::send_to(std::size_t m,
                                                                        const request& req,
                                                                        const std::string& target) {
    const auto& base = mirrors[m].base;
    for (int attempt = 0;; ++attempt) {
        http::request msg;
        msg.method = req.method;
        msg.origin = base;
        msg.target = target;
        if (!req.accept.empty()) msg.header("Accept", req.accept);
        if (!req.range.empty()) msg.header("Range", req.range);
        if (auto a = authorization_for(m, req.scope)) msg.header("Authorization", *a);
        auto r = co_await http.send(std::move(msg));
        if (!r) co_return r.error();
        // Only the mirror's own challenge is answered, once; any other 401 is the answer.
        if (r->status() != 401 || attempt > 0 || !same_host(r->final_origin(), base)) co_return r;
        auto ch = parse_challenge(r->headers()[bhttp::field::www_authenticate]);
        bool bearer = ch && ch->scheme == "bearer" && !ch->realm.empty();
        bool basic = ch && ch->scheme == "basic" && !cfg.username.empty();
        if (!bearer && !basic) co_return r;
        (void)co_await r->read_all(drain_limit);
        if (bearer) {
            auto t = co_await fetch_token(m, *ch, req.scope);
            if (!t) co_return t.error();
        } else {
            std::lock_guard lock(mutex);
            mirrors[m].basic_challenged = true;
        }
    }
}

asio::awaitable<result<http::response>> registry_client::state::send(request req) {
    // The one choke point every upstream request passes: offline means no socket at all.
    if (cfg.offline) co_return make_error_code(errc::offline);
    std::string target = req.target;
    if (cfg.send_ns)
        target += (target.find('?') == std::string::npos ? "?ns=" : "&ns=") + cfg.registry;
    // Mirrors in order: one that fails or lacks the content passes the request on. The last
    // answer is the client's; a transport error only when no mirror answered at all.
    auto order = candidates();
    std::optional<result<http::response>> last;
    for (std::size_t k = 0; k < order.size(); ++k) {
        const auto m = order[k];
        const bool more = k + 1 < order.size();
        auto r = co_await send_to(m, req, target);
        if (!r) {
            failed(m, r.error().message());
            if (!last || !*last) last = std::move(r);
            continue;
        }
        auto status = r->status();
        if (status >= 500 || status == 429)
            failed(m, "answered " + std::to_string(status));
        else
            succeeded(m);
        if (status < 400 || !more) co_return std::move(*r);
        // 404, 401/403 (a mirror without this repository) or a failure: the next one.
        spdlog::debug("upstream {}: {} answered {} for {}; trying {}", cfg.registry, mirrors[m].url,
                      status, req.target, mirrors[order[k + 1]].url);
        last = std::move(r);
    }
    co_return std::move(*last);
}

registry_client::registry_client(asio::any_io_executor ex, const config::upstream& cfg,
                                 observer obs,
                                 std::vector<boost::asio::ip::tcp::endpoint> own_listeners,
                                 quota_policy quota)
    : state_(std::make_shared<state>(std::move(ex), cfg, std::move(obs), std::move(own_listeners),
                                     quota)) {}

std::optional<registry_client::quota_low> registry_client::quota_exhausted() const {
    auto& st = *state_;
    std::lock_guard lock(st.mutex);
    if (!st.remaining || *st.remaining > st.quota.low_water) return std::nullopt;
    auto elapsed = std::chrono::steady_clock::now() - st.remaining_seen;
    if (elapsed >= st.quota.pause) return std::nullopt;
    auto wait = std::chrono::ceil<std::chrono::seconds>(st.quota.pause - elapsed);
    return quota_low{std::max(wait, std::chrono::seconds(1)), *st.remaining};
}
registry_client::~registry_client() = default;

asio::awaitable<result<http::response>> registry_client::send(request req) {
    auto st = state_;  // keep alive across suspension
    auto started = std::chrono::steady_clock::now();
    auto r = co_await st->send(std::move(req));
    if (r) st->note_quota(*r);
    if (st->observe) {
        auto seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        st->observe(st->cfg.registry, r ? r->status() : 0u, r ? error_code{} : r.error(), seconds);
    }
    co_return r;
}

const config::upstream& registry_client::settings() const { return state_->cfg; }

std::optional<std::string> registry_client::url_at(const http::origin& o) const {
    for (const auto& m : state_->mirrors)
        if (m.base == o) return m.url;
    return std::nullopt;
}

std::vector<registry_client::url_health> registry_client::health() const {
    auto& st = *state_;
    auto now = std::chrono::steady_clock::now();
    std::vector<url_health> out;
    std::lock_guard lock(st.mutex);
    for (const auto& m : st.mirrors) out.push_back({m.url, m.down_until <= now});
    return out;
}

std::size_t registry_client::open_connections() const { return state_->http.open_connections(); }

std::size_t registry_client::cached_tokens() const { return state_->tokens.size(); }

}  // namespace regpin::proxy::upstream
