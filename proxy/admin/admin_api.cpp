#include "proxy/admin/admin_api.hpp"

#include <filesystem>
#include <limits>

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>

#include "proxy/console/console.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/oci/route.hpp"
#include "proxy/pins/resolution.hpp"
#include "proxy/pins/views.hpp"
#include "proxy/registry/replies.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::admin {

namespace asio = boost::asio;
using http::reply;
using nlohmann::json;

namespace {

reply json_reply(unsigned status, const json& j) {
    reply r;
    r.status = status;
    r.body = j.dump(2) + "\n";
    r.header("Content-Type", "application/json");
    r.route = "admin";
    return r;
}

reply fail(oci::error_code code, const std::string& message, unsigned status = 0) {
    auto r = registry::error_reply({code, message});
    if (status != 0) r.status = status;
    r.route = "admin";
    return r;
}

std::optional<pins::pin_target> target_of(const json& j, const config::settings& s,
                                          std::string& why) {
    for (const char* k : {"registry", "repository", "tag"}) {
        if (!j.contains(k) || !j[k].is_string() || j[k].get<std::string>().empty()) {
            why = std::string("'") + k + "' (a string) is required";
            return std::nullopt;
        }
    }
    pins::pin_target t{j["registry"], j["repository"], j["tag"]};
    bool known = std::any_of(s.upstreams.begin(), s.upstreams.end(),
                             [&](const config::upstream& u) { return u.registry == t.registry; });
    t.repository = oci::hub_repository(t.registry, t.repository);
    if (!known) {
        why = "no upstream is configured for registry '" + t.registry + "'";
        return std::nullopt;
    }
    if (!oci::valid_repository(t.repository) || !oci::valid_tag(t.tag)) {
        why = "invalid repository or tag";
        return std::nullopt;
    }
    return t;
}

reply events_or_error(const pins::actions::events& r) {
    if (!r) {
        const auto& e = r.error();
        unsigned status = e.code == oci::error_code::denied ? 409 : e.status();
        return fail(e.code, e.message, status);
    }
    json out = {{"events", json::array()}, {"skipped", json::array()}};
    for (const auto& e : r->events) out["events"].push_back(pins::event_json(e));
    for (const auto& s : r->skipped)
        out["skipped"].push_back({{"accept_class", s.accept_class}, {"reason", s.reason}});
    return json_reply(200, out);
}

// A count in a query parameter: 1 or more, `digits` digits at most.
std::optional<std::size_t> count_param(const std::string& v, std::size_t digits) {
    if (v.empty() || v.size() > digits || v.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
    auto n = std::stoul(v);
    if (n == 0) return std::nullopt;
    return n;
}

// A page cursor: the key of a page's last pin, as "registry\nrepository\ntag\nclass".
std::string encode_cursor(const storage::pin_key& k) {
    return k.registry + "\n" + k.repository + "\n" + k.tag + "\n" + std::to_string(k.accept_class);
}

std::optional<storage::pin_key> decode_cursor(const std::string& s) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (parts.size() < 4) {
        auto end = s.find('\n', start);
        parts.push_back(s.substr(start, end == std::string::npos ? end : end - start));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (parts.size() != 4 || parts[3].empty() || parts[3].size() > 3 ||
        parts[3].find_first_not_of("0123456789") != std::string::npos || std::stoi(parts[3]) > 255)
        return std::nullopt;
    return storage::pin_key{parts[0], parts[1], parts[2],
                            static_cast<std::uint8_t>(std::stoi(parts[3]))};
}

json pull_json(const storage::pull_record& r) {
    return {{"registry", r.registry},
            {"repository", r.repository},
            {"digest", r.digest},
            {"tag", r.tag.empty() ? json(nullptr) : json(r.tag)},
            {"client", r.client()},
            {"node", r.node.empty() ? json(nullptr) : json(r.node)},
            {"address", r.address},
            {"first_pulled", pins::format_time(r.first_ms)},
            {"last_pulled", pins::format_time(r.last_ms)},
            {"count", r.count}};
}

// "REGISTRY/REPOSITORY", "REGISTRY/REPOSITORY:TAG" or "REGISTRY/REPOSITORY@DIGEST" (Docker
// Hub's short names too) into the query's fields; the reason when it is none of them.
std::optional<std::string> parse_audit_ref(std::string ref, storage::audit_query& q) {
    if (auto at = ref.find('@'); at != std::string::npos) {
        q.digest = ref.substr(at + 1);
        if (!storage::digest::parse(q.digest)) return "the digest after '@' is not valid";
        ref.resize(at);
    }
    bool tagged = oci::has_tag(ref);
    if (tagged && !q.digest.empty()) return "give a tag or a digest, not both";
    auto parsed = oci::parse_image_name(ref);
    if (!parsed) return parsed.error().message;
    q.registry = parsed->registry;
    q.repository = parsed->repository;
    if (tagged) q.tag = parsed->tag;
    return std::nullopt;
}

// "os/arch" or "os/arch/variant" of lower-case letters, digits, '.', '_', '-'.
bool plausible_platform(const std::string& p) {
    if (p.empty() || p.size() > 64 ||
        p.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-/") != std::string::npos)
        return false;
    auto parts = std::count(p.begin(), p.end(), '/');
    return (parts == 1 || parts == 2) && p.front() != '/' && p.back() != '/' &&
           p.find("//") == std::string::npos;
}

}  // namespace

admin_api::admin_api(const config::settings& settings, store::pin_records& pins,
                     pins::actions& actions, pins::scheduler& scheduler,
                     const upstream::upstreams& upstreams, const pins::closure_keeper& closure,
                     metrics& m)
    : settings_(settings),
      pins_(pins),
      actions_(actions),
      scheduler_(scheduler),
      upstreams_(upstreams),
      closure_(closure),
      metrics_(m),
      policies_(settings) {}

config::token_scope needed_scope(std::string_view method, std::string_view path) {
    if (method != "GET" && method != "HEAD") return config::token_scope::admin;
    if (path == "/api/v1/resolve") return config::token_scope::resolve;
    return config::token_scope::read;
}

bool scope_allows(config::token_scope have, config::token_scope need) {
    return have == config::token_scope::admin || have == need;
}

const config::admin_token* admin_api::token_for(std::string_view presented) const {
    // Hash both sides so the comparison takes the same time whatever the lengths.
    auto given = storage::sha256_of(presented).str();
    const config::admin_token* found = nullptr;
    for (const auto& t : settings_.admin.tokens) {
        auto want = storage::sha256_of(t.value).str();
        if (CRYPTO_memcmp(given.data(), want.data(), want.size()) == 0) found = &t;
    }
    return found;
}

const config::admin_token* admin_api::token_named(std::string_view name) const {
    for (const auto& t : settings_.admin.tokens)
        if (t.name == name) return &t;
    return nullptr;
}

asio::awaitable<reply> admin_api::handle(http::incoming in) {
    auto url = boost::urls::parse_origin_form(in.target);
    if (!url) co_return fail(oci::error_code::name_invalid, "malformed target", 400);
    std::string path = url->path();
    if (path == "/healthz") co_return json_reply(200, {{"status", "ok"}});
    if (path == "/readyz") {
        if (draining_.load()) co_return json_reply(503, {{"status", "draining"}});
        // Cheap on purpose (probes run every few seconds): one point read of the pin store.
        storage::pin_key nothing{"readyz", "readyz", "readyz", 0};
        auto probe = co_await pins_.find(nothing);
        // etcd unreachable: still ready (every replica would go out of the Service together,
        // and pinned tags are served from memory), but degraded, and it says why.
        if (auto why = pins_.degraded(); why && !probe)
            co_return json_reply(503, {{"status", "storage unavailable"}, {"detail", *why}});
        if (!probe) co_return json_reply(503, {{"status", "storage unavailable"}});
        if (auto why = pins_.degraded())
            co_return json_reply(200, {{"status", "degraded"}, {"detail", *why}});
        // Still ready: everything cached is served; only new blobs are not kept.
        if (evictor_ && (evictor_->disk_full() || !evictor_->admitting()))
            co_return json_reply(
                200, {{"status", "degraded"}, {"detail", "cache: " + evictor_->status().detail}});
        co_return json_reply(200, {{"status", "ready"}});
    }
    if (path == "/metrics") {
        reply r;
        r.body = metrics_.render();
        r.header("Content-Type", "text/plain; version=0.0.4");
        r.route = "metrics";
        co_return r;
    }
    if (path == "/ui") {
        reply r;
        r.status = 308;
        r.header("Location", "/ui/");
        r.route = "console";
        co_return r;
    }
    if (path.rfind("/ui/", 0) == 0) co_return ui(in, path.substr(4));
    if (path.rfind("/api/", 0) != 0)
        co_return fail(oci::error_code::name_unknown, "no such endpoint", 404);

    if (settings_.admin.tokens.empty()) {
        auto r = fail(oci::error_code::unauthorized,
                      "the admin API is disabled: no token is configured (admin.tokens)", 401);
        co_return r;
    }
    constexpr std::string_view bearer = "Bearer ";
    const config::admin_token* token = nullptr;
    if (in.authorization.size() > bearer.size() &&
        std::string_view(in.authorization).substr(0, bearer.size()) == bearer)
        token = token_for(std::string_view(in.authorization).substr(bearer.size()));
    if (!token && in.authorization.empty() && !in.cookie.empty()) {
        // The console: its session cookie, and for a change the session's CSRF token too (a
        // cookie alone is sent by the browser whoever made the page that asks).
        if (auto s = sessions_.find(in.cookie)) {
            if (in.method != "GET" && in.method != "HEAD" &&
                !console::same_secret(in.csrf_token, s->csrf)) {
                spdlog::warn("admin API: {} {} from the console refused: no valid CSRF token",
                             in.method, path);
                co_return fail(oci::error_code::denied,
                               "a change from the console needs its CSRF token (X-CSRF-Token)",
                               403);
            }
            token = token_named(s->token_name);
        }
    }
    if (!token) {
        spdlog::warn("admin API: {} {} refused: missing or wrong token", in.method, path);
        auto r = fail(oci::error_code::unauthorized, "a valid admin token is required", 401);
        r.header("WWW-Authenticate", "Bearer realm=\"regpin-admin\"");
        co_return r;
    }
    if (auto need = needed_scope(in.method, path); !scope_allows(token->scope, need)) {
        spdlog::warn("admin API: {} {} refused: token {} has scope {}, this needs {}", in.method,
                     path, token->name, config::to_string(token->scope), config::to_string(need));
        co_return fail(oci::error_code::denied,
                       "token '" + token->name + "' has scope '" +
                           std::string(config::to_string(token->scope)) + "'; " + in.method + " " +
                           path + " needs scope '" + std::string(config::to_string(need)) +
                           "' (or 'admin')",
                       403);
    }
    co_return co_await api(in, "token:" + token->name);
}

reply admin_api::ui(const http::incoming& in, const std::string& name) {
    const bool secure = settings_.admin.tls.enabled();
    auto with_headers = [](reply r) {
        for (const auto& [k, v] : console::security_headers()) r.header(k, v);
        r.route = "console";
        return r;
    };
    if (in.method == "GET" || in.method == "HEAD") {
        if (name == "session") {
            auto s = sessions_.find(in.cookie);
            if (!s) return with_headers(fail(oci::error_code::unauthorized, "not logged in", 401));
            const auto* t = token_named(s->token_name);
            if (!t) return with_headers(fail(oci::error_code::unauthorized, "not logged in", 401));
            return with_headers(
                json_reply(200, {{"name", s->token_name},
                                 {"csrf", s->csrf},
                                 {"scope", std::string(config::to_string(t->scope))}}));
        }
        const auto* file = console::find_asset(name);
        if (!file) return with_headers(fail(oci::error_code::name_unknown, "no such page", 404));
        reply r;
        r.body = std::string(file->body);
        r.header("Content-Type", std::string(file->content_type));
        return with_headers(std::move(r));
    }
    // Login and logout take JSON only: a form on another site can post text/plain or a form
    // encoding without asking, but not application/json (that needs a CORS preflight, which
    // regpin never grants), so no other site can log a browser in with its own token.
    if (in.method == "POST" && (name == "login" || name == "logout") &&
        in.content_type.rfind("application/json", 0) != 0)
        return with_headers(fail(oci::error_code::unsupported,
                                 "the console's login and logout take application/json", 415));
    if (in.method == "POST" && name == "login") {
        if (settings_.admin.tokens.empty())
            return with_headers(fail(oci::error_code::unauthorized,
                                     "the console is disabled: no token is configured "
                                     "(admin.tokens)",
                                     401));
        auto body = json::parse(in.body, nullptr, false);
        std::string token;
        if (body.is_object() && body.contains("token") && body["token"].is_string())
            token = body["token"].get<std::string>();
        const auto* t = token.empty() ? nullptr : token_for(token);
        if (!t) {
            spdlog::warn("console: login from {} refused: wrong token", in.peer);
            return with_headers(
                fail(oci::error_code::unauthorized, "that token is not valid", 401));
        }
        // The console reads pins, events and the audit: a resolve-only token cannot use it.
        if (!scope_allows(t->scope, config::token_scope::read)) {
            spdlog::warn("console: login from {} refused: token {} has scope {}", in.peer, t->name,
                         config::to_string(t->scope));
            return with_headers(fail(oci::error_code::denied,
                                     "token '" + t->name +
                                         "' has scope 'resolve'; the console needs 'read' or "
                                         "'admin'",
                                     403));
        }
        auto opened = sessions_.open(t->name);
        spdlog::info("console: {} logged in from {}", t->name, in.peer);
        auto r = json_reply(200, {{"name", t->name},
                                  {"csrf", opened.s.csrf},
                                  {"scope", std::string(config::to_string(t->scope))}});
        r.header("Set-Cookie", sessions_.cookie(opened.id, secure));
        return with_headers(std::move(r));
    }
    if (in.method == "POST" && name == "logout") {
        auto s = sessions_.find(in.cookie);
        if (s && !console::same_secret(in.csrf_token, s->csrf))
            return with_headers(fail(oci::error_code::denied,
                                     "logging out needs the session's CSRF token (X-CSRF-Token)",
                                     403));
        if (s) {
            sessions_.close(in.cookie);
            spdlog::info("console: {} logged out", s->token_name);
        }
        auto r = json_reply(200, {{"logged_out", s.has_value()}});
        r.header("Set-Cookie", console::sessions::removal_cookie(secure));
        return with_headers(std::move(r));
    }
    return with_headers(fail(oci::error_code::name_unknown,
                             "no such endpoint: " + in.method + " /ui/" + name, 404));
}

asio::awaitable<reply> admin_api::api(const http::incoming& in, std::string actor) {
    auto url = boost::urls::parse_origin_form(in.target);
    std::string path = url->path();
    auto param = [&](const char* k) -> std::string {
        auto it = url->params().find(k);
        return it != url->params().end() ? std::string((*it).value) : std::string();
    };

    if (in.method == "GET" && path == "/api/v1/pins") {
        storage::pin_filter f;
        f.registry = param("registry");
        f.repository_prefix = param("repository_prefix");
        if (!f.repository_prefix.empty() && f.registry.empty())
            co_return fail(oci::error_code::name_invalid, "repository_prefix needs registry", 400);
        if (auto s = param("state"); !s.empty()) {
            f.state = storage::parse_pin_state(s);
            if (!f.state)
                co_return fail(oci::error_code::name_invalid,
                               "state must be pinned, pending or rejected", 400);
        }
        if (auto l = param("limit"); !l.empty()) {
            auto n = count_param(l, 7);
            if (!n)
                co_return fail(oci::error_code::pagination_number_invalid,
                               "limit must be a number, 1 or more", 400);
            f.limit = *n;
        }
        if (auto a = param("after"); !a.empty()) {
            f.after = decode_cursor(a);
            if (!f.after)
                co_return fail(oci::error_code::pagination_number_invalid,
                               "after must be the 'next' of an earlier page", 400);
        }
        // Search: a piece of "registry/repository:tag" (case-insensitive, the store checks it on
        // each key), and the policy that applies (checked here, over pages of the store's key
        // order).
        f.contains = param("q");
        std::optional<pins::policy_kind> policy;
        if (auto pk = param("policy"); !pk.empty()) {
            policy = pins::parse_policy(pk);
            if (!policy)
                co_return fail(oci::error_code::name_invalid,
                               "policy must be pin, follow, reject or artifact", 400);
        }
        const std::size_t wanted = f.limit;
        std::vector<storage::pin> page;
        std::optional<storage::pin_key> next;
        if (!policy) {
            auto listed = co_await pins_.list(f);
            if (!listed) co_return fail(oci::error_code::unknown, "storage failure", 500);
            page = std::move(*listed);
            if (page.size() == wanted) next = page.back().key;
        } else {
            // Scanned in store pages; one request looks at scan_budget pins at most and then
            // answers with what it found and where to go on.
            constexpr std::size_t batch = 1000, scan_budget = 200000;
            f.limit = batch;
            std::size_t scanned = 0;
            while (page.size() < wanted) {
                auto listed = co_await pins_.list(f);
                if (!listed) co_return fail(oci::error_code::unknown, "storage failure", 500);
                for (auto& p : *listed) {
                    ++scanned;
                    f.after = p.key;
                    if (policies_.for_key(p.key).policy != *policy) continue;
                    page.push_back(std::move(p));
                    if (page.size() == wanted) break;
                }
                if (page.size() == wanted) {
                    next = page.back().key;
                    break;
                }
                if (listed->size() < batch) break;
                if (scanned >= scan_budget) {
                    next = f.after;
                    break;
                }
            }
        }
        json out = {{"pins", json::array()},
                    {"next", next ? json(encode_cursor(*next)) : json(nullptr)},
                    {"total", pins_.count()},
                    {"registries", json::array()}};
        for (const auto& u : settings_.upstreams) out["registries"].push_back(u.registry);
        for (const auto& p : page) {
            auto j = pins::pin_json(p);
            j["policy"] = std::string(pins::to_string(policies_.for_key(p.key).policy));
            out["pins"].push_back(std::move(j));
        }
        co_return json_reply(200, out);
    }
    if (in.method == "GET" && path == "/api/v1/pin") {
        std::string why;
        auto t = target_of({{"registry", param("registry")},
                            {"repository", param("repository")},
                            {"tag", param("tag")}},
                           settings_, why);
        if (!t) co_return fail(oci::error_code::name_invalid, why, 400);
        auto listed = co_await pins_.list_tag(t->registry, t->repository, t->tag);
        if (!listed) co_return fail(oci::error_code::unknown, "storage failure", 500);
        json out = {{"pins", json::array()}, {"history", json::array()}};
        for (const auto& p : *listed) {
            // What the store holds of the pinned digest's content (and the pending one's).
            auto j = pins::pin_json(p);
            j["policy"] = std::string(pins::to_string(policies_.for_key(p.key).policy));
            j["content"] =
                pins::content_json(co_await closure_.report(p.manifest_digest, p.key.tag));
            j["pending_content"] = nullptr;
            if (p.pending_digest)
                j["pending_content"] =
                    pins::content_json(co_await closure_.report(*p.pending_digest, p.key.tag));
            out["pins"].push_back(std::move(j));
        }
        storage::pin_key tag_key{t->registry, t->repository, t->tag, 0};
        auto history = co_await pins_.history(tag_key);
        if (history)
            for (const auto& e : *history) out["history"].push_back(pins::event_json(e));
        if (out["pins"].empty() && out["history"].empty())
            co_return fail(oci::error_code::manifest_unknown, "no pin and no history for that tag",
                           404);
        co_return json_reply(200, out);
    }
    if (in.method == "GET" && path == "/api/v1/resolve") {
        if (!registry_) co_return fail(oci::error_code::unsupported, "no resolving here", 404);
        auto ref = param("ref");
        if (ref.empty())
            co_return fail(oci::error_code::name_invalid,
                           "ref is required: REGISTRY/REPOSITORY:TAG (Docker Hub short names too)",
                           400);
        if (ref.find('@') != std::string::npos)
            co_return fail(oci::error_code::name_invalid,
                           "ref names a digest already; give REGISTRY/REPOSITORY:TAG", 400);
        // No tag means "latest", as for docker pull and kubectl.
        auto parsed = oci::parse_image_name(ref);
        if (!parsed) co_return fail(parsed.error().code, "ref: " + parsed.error().message, 400);
        auto platform = param("platform");
        if (!platform.empty() && !plausible_platform(platform))
            co_return fail(oci::error_code::name_invalid,
                           "platform must be OS/ARCH or OS/ARCH/VARIANT (linux/amd64)", 400);
        auto who = actor.substr(actor.find(':') + 1);
        auto done = co_await registry_->resolve(parsed->registry, parsed->repository, parsed->tag,
                                                who, "resolve:" + actor);
        if (!done) {
            auto r = registry::error_reply(done.error());  // DENIED is 403, NAME_UNKNOWN 404
            r.route = "admin";
            spdlog::info("admin API: resolve {} by {}: {}", parsed->str(), actor,
                         done.error().message);
            co_return r;
        }
        auto res =
            pins::resolve_pin(done->pin, done->manifest ? &*done->manifest : nullptr, platform);
        if (!res.value) co_return fail(oci::error_code::manifest_unknown, res.error, 404);
        co_return json_reply(
            200, pins::resolution_json(*res.value,
                                       pins::to_string(policies_.for_key(done->pin.key).policy)));
    }
    if (in.method == "GET" && path == "/api/v1/cache") {
        if (!evictor_) co_return fail(oci::error_code::unsupported, "no cache status here", 404);
        co_return json_reply(200, cache::cache_json(evictor_->status(), evictor_->settings()));
    }
    if (in.method == "GET" && path == "/api/v1/events") {
        std::uint64_t after = 0;
        std::int64_t since = 0;
        std::size_t limit = 1000;
        int wait_s = 0;
        bool numbers = true;
        try {
            if (auto a = param("after"); !a.empty()) after = std::stoull(a);
            if (auto l = param("limit"); !l.empty())
                limit = std::min<std::size_t>(std::stoul(l), 10000);
            if (auto w = param("wait_s"); !w.empty()) wait_s = std::clamp(std::stoi(w), 0, 60);
        } catch (const std::exception&) {
            numbers = false;
        }
        std::size_t last = 0;
        try {
            if (auto l = param("last"); !l.empty())
                last = std::min<std::size_t>(std::stoul(l), 1000);
        } catch (const std::exception&) {
            numbers = false;
        }
        if (!numbers || limit == 0)
            co_return fail(oci::error_code::name_invalid,
                           "after, last, limit and wait_s must be numbers, limit 1 or more", 400);
        if (last > 0) {
            // The newest `last` events (oldest first), for a timeline's first look: the newest
            // id by bisection (each probe one seek), then the events after newest - last.
            std::uint64_t low = 0, high = std::numeric_limits<std::int64_t>::max();
            while (low + 1 < high) {
                std::uint64_t mid = low + (high - low) / 2;
                auto probe = co_await pins_.events(mid, 0, 1);
                if (!probe) co_return fail(oci::error_code::unknown, "storage failure", 500);
                if (probe->empty())
                    high = mid;
                else
                    low = probe->front().id;
            }
            after = low > last ? low - last : 0;
            limit = last;
            wait_s = 0;
        }
        if (auto s = param("since"); !s.empty()) {
            auto t = pins::parse_time(s);
            if (!t)
                co_return fail(oci::error_code::name_invalid,
                               "since must be RFC 3339 or unix milliseconds", 400);
            since = *t;
        }
        asio::steady_timer timer(co_await asio::this_coro::executor);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
        while (true) {
            auto events = co_await pins_.events(after, since, limit);
            if (!events) co_return fail(oci::error_code::unknown, "storage failure", 500);
            if (!events->empty() || std::chrono::steady_clock::now() >= deadline) {
                json out = {{"events", json::array()}};
                for (const auto& e : *events) out["events"].push_back(pins::event_json(e));
                co_return json_reply(200, out);
            }
            // Long poll: look again shortly (bounded by wait_s).
            timer.expires_after(std::chrono::milliseconds(200));
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
    if (in.method == "GET" && path == "/api/v1/audit") {
        if (!audit_) co_return fail(oci::error_code::unsupported, "no pull audit here", 404);
        storage::audit_query q;
        if (auto ref = param("ref"); !ref.empty())
            if (auto why = parse_audit_ref(ref, q))
                co_return fail(oci::error_code::name_invalid, "ref: " + *why, 400);
        if (auto d = param("digest"); !d.empty()) {
            if (!storage::digest::parse(d))
                co_return fail(oci::error_code::digest_invalid, "digest is not a valid digest",
                               400);
            if (!q.digest.empty() && q.digest != d)
                co_return fail(oci::error_code::name_invalid, "ref and digest disagree", 400);
            q.digest = d;
        }
        q.client = param("node");
        if (auto s = param("since"); !s.empty()) {
            auto t = pins::parse_time(s);
            if (!t)
                co_return fail(oci::error_code::name_invalid,
                               "since must be RFC 3339 or unix milliseconds", 400);
            q.since_ms = *t;
        }
        if (auto l = param("limit"); !l.empty()) {
            auto n = count_param(l, 6);
            if (!n)
                co_return fail(oci::error_code::pagination_number_invalid,
                               "limit must be a number, 1 to 999999", 400);
            q.limit = *n;
        }
        auto found = co_await audit_->query(q);
        if (!found) co_return fail(oci::error_code::unknown, "storage failure", 500);
        json out = {{"records", json::array()}, {"clients", storage::pull_clients(*found)}};
        for (const auto& r : *found) out["records"].push_back(pull_json(r));
        co_return json_reply(200, out);
    }
    if (path == "/api/v1/verify" && (in.method == "GET" || in.method == "POST")) {
        if (!scrubber_) co_return fail(oci::error_code::unsupported, "no verification here", 404);
        if (in.method == "POST") {
            bool started = scrubber_->request();
            spdlog::info("admin API: verify {} by {}", started ? "started" : "already running",
                         actor);
            auto j = cache::scrub_json(scrubber_->status());
            j["started"] = started;
            co_return json_reply(started ? 202 : 200, j);
        }
        co_return json_reply(200, cache::scrub_json(scrubber_->status()));
    }
    if (in.method == "POST" && path == "/api/v1/backup") {
        if (!content_) co_return fail(oci::error_code::unsupported, "no backups here", 404);
        auto body = json::parse(in.body, nullptr, false);
        if (!body.is_object() || !body.contains("dir") || !body["dir"].is_string())
            co_return fail(oci::error_code::name_invalid,
                           "the body must be a JSON object with \"dir\": an absolute path", 400);
        std::filesystem::path dir(body["dir"].get<std::string>());
        std::error_code ec;
        if (!dir.is_absolute())
            co_return fail(oci::error_code::name_invalid,
                           "'dir' must be an absolute path on regpin's host", 400);
        if (std::filesystem::exists(dir, ec))
            co_return fail(oci::error_code::name_invalid,
                           "'" + dir.string() + "' exists: a backup goes into a new folder", 400);
        if (!std::filesystem::is_directory(dir.parent_path(), ec))
            co_return fail(oci::error_code::name_invalid,
                           "the parent folder of '" + dir.string() + "' does not exist", 400);
        spdlog::info("admin API: backup to {} by {}", dir.string(), actor);
        auto began = std::chrono::steady_clock::now();
        auto done = co_await content_->backup(dir.string());
        if (!done.error.empty()) {
            spdlog::error("admin API: backup to {} failed: {}", dir.string(), done.error);
            co_return fail(oci::error_code::unknown, "backup failed: " + done.error, 500);
        }
        auto seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
        spdlog::info("admin API: backup to {} done in {:.1f} s", dir.string(), seconds);
        co_return json_reply(200,
                             {{"dir", dir.string()}, {"bytes", done.bytes}, {"seconds", seconds}});
    }
    if (in.method == "POST" && path.rfind("/api/v1/pin/", 0) == 0) {
        auto body = json::parse(in.body, nullptr, false);
        if (!body.is_object())
            co_return fail(oci::error_code::name_invalid, "the body must be a JSON object", 400);
        std::string why;
        auto t = target_of(body, settings_, why);
        if (!t) co_return fail(oci::error_code::name_invalid, why, 400);
        auto action = path.substr(std::string("/api/v1/pin/").size());
        std::optional<std::string> digest;
        if (body.contains("digest") && body["digest"].is_string())
            digest = body["digest"].get<std::string>();
        spdlog::info("admin API: {} {}/{}:{} by {}", action, t->registry, t->repository, t->tag,
                     actor);
        if (action == "approve") {
            auto done = co_await actions_.approve(*t, digest, actor);
            co_return events_or_error(done);
        }
        if (action == "unpin") {
            auto done = co_await actions_.unpin(*t, actor);
            co_return events_or_error(done);
        }
        if (action == "set") {
            if (!digest)
                co_return fail(oci::error_code::digest_invalid, "'digest' is required", 400);
            auto done = co_await actions_.set(*t, *digest, actor);
            co_return events_or_error(done);
        }
        if (action == "check") {
            auto listed = co_await pins_.list_tag(t->registry, t->repository, t->tag);
            if (!listed) co_return fail(oci::error_code::unknown, "storage failure", 500);
            json out = {{"results", json::array()}};
            auto ui = upstreams_.index_of(t->registry);
            for (const auto& p : *listed) {
                auto r = co_await scheduler_.check_now(p.key, ui);
                json jr = {{"accept_class", p.key.accept_class},
                           {"outcome", std::string(pins::to_string(r.outcome))},
                           {"upstream_digest", r.upstream_digest},
                           {"error", r.error},
                           {"events", json::array()}};
                for (const auto& e : r.events) jr["events"].push_back(pins::event_json(e));
                out["results"].push_back(jr);
            }
            if (out["results"].empty())
                co_return fail(oci::error_code::manifest_unknown, "no pin for that tag", 404);
            co_return json_reply(200, out);
        }
    }
    co_return fail(oci::error_code::name_unknown, "no such endpoint: " + in.method + " " + path,
                   404);
}

}  // namespace regpin::proxy::admin
