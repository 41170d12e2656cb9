#include "proxy/cli/commands.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/cli/http_call.hpp"

namespace regpin::proxy::cli {

namespace {

using nlohmann::json;

constexpr const char* usage_pins = R"(Usage: regpin pins <command> [options]

Commands:
  list [--registry R] [--repository-prefix P] [--state pinned|pending|rejected]
                              list pins
  show REF                    one tag's pins and history
  approve REF [--digest D]    move the pin to its pending digest, or to D
  unpin REF                   forget the pin; the next pull pins afresh
  set REF --digest D          pin the tag to D by hand (fetched and verified)
  check REF                   compare the pin with the upstream now

REF is REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/nginx:1.27 (a name without a
registry host means docker.io).

Options for every command:
  --admin URL        the admin API (default $REGPIN_ADMIN or http://127.0.0.1:5001);
                     https:// for an admin API with admin.tls
  --cacert FILE      CA certificate (PEM) trusted for an https admin API, besides the
                     system CAs
  --token-file FILE  the admin token (default $REGPIN_ADMIN_TOKEN)
  --json             print the API's JSON instead of a table
)";

constexpr const char* usage_events =
    R"(Usage: regpin events [--since TIME] [--after ID] [--follow] [options]

Lists pin events (first pins, re-points, approvals, unpins, pins by hand), oldest first.
  --since TIME       only events at or after TIME (RFC 3339, e.g. 2026-11-26T00:00:00Z)
  --after ID         only events with a larger id
  --follow           keep waiting for new events (Ctrl-C to stop)
  --admin URL        the admin API (default $REGPIN_ADMIN or http://127.0.0.1:5001)
  --cacert FILE      CA certificate (PEM) trusted for an https admin API
  --token-file FILE  the admin token (default $REGPIN_ADMIN_TOKEN)
  --json             one JSON object per line
)";

struct common {
    server admin;
    std::string token;
    bool as_json = false;
    std::vector<std::string> positional;
    std::map<std::string, std::string> flags;
};

[[noreturn]] void usage_error(const std::string& message, const char* usage) {
    std::fprintf(stderr, "regpin: %s\n\n%s", message.c_str(), usage);
    std::exit(2);
}

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "regpin: %s\n", message.c_str());
    std::exit(1);
}

common parse(int argc, char** argv, const std::vector<std::string>& value_flags,
             const char* usage) {
    common c;
    const char* env_admin = std::getenv("REGPIN_ADMIN");
    c.admin.url = env_admin ? env_admin : "http://127.0.0.1:5001";
    std::string token_file;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value", usage);
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            std::exit(0);
        } else if (a == "--admin") {
            c.admin.url = take();
        } else if (a == "--cacert") {
            c.admin.ca_file = take();
        } else if (a == "--token-file") {
            token_file = take();
        } else if (a == "--json") {
            c.as_json = true;
        } else if (a == "--follow") {
            c.flags["follow"] = "1";
        } else if (a.rfind("--", 0) == 0) {
            auto name = a.substr(2);
            if (std::find(value_flags.begin(), value_flags.end(), name) == value_flags.end())
                usage_error("unknown option '" + a + "'", usage);
            c.flags[name] = take();
        } else {
            c.positional.push_back(a);
        }
    }
    if (!token_file.empty()) {
        std::ifstream in(token_file);
        if (!in) fail("cannot read the token file '" + token_file + "'");
        std::getline(in, c.token);
    } else if (const char* t = std::getenv("REGPIN_ADMIN_TOKEN")) {
        c.token = t;
    }
    while (!c.token.empty() && (c.token.back() == '\r' || c.token.back() == ' '))
        c.token.pop_back();
    return c;
}

// Calls the API and returns the JSON body; exits with a clear message on any failure.
json call(const common& c, const std::string& method, const std::string& target,
          const std::string& body = "") {
    if (c.token.empty()) fail("no admin token: pass --token-file FILE or set REGPIN_ADMIN_TOKEN");
    auto r = http_call(c.admin, method, target, body, c.token, std::chrono::seconds(120));
    if (!r.error.empty())
        fail("cannot reach the admin API at " + c.admin.url + ": " + r.error +
             " (is regpin running? is --admin right?)");
    auto j = json::parse(r.body, nullptr, false);
    if (r.status == 401) fail("the admin API at " + c.admin.url + " refused the token (401)");
    if (r.status < 200 || r.status > 299) {
        std::string message = r.body;
        if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty())
            message = j["errors"][0].value("message", r.body);
        fail("the admin API answered " + std::to_string(r.status) + ": " + message);
    }
    if (j.is_discarded()) fail("the admin API sent something that is not JSON");
    return j;
}

struct reference {
    std::string registry, repository, tag;
};

reference parse_ref(const std::string& ref, const char* usage) {
    auto colon = ref.rfind(':');
    auto slash = ref.rfind('/');
    if (colon == std::string::npos || (slash != std::string::npos && colon < slash))
        usage_error("'" + ref + "' needs a tag: REGISTRY/REPOSITORY:TAG", usage);
    reference r;
    r.tag = ref.substr(colon + 1);
    std::string name = ref.substr(0, colon);
    auto first = name.find('/');
    std::string head = name.substr(0, first);
    bool is_host =
        first != std::string::npos && (head.find('.') != std::string::npos ||
                                       head.find(':') != std::string::npos || head == "localhost");
    if (is_host) {
        r.registry = head;
        r.repository = name.substr(first + 1);
    } else {
        r.registry = "docker.io";
        r.repository = name;
    }
    return r;
}

