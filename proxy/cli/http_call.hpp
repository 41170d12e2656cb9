#pragma once
// One blocking HTTP request for the CLI (the admin API is plain HTTP on loopback by default).

#include <chrono>
#include <string>

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

}  // namespace regpin::proxy::cli
