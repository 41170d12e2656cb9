#pragma once
// log_format "json" (issue 16, point 4): every log line is one JSON object, for log shippers
// (Fluent Bit, Vector, Loki's promtail) that parse lines without patterns:
//   {"time":"2026-12-05T11:04:09.011Z","level":"info","msg":"regpin 0.1.0 starting; ..."}
// A request line carries its fields instead of a message (request_fields):
//   {"time":...,"level":"info","listener":"registry","peer":"10.0.0.7:51234","node":"node-a",
//    "method":"GET","target":"/v2/...","status":200,"bytes":1234,"ms":0.4,"cache":"pin",...}
// Strings are escaped as JSON requires; bytes that are not UTF-8 become U+FFFD.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regpin::proxy::http {

// Makes the default logger write JSON lines (call once, after it is set up).
void use_json_logs();

// A request's log line for use_json_logs(): logged as a message, it becomes the line's fields.
// `fields` with the value "-" are written as null.
struct request_line {
    std::string_view listener;
    std::string_view peer;
    std::string_view node;
    std::string_view method;
    std::string_view target;
    unsigned status = 0;
    std::uint64_t bytes = 0;
    double ms = 0;
    std::vector<std::pair<std::string_view, std::string_view>> fields;
};
std::string request_fields(const request_line& r);

}  // namespace regpin::proxy::http
