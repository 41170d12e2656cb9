#include "proxy/etcd/client.hpp"

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "proxy/http/client.hpp"

namespace regpin::proxy::etcd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {
// A json is constructible from an enum, so a bare errc would be ambiguous as a result<json>.
storage::result<json> failure(storage::errc e) {
    return {boost::system::in_place_error, make_error_code(e)};
}
}  // namespace

options options_from(const config::pin_store_settings& settings) {
    options o;
    o.endpoints = settings.endpoints;
    o.ca_file = settings.ca_file;
    o.cert_file = settings.cert_file;
    o.key_file = settings.key_file;
    o.username = settings.username;
    o.password = settings.password;
    o.timeout = settings.timeout;
    return o;
}

std::string b64(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3), '\0');
    auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                             reinterpret_cast<const unsigned char*>(bytes.data()),
                             static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::optional<std::string> unb64(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::string out(3 * text.size() / 4, '\0');
    auto n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                             reinterpret_cast<const unsigned char*>(text.data()),
                             static_cast<int>(text.size()));
    if (n < 0) return std::nullopt;
    // EVP_DecodeBlock counts the padding as zero bytes.
    std::size_t pad = 0;
    if (!text.empty() && text.back() == '=') ++pad;
    if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

std::int64_t int_field(const json& j, const char* name) {
    auto it = j.find(name);
    if (it == j.end()) return 0;
    if (it->is_number_integer()) return it->get<std::int64_t>();
    if (!it->is_string()) return 0;
    try {
        return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
        return 0;
    }
}

std::string prefix_end(std::string prefix) {
    while (!prefix.empty()) {
        auto& c = prefix.back();
        if (static_cast<unsigned char>(c) < 0xff) {
            ++c;
            return prefix;
        }
        prefix.pop_back();
    }
    return std::string(1, '\0');  // every key
}

std::optional<key_value> parse_kv(const json& j) {
    if (!j.is_object()) return std::nullopt;
    key_value kv;
    auto key = unb64(j.value("key", ""));
    auto value = unb64(j.value("value", ""));
    if (!key || !value) return std::nullopt;
    kv.key = std::move(*key);
    kv.value = std::move(*value);
    kv.create_revision = int_field(j, "create_revision");
    kv.mod_revision = int_field(j, "mod_revision");
    kv.lease = int_field(j, "lease");
    return kv;
}

std::optional<range_result> parse_range(const json& j) {
    if (!j.is_object()) return std::nullopt;
    range_result r;
    if (auto h = j.find("header"); h != j.end()) r.revision = int_field(*h, "revision");
    if (auto kvs = j.find("kvs"); kvs != j.end()) {
        if (!kvs->is_array()) return std::nullopt;
        for (const auto& e : *kvs) {
            auto kv = parse_kv(e);
            if (!kv) return std::nullopt;
            r.kvs.push_back(std::move(*kv));
        }
    }
    r.more = j.value("more", false);
    return r;
}

json range_request(std::string_view key, std::string_view range_end, std::int64_t limit,
                   std::int64_t revision, bool keys_only) {
    json j{{"key", b64(key)}};
    if (!range_end.empty()) j["range_end"] = b64(range_end);
    if (limit > 0) j["limit"] = std::to_string(limit);
    if (revision > 0) j["revision"] = std::to_string(revision);
    if (keys_only) j["keys_only"] = true;
    return j;
}

json put_op(std::string_view key, std::string_view value, std::int64_t lease) {
    json put{{"key", b64(key)}, {"value", b64(value)}};
    if (lease != 0) put["lease"] = std::to_string(lease);
    return {{"request_put", std::move(put)}};
}

json delete_op(std::string_view key) { return {{"request_delete_range", {{"key", b64(key)}}}}; }

json range_op(std::string_view key, std::string_view range_end) {
    return {{"request_range", range_request(key, range_end)}};
}

json compare_number(std::string_view key, const char* target, std::int64_t number,
                    const char* result) {
    std::string field = target == std::string_view("MOD")      ? "mod_revision"
                        : target == std::string_view("CREATE") ? "create_revision"
                                                               : "version";
    return {
        {"key", b64(key)}, {"target", target}, {"result", result}, {field, std::to_string(number)}};
}

json compare_value(std::string_view key, std::string_view value) {
    return {{"key", b64(key)}, {"target", "VALUE"}, {"result", "EQUAL"}, {"value", b64(value)}};
}

