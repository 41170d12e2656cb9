#pragma once
// One blocking HTTP(S) request for the CLI, through the project's one client (http::client):
// TLS verified against the system CAs plus an optional CA file (`--cacert`).

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regpin::proxy::cli {

// Where the CLI sends its requests: "http(s)://host:port" and a CA file for https (may be
// empty: the system CAs only).
struct server {
    std::string url;
    std::string ca_file;
};

struct http_result {
    unsigned status = 0;
    std::string body;
    std::string error;  // non-empty when no complete response arrived
};

// `target` is the origin form. Sends the token as a Bearer when not empty.
http_result http_call(const server& to, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& token,
                      std::chrono::seconds timeout);

// A GET whose body goes to `on_data` piece by piece (nothing is accumulated), with extra
// headers. The status is known before the first call of on_data.
http_result http_get_stream(const server& to, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::function<void(unsigned status, std::string_view)>& on_data,
                            std::chrono::seconds timeout);

}  // namespace regpin::proxy::cli
