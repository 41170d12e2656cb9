#include "proxy/cli/admin_client.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace regpin::proxy::cli {

using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "regpin: %s\n", message.c_str());
    std::exit(1);
}

void add_common(CLI::App& app, common& c, const char* json_help) {
    app.add_option("--admin", c.admin.url,
                   "the admin API, http(s)://HOST:PORT (https:// with admin.tls)")
        ->envname("REGPIN_ADMIN")
        ->capture_default_str();
    app.add_option("--cacert", c.admin.ca_file,
                   "a CA certificate (PEM) trusted for an https admin API, besides the system "
                   "CAs")
        ->check(CLI::ExistingFile);
    app.add_option("--token-file", c.token_file, "the admin token (default $REGPIN_ADMIN_TOKEN)")
        ->check(CLI::ExistingFile);
    if (json_help) app.add_flag("--json", c.as_json, json_help);
}

void read_token(common& c) {
    if (!c.token_file.empty()) {
        std::ifstream in(c.token_file);
        if (!in) fail("cannot read the token file '" + c.token_file + "'");
        std::getline(in, c.token);
    } else if (const char* t = std::getenv("REGPIN_ADMIN_TOKEN")) {
        c.token = t;
    }
    while (!c.token.empty() && (c.token.back() == '\r' || c.token.back() == ' '))
        c.token.pop_back();
}

api_answer call_any(const common& c, const std::string& method, const std::string& target,
                    const std::string& body) {
    if (c.token.empty()) fail("no admin token: pass --token-file FILE or set REGPIN_ADMIN_TOKEN");
    auto r = http_call(c.admin, method, target, body, c.token, std::chrono::seconds(120));
    if (!r.error.empty())
        fail("cannot reach the admin API at " + c.admin.url + ": " + r.error +
             " (is regpin running? is --admin right?)");
    api_answer out{r.status, json::parse(r.body, nullptr, false), {}};
    if (r.status == 401) fail("the admin API at " + c.admin.url + " refused the token (401)");
    if (r.status >= 200 && r.status <= 299 && out.body.is_discarded())
        fail("the admin API sent something that is not JSON");
    if (r.status < 200 || r.status > 299) {
        out.message = r.body;
        const auto& j = out.body;
        if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty())
            out.message = j["errors"][0].value("message", r.body);
    }
    return out;
}

json call(const common& c, const std::string& method, const std::string& target,
          const std::string& body) {
    auto a = call_any(c, method, target, body);
    if (a.status < 200 || a.status > 299)
        fail("the admin API answered " + std::to_string(a.status) + ": " + a.message);
    return a.body;
}

std::string query_escape(const std::string& s) {
    std::string out;
    for (unsigned char ch : s) {
        if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || ch == '/' ||
            ch == ':')
            out.push_back(static_cast<char>(ch));
        else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", ch);
            out += buf;
        }
    }
    return out;
}

}  // namespace regpin::proxy::cli