std::optional<txn_result> parse_txn(const json& j) {
    if (!j.is_object()) return std::nullopt;
    txn_result t;
    t.succeeded = j.value("succeeded", false);
    if (auto h = j.find("header"); h != j.end()) t.revision = int_field(*h, "revision");
    if (auto rs = j.find("responses"); rs != j.end() && rs->is_array()) {
        for (const auto& r : *rs) {
            auto range = r.find("response_range");
            if (range == r.end()) continue;
            auto parsed = parse_range(*range);
            if (!parsed) return std::nullopt;
            t.ranges.push_back(std::move(*parsed));
        }
    }
    return t;
}

// Coroutines on the loop hold no reference to it: stop() joins the thread, and the members'
// destruction (the HTTP clients, then the loop with its suspended coroutines) ends them.
class client_state {
public:
    explicit client_state(options o) : opts(std::move(o)), work(asio::make_work_guard(ioc)) {
        if (opts.endpoints.empty()) throw std::runtime_error("etcd: no endpoint configured");
        for (const auto& e : opts.endpoints) {
            auto split = http::split_url(e);
            if (!split)
                throw std::runtime_error("etcd: endpoint '" + e +
                                         "' is not an http:// or https:// URL");
            origins.push_back(split->first);
        }
        http::client_options co;
        co.name = "etcd";
        co.connect_timeout = opts.timeout;
        co.read_timeout = opts.timeout;
        co.max_idle_per_origin = 8;
        co.ca_file = opts.ca_file;
        co.cert_file = opts.cert_file;
        co.key_file = opts.key_file;
        co.redirects = http::redirect_policy::none();
        unary = std::make_unique<http::client>(ioc.get_executor(), co);
        co.read_timeout = opts.watch_idle;
        co.max_idle_per_origin = 0;
        streaming = std::make_unique<http::client>(ioc.get_executor(), co);
        thread = std::thread([this] { ioc.run(); });
    }

    ~client_state() { stop(); }

    void stop() {
        if (stopped.exchange(true)) return;
        work.reset();
        ioc.stop();
        if (thread.joinable()) thread.join();
    }

    enum class outcome { ok, unavailable, refused, auth_expired };
    struct answer {
        outcome kind = outcome::unavailable;
        json body;
        std::string message;
    };

    http::request make_request(std::size_t idx, const std::string& path, const json& body) {
        http::request req;
        req.method = boost::beast::http::verb::post;
        req.origin = origins[idx];
        req.target = path;
        req.body = body.dump();
        req.content_type = "application/json";
        std::lock_guard lock(token_mutex);
        if (!token.empty()) req.header("Authorization", token);
        return req;
    }

    static answer classify(unsigned status, const std::string& text) {
        answer a;
        auto j = json::parse(text, nullptr, false);
        if (status == 200 && j.is_object() && !j.contains("error")) {
            a.kind = outcome::ok;
            a.body = std::move(j);
            return a;
        }
        int code = j.is_object() ? j.value("code", 0) : 0;
        a.message = j.is_object() ? j.value("message", j.value("error", "")) : text.substr(0, 200);
        if (a.message.empty()) a.message = "HTTP " + std::to_string(status);
        // gRPC codes: 14 unavailable (no leader, leader changed), 4 deadline exceeded (a request
        // timed out during an election), 16 unauthenticated (token expired).
        if (code == 16 || a.message.find("invalid auth token") != std::string::npos)
            a.kind = outcome::auth_expired;
        else if (code == 14 || code == 4 || status == 503 || status >= 500)
            a.kind = outcome::unavailable;
        else
            a.kind = outcome::refused;
        return a;
    }

    asio::awaitable<answer> send_once(std::size_t idx, std::string path, json body) {
        auto req = make_request(idx, path, body);
        auto sent = co_await unary->send(std::move(req));
        if (!sent) co_return answer{outcome::unavailable, {}, sent.error().message()};
        auto deadline = std::chrono::steady_clock::now() + opts.timeout;
        auto text = co_await sent->read_all(64 * 1024 * 1024, deadline);
        if (!text) co_return answer{outcome::unavailable, {}, text.error().message()};
        co_return classify(sent->status(), *text);
    }

    asio::awaitable<bool> authenticate(std::size_t idx) {
        json body{{"name", opts.username}, {"password", opts.password}};
        {
            std::lock_guard lock(token_mutex);
            token.clear();
        }
        auto a = co_await send_once(idx, "/v3/auth/authenticate", body);
        if (a.kind != outcome::ok || !a.body.contains("token")) {
            spdlog::error("etcd {}: authentication as '{}' failed: {}", opts.endpoints[idx],
                          opts.username, a.message);
            co_return false;
        }
        std::lock_guard lock(token_mutex);
        token = a.body.value("token", "");
        co_return true;
    }

