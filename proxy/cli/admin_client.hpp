#pragma once
// What the CLI's commands of the admin API share: its address, the token, and one call that
// either returns the JSON answer or exits with a clear message.

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "proxy/cli/http_call.hpp"

namespace regpin::proxy::cli {

// What every command of the admin API takes.
struct common {
    server admin{"http://127.0.0.1:5001", ""};
    std::string token_file;
    std::string token;
    bool as_json = false;
};

// Prints "regpin: MESSAGE" on stderr and exits 1.
[[noreturn]] void fail(const std::string& message);

// --admin (or $REGPIN_ADMIN), --cacert, --token-file, and --json with `json_help` (none when
// nullptr: a command whose output is not a table).
void add_common(CLI::App& app, common& c, const char* json_help);

// The token from --token-file, else $REGPIN_ADMIN_TOKEN.
void read_token(common& c);

// An answer of the admin API: its status and JSON body, and the OCI error's message when it
// is one.
struct api_answer {
    unsigned status = 0;
    nlohmann::json body;
    std::string message;
};
// Calls the API; exits with a clear message when it cannot be reached, the token is refused
// (401) or the answer is not JSON. Other statuses are the caller's to judge.
api_answer call_any(const common& c, const std::string& method, const std::string& target,
                    const std::string& body = "");

// Calls the API and returns the JSON body; exits with a clear message on any failure.
nlohmann::json call(const common& c, const std::string& method, const std::string& target,
                    const std::string& body = "");

// Percent-encodes a query parameter's value ('/' and ':' kept).
std::string query_escape(const std::string& s);

}  // namespace regpin::proxy::cli
