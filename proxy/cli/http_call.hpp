#pragma once
// One blocking HTTP request for the CLI (the admin API is plain HTTP on loopback by default).

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regpin::proxy::cli {

struct http_result {
    unsigned status = 0;
    std::string body;
    std::string error;  // non-empty when no response arrived
};

// `base` is "http://host:port"; `target` the origin form. Sends the token as a Bearer.
http_result http_call(const std::string& base, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& token,
                      std::chrono::seconds timeout);

// A GET whose body goes to `on_data` piece by piece (nothing is accumulated), with extra
// headers. The status is known before the first call of on_data.
http_result http_get_stream(const std::string& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::function<void(unsigned status, std::string_view)>& on_data,
                            std::chrono::seconds timeout);

}  // namespace regpin::proxy::cli