    asio::awaitable<storage::result<json>> call(std::string path, json body) {
        const auto n = origins.size();
        std::string last;
        for (int round = 0; round < 2; ++round) {
            for (std::size_t i = 0; i < n; ++i) {
                auto idx = (current.load() + i) % n;
                bool need_token = false;
                {
                    std::lock_guard lock(token_mutex);
                    need_token = !opts.username.empty() && token.empty();
                }
                if (need_token && !co_await authenticate(idx)) continue;
                auto a = co_await send_once(idx, path, body);
                if (a.kind == outcome::auth_expired && !opts.username.empty() &&
                    co_await authenticate(idx))
                    a = co_await send_once(idx, path, body);
                if (a.kind == outcome::ok) {
                    current = idx;
                    co_return std::move(a.body);
                }
                if (a.kind == outcome::refused || a.kind == outcome::auth_expired) {
                    spdlog::warn("etcd {}: {} refused: {}", opts.endpoints[idx], path, a.message);
                    co_return failure(storage::errc::invalid_argument);
                }
                last = opts.endpoints[idx] + ": " + a.message;
            }
            // Every member failed: an election takes about a second; wait once, then give up.
            asio::steady_timer t(ioc.get_executor(), std::chrono::milliseconds(300));
            co_await t.async_wait(asio::use_awaitable);
        }
        spdlog::debug("etcd: {} failed on every endpoint; last: {}", path, last);
        co_return failure(storage::errc::unavailable);
    }

    asio::awaitable<bool> watch(json create_request, std::function<bool(const json&)> on_message) {
        const auto n = origins.size();
        json body{{"create_request", std::move(create_request)}};
        for (std::size_t i = 0; i < n; ++i) {
            auto idx = (current.load() + i) % n;
            auto req = make_request(idx, "/v3/watch", body);
            auto sent = co_await streaming->send(std::move(req));
            if (!sent || sent->status() != 200) continue;
            current = idx;
            std::string buf;
            std::vector<char> chunk(64 * 1024);
            for (;;) {
                auto got = co_await sent->read_some(chunk);
                if (!got || *got == 0) co_return true;
                buf.append(chunk.data(), *got);
                std::size_t start = 0;
                for (auto nl = buf.find('\n', start); nl != std::string::npos;
                     nl = buf.find('\n', start)) {
                    auto j = json::parse(std::string_view(buf).substr(start, nl - start), nullptr,
                                         false);
                    start = nl + 1;
                    if (!j.is_object()) continue;
                    if (!j.contains("result")) {
                        spdlog::warn("etcd {}: watch error: {}", opts.endpoints[idx], j.dump());
                        co_return true;
                    }
                    if (!on_message(j["result"])) co_return true;
                }
                buf.erase(0, start);
                if (buf.size() > 64 * 1024 * 1024) co_return true;  // no message is this large
            }
        }
        co_return false;
    }

    options opts;
    std::vector<http::origin> origins;
    asio::io_context ioc;
    asio::executor_work_guard<asio::io_context::executor_type> work;
    std::unique_ptr<http::client> unary;
    std::unique_ptr<http::client> streaming;
    std::atomic<std::size_t> current{0};
    std::mutex token_mutex;
    std::string token;
    std::atomic<bool> stopped{false};
    std::thread thread;
};

client::client(options o) : state_(std::make_shared<client_state>(std::move(o))) {}

client::~client() { state_->stop(); }

asio::any_io_executor client::executor() const { return state_->ioc.get_executor(); }

asio::awaitable<storage::result<json>> client::call(std::string path, json body) {
    auto st = state_;
    co_return co_await st->call(std::move(path), std::move(body));
}

storage::result<json> client::call_blocking(std::string path, json body) {
    if (state_->stopped) return failure(storage::errc::unavailable);
    auto f = asio::co_spawn(state_->ioc, state_->call(std::move(path), std::move(body)),
                            asio::use_future);
    try {
        return f.get();
    } catch (const std::exception&) {
        return failure(storage::errc::unavailable);  // stopped while waiting
    }
}

asio::awaitable<bool> client::watch(json create_request,
                                    std::function<bool(const json&)> on_message) {
    auto st = state_;
    co_return co_await st->watch(std::move(create_request), std::move(on_message));
}

std::string client::current_endpoint() const {
    return state_->opts.endpoints[state_->current.load() % state_->opts.endpoints.size()];
}

}  // namespace regpin::proxy::etcd