std::string short_digest(const json& v) {
    if (!v.is_string()) return "-";
    auto s = v.get<std::string>();
    auto colon = s.find(':');
    return colon == std::string::npos ? s : s.substr(0, colon + 13);
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> width;
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    for (const auto& r : rows) {
        std::string line;
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
        }
        std::puts(line.c_str());
    }
}

void print_pins(const json& pins) {
    std::vector<std::vector<std::string>> rows = {
        {"REFERENCE", "STATE", "DIGEST", "PENDING", "FIRST SEEN", "LAST VERIFIED"}};
    for (const auto& p : pins)
        rows.push_back({p.value("reference", ""), p.value("state", ""), short_digest(p["digest"]),
                        short_digest(p["pending_digest"]), p.value("first_seen", ""),
                        p.value("last_verified", "")});
    print_table(rows);
}

std::string summary_text(const json& e) {
    if (e.contains("summary") && e["summary"].is_object() && e["summary"].contains("text") &&
        e["summary"]["text"].is_string())
        return e["summary"]["text"].get<std::string>();
    return "";
}

void print_events(const json& events) {
    std::vector<std::vector<std::string>> rows = {
        {"ID", "TIME", "EVENT", "REFERENCE", "OLD", "NEW", "BY", "SUMMARY"}};
    for (const auto& e : events) {
        std::string what = e.value("type", "");
        if (e["action"].is_string()) what += " (" + e["action"].get<std::string>() + ")";
        rows.push_back({std::to_string(e.value("id", 0)), e.value("time", ""), what,
                        e.value("reference", ""), short_digest(e["old_digest"]),
                        short_digest(e["new_digest"]), e.value("actor", ""), summary_text(e)});
    }
    print_table(rows);
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

}  // namespace

int pins_command(int argc, char** argv) {
    if (argc < 1) usage_error("which pins command?", usage_pins);
    std::string cmd = argv[0];
    if (cmd == "-h" || cmd == "--help") {
        std::fputs(usage_pins, stdout);
        return 0;
    }
    auto c =
        parse(argc - 1, argv + 1, {"registry", "repository-prefix", "state", "digest"}, usage_pins);
    if (cmd == "list") {
        std::string q = "/api/v1/pins?limit=100000";
        if (c.flags.count("registry")) q += "&registry=" + query_escape(c.flags["registry"]);
        if (c.flags.count("repository-prefix"))
            q += "&repository_prefix=" + query_escape(c.flags["repository-prefix"]);
        if (c.flags.count("state")) q += "&state=" + query_escape(c.flags["state"]);
        auto j = call(c, "GET", q);
        if (c.as_json)
            std::puts(j.dump(2).c_str());
        else
            print_pins(j["pins"]);
        return 0;
    }
    if (c.positional.size() != 1) usage_error(cmd + " takes one REF", usage_pins);
    auto ref = parse_ref(c.positional[0], usage_pins);
    json body = {{"registry", ref.registry}, {"repository", ref.repository}, {"tag", ref.tag}};
    if (cmd == "show") {
        auto j = call(c, "GET",
                      "/api/v1/pin?registry=" + query_escape(ref.registry) + "&repository=" +
                          query_escape(ref.repository) + "&tag=" + query_escape(ref.tag));
        if (c.as_json) {
            std::puts(j.dump(2).c_str());
        } else {
            print_pins(j["pins"]);
            std::puts("");
            print_events(j["history"]);
        }
        return 0;
    }
    if (cmd == "approve" || cmd == "unpin" || cmd == "set") {
        if (c.flags.count("digest")) body["digest"] = c.flags["digest"];
        if (cmd == "set" && !body.contains("digest"))
            usage_error("set needs --digest D", usage_pins);
        auto j = call(c, "POST", "/api/v1/pin/" + cmd, body.dump());
        if (c.as_json)
            std::puts(j.dump(2).c_str());
        else
            print_events(j["events"]);
        return 0;
    }
    if (cmd == "check") {
        auto j = call(c, "POST", "/api/v1/pin/check", body.dump());
        if (c.as_json) {
            std::puts(j.dump(2).c_str());
            return 0;
        }
        std::vector<std::vector<std::string>> rows = {
            {"ACCEPT CLASS", "OUTCOME", "UPSTREAM", "ERROR"}};
        for (const auto& r : j["results"])
            rows.push_back({std::to_string(r.value("accept_class", 0)), r.value("outcome", ""),
                            short_digest(r["upstream_digest"]), r.value("error", "")});
        print_table(rows);
        return 0;
    }
    usage_error("unknown pins command '" + cmd + "'", usage_pins);
}

int events_command(int argc, char** argv) {
    auto c = parse(argc, argv, {"since", "after"}, usage_events);
    std::uint64_t after = 0;
    if (c.flags.count("after")) {
        try {
            after = std::stoull(c.flags["after"]);
        } catch (const std::exception&) {
            usage_error("--after takes an event id", usage_events);
        }
    }
    std::string since = c.flags.count("since") ? "&since=" + query_escape(c.flags["since"]) : "";
    bool follow = c.flags.count("follow") > 0;
    bool header_done = false;
    // --follow long-polls; without it, one page. Both bounded per call by the server.
    while (true) {
        std::string q = "/api/v1/events?limit=1000&after=" + std::to_string(after) + since +
                        (follow ? "&wait_s=25" : "");
        auto j = call(c, "GET", q);
        auto& events = j["events"];
        if (c.as_json) {
            for (const auto& e : events) std::puts(e.dump().c_str());
        } else if (!events.empty() || !header_done) {
            print_events(events);  // each batch with its header, so columns line up
            header_done = true;
        }
        std::fflush(stdout);
        for (const auto& e : events) after = std::max<std::uint64_t>(after, e.value("id", 0));
        if (!follow) return 0;
    }
}

}  // namespace regpin::proxy::cli
