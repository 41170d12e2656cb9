#pragma once
// A client of etcd's v3 API through its JSON gateway (etcd 3.4: /v3/kv/range, /v3/kv/txn,
// /v3/watch, /v3/lease/*), over the project's one HTTP client (proxy/http/client.hpp): TLS with
// an optional client certificate, keep-alive, timeouts. Why not gRPC: the gateway is part of
// every etcd 3.4 server, needs no generated code and no gRPC/protobuf/abseil stack, and
// streams a watch as one JSON message per line over an ordinary chunked response.
//
//   etcd::client c({.endpoints = {"http://127.0.0.1:2379"}});
//   auto r = c.call_blocking("/v3/kv/range", {{"key", etcd::b64("/regpin/seq")}});
//
// It owns one thread running its event loop. Unary calls go to the current endpoint and fail
// over to the next on a transport error, a timeout or an "unavailable" answer (an election in
// progress), round the list twice; then errc::unavailable. With a username it authenticates
// (/v3/auth/authenticate) and renews the token when etcd says it is invalid. Thread-safe.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "config/config.hpp"
#include "storage/errors.hpp"

namespace regpin::proxy::etcd {

struct options {
    std::vector<std::string> endpoints;  // "http://10.0.0.1:2379", "https://etcd-0.etcd:2379"
    std::string ca_file;                 // PEM: etcd's CA, trusted besides the system CAs
    std::string cert_file;               // client certificate (etcd --client-cert-auth)
    std::string key_file;
    std::string username;  // etcd's auth; the password is never logged
    std::string password;
    std::chrono::milliseconds timeout{3000};  // one request to one endpoint
    // A watch stream silent this long is closed and reopened from where it was (etcd 3.4 sends
    // no heartbeat over the gateway, and a silent stream may be a dead peer).
    std::chrono::milliseconds watch_idle{10000};
};

// The client options a config's pin_store names (endpoints, TLS, credentials, timeout).
options options_from(const config::pin_store_settings& settings);

// base64 as the gateway encodes keys and values.
std::string b64(std::string_view bytes);
std::optional<std::string> unb64(std::string_view text);
// The gateway's int64 fields are JSON strings ("7"), absent when 0.
std::int64_t int_field(const nlohmann::json& j, const char* name);
// The smallest key after every key that starts with `prefix`: a range's range_end.
std::string prefix_end(std::string prefix);

struct key_value {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t lease = 0;
};
std::optional<key_value> parse_kv(const nlohmann::json& j);

// A range answer: the store's revision and the keys.
struct range_result {
    std::int64_t revision = 0;
    std::vector<key_value> kvs;
    bool more = false;
};
std::optional<range_result> parse_range(const nlohmann::json& j);

// Request builders (JSON objects of the gateway's shape).
nlohmann::json range_request(std::string_view key, std::string_view range_end = {},
                             std::int64_t limit = 0, std::int64_t revision = 0,
                             bool keys_only = false);
nlohmann::json put_op(std::string_view key, std::string_view value, std::int64_t lease = 0);
nlohmann::json delete_op(std::string_view key);
nlohmann::json range_op(std::string_view key, std::string_view range_end = {});
// Compare `target` ("MOD", "CREATE", "VERSION") of `key` with `number` by `result` ("EQUAL",
// "GREATER", ...); a key that does not exist has 0 for all three.
nlohmann::json compare_number(std::string_view key, const char* target, std::int64_t number,
                              const char* result = "EQUAL");
nlohmann::json compare_value(std::string_view key, std::string_view value);

struct txn_result {
    bool succeeded = false;
    std::int64_t revision = 0;
    std::vector<range_result> ranges;  // the range ops of the branch that ran, in order
};
std::optional<txn_result> parse_txn(const nlohmann::json& j);

class client_state;

class client {
public:
    // Throws std::runtime_error on unusable options (no endpoint, a bad URL, unreadable
    // certificates).
    explicit client(options o);
    // Stops the event loop; calls still waiting get errc::unavailable.
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // The client's own event loop: run its coroutines there (watch(), call()).
    boost::asio::any_io_executor executor() const;

    // POSTs `body` to `path` and returns the answer's JSON. errc::unavailable when no endpoint
    // answered; errc::invalid_argument when etcd refused the request (its message logged).
    [[nodiscard]] boost::asio::awaitable<storage::result<nlohmann::json>> call(std::string path,
                                                                               nlohmann::json body);
    // call() from any thread but the client's own (it waits).
    [[nodiscard]] storage::result<nlohmann::json> call_blocking(std::string path,
                                                                nlohmann::json body);

    // Opens a watch (body: the create_request object) and hands each message's "result" to
    // `on_message` until the stream ends, `on_message` returns false, or nothing arrives for
    // options::watch_idle. Returns whether a stream was opened (false: no endpoint answered).
    [[nodiscard]] boost::asio::awaitable<bool> watch(
        nlohmann::json create_request, std::function<bool(const nlohmann::json&)> on_message);

    // The endpoint calls go to now ("http://127.0.0.1:2379"), for logs.
    std::string current_endpoint() const;

private:
    std::shared_ptr<client_state> state_;
};

}  // namespace regpin::proxy::etcd
