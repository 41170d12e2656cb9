#include "proxy/admin/admin_api.hpp"

#include <filesystem>

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>

#include "proxy/oci/reference.hpp"
#include "proxy/oci/route.hpp"
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
      metrics_(m) {}

std::string admin_api::token_name(std::string_view presented) const {
    // Hash both sides so the comparison takes the same time whatever the lengths.
    auto given = storage::sha256_of(presented).str();
    std::string found;
    for (const auto& t : settings_.admin.tokens) {
        auto want = storage::sha256_of(t.value).str();
        if (CRYPTO_memcmp(given.data(), want.data(), want.size()) == 0) found = t.name;
    }
    return found;
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
    if (path.rfind("/api/", 0) != 0)
        co_return fail(oci::error_code::name_unknown, "no such endpoint", 404);

    if (settings_.admin.tokens.empty()) {
        auto r = fail(oci::error_code::unauthorized,
                      "the admin API is disabled: no token is configured (admin.tokens)", 401);
        co_return r;
    }
    constexpr std::string_view bearer = "Bearer ";
    std::string name;
    if (in.authorization.size() > bearer.size() &&
        std::string_view(in.authorization).substr(0, bearer.size()) == bearer)
        name = token_name(std::string_view(in.authorization).substr(bearer.size()));
    if (name.empty()) {
        spdlog::warn("admin API: {} {} refused: missing or wrong token", in.method, path);
        auto r = fail(oci::error_code::unauthorized, "a valid admin token is required", 401);
        r.header("WWW-Authenticate", "Bearer realm=\"regpin-admin\"");
        co_return r;
    }
    co_return co_await api(in, "token:" + name);
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
            bool digits = l.size() <= 7 && l.find_first_not_of("0123456789") == std::string::npos;
            f.limit = digits ? std::stoul(l) : 0;
            if (f.limit == 0)
                co_return fail(oci::error_code::pagination_number_invalid,
                               "limit must be a number, 1 or more", 400);
        }
        auto listed = co_await pins_.list(f);
        if (!listed) co_return fail(oci::error_code::unknown, "storage failure", 500);
        json out = {{"pins", json::array()}};
        for (const auto& p : *listed) out["pins"].push_back(pins::pin_json(p));
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
        if (!numbers || limit == 0)
            co_return fail(oci::error_code::name_invalid,
                           "after, limit and wait_s must be numbers, limit 1 or more", 400);
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
