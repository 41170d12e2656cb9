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
        auto split = http::split_url(cfg.url);
        if (!split) throw std::invalid_argument("bad upstream url " + cfg.url);
        base = split->first;
    }

    config::upstream cfg;
    http::client http;
    http::origin base;
    observer observe;

    token_cache tokens;
    std::mutex mutex;
    bool basic_challenged = false;
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

    std::optional<std::string> authorization_for(const std::string& scope) {
        if (auto token = tokens.find(scope)) return "Bearer " + *token;
        std::lock_guard lock(mutex);
        if (basic_challenged && !cfg.username.empty())
            return "Basic " + base64(cfg.username + ":" + cfg.password);
        return std::nullopt;
    }

    asio::awaitable<result<void>> fetch_token(const challenge& ch, const std::string& scope);
    asio::awaitable<result<http::response>> send(request req);
};

asio::awaitable<result<void>> registry_client::state::fetch_token(const challenge& ch,
                                                                  const std::string& scope) {
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
    tokens.put(scope, token,
               std::chrono::steady_clock::now() + std::chrono::seconds(expires_in - margin));
    co_return result<void>{};
}

asio::awaitable<result<http::response>> registry_client::state::send(request req) {
    // The one choke point every upstream request passes: offline means no socket at all.
    if (cfg.offline) co_return make_error_code(errc::offline);
    std::string target = req.target;
    if (cfg.send_ns)
        target += (target.find('?') == std::string::npos ? "?ns=" : "&ns=") + cfg.registry;
    for (int attempt = 0;; ++attempt) {
        http::request m;
        m.method = req.method;
        m.origin = base;
        m.target = target;
        if (!req.accept.empty()) m.header("Accept", req.accept);
        if (!req.range.empty()) m.header("Range", req.range);
        if (auto a = authorization_for(req.scope)) m.header("Authorization", *a);
        auto r = co_await http.send(std::move(m));
        if (!r) co_return r.error();
        // Only the upstream's own challenge is answered, once; any other 401 is the answer.
        if (r->status() != 401 || attempt > 0 || !same_host(r->final_origin(), base)) co_return r;
        auto ch = parse_challenge(r->headers()[bhttp::field::www_authenticate]);
        bool bearer = ch && ch->scheme == "bearer" && !ch->realm.empty();
        bool basic = ch && ch->scheme == "basic" && !cfg.username.empty();
        if (!bearer && !basic) co_return r;
        (void)co_await r->read_all(drain_limit);
        if (bearer) {
            auto t = co_await fetch_token(*ch, req.scope);
            if (!t) co_return t.error();
        } else {
            std::lock_guard lock(mutex);
            basic_challenged = true;
        }
    }
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

const http::origin& registry_client::origin() const { return state_->base; }

std::size_t registry_client::open_connections() const { return state_->http.open_connections(); }

std::size_t registry_client::cached_tokens() const { return state_->tokens.size(); }

}  // namespace regpin::proxy::upstream
