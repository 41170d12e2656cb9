#include "config/config.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace regpin::config {

namespace {

// A handful of mirrors at most: each failing one costs a request its connect timeout.
constexpr std::size_t max_upstream_urls = 8;

using json = nlohmann::json;

std::string type_name(const json& j) { return j.type_name(); }

void require_object(const json& j, const std::string& key) {
    if (!j.is_object()) throw config_error(key, "must be an object, got " + type_name(j));
}

// Reports the first key of `j` that is not in `known`.
void reject_unknown_keys(const json& j, const std::string& prefix,
                         std::initializer_list<const char*> known) {
    for (const auto& item : j.items()) {
        const auto& k = item.key();
        bool found = std::any_of(known.begin(), known.end(), [&](const char* n) { return k == n; });
        if (!found) {
            std::string list;
            for (const char* n : known) list += std::string(list.empty() ? "" : ", ") + n;
            // An empty key still needs a name in the message (found by tests/fuzz/config_fuzz).
            std::string shown = k.empty() ? "\"\"" : k;
            throw config_error(prefix.empty() ? shown : prefix + "." + shown,
                               "unknown key (known keys: " + list + ")");
        }
    }
}

std::string get_string(const json& j, const std::string& key, const std::string& path) {
    const auto& v = j.at(key);
    if (!v.is_string()) throw config_error(path, "must be a string, got " + type_name(v));
    return v.get<std::string>();
}

bool get_bool(const json& j, const std::string& key, const std::string& path) {
    const auto& v = j.at(key);
    if (!v.is_boolean()) throw config_error(path, "must be true or false, got " + type_name(v));
    return v.get<bool>();
}

std::int64_t get_int(const json& j, const std::string& key, const std::string& path,
                     std::int64_t min, std::int64_t max) {
    const auto& v = j.at(key);
    if (!v.is_number_integer()) throw config_error(path, "must be an integer, got " + type_name(v));
    auto n = v.get<std::int64_t>();
    if (n < min || n > max)
        throw config_error(path, "must be between " + std::to_string(min) + " and " +
                                     std::to_string(max) + ", got " + std::to_string(n));
    return n;
}

std::string read_file(const std::string& path, const std::string& key) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw config_error(key, "cannot read file '" + path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string trim_newlines(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

// A secret given directly, in a file, or in an environment variable (at most one of them).
std::optional<std::string> read_secret(const json& j, const std::string& path, const char* direct,
                                       const char* file, const char* env) {
    int sources =
        (j.contains(direct) ? 1 : 0) + (j.contains(file) ? 1 : 0) + (j.contains(env) ? 1 : 0);
    if (sources > 1)
        throw config_error(path,
                           std::string("set only one of ") + direct + ", " + file + ", " + env);
    if (j.contains(direct)) return get_string(j, direct, path + "." + direct);
    if (j.contains(file)) {
        auto f = get_string(j, file, path + "." + file);
        return trim_newlines(read_file(f, path + "." + file));
    }
    if (j.contains(env)) {
        auto var = get_string(j, env, path + "." + env);
        const char* value = std::getenv(var.c_str());
        if (value == nullptr)
            throw config_error(path + "." + env, "environment variable '" + var + "' is not set");
        return std::string(value);
    }
    return std::nullopt;
}

// username with password (or password_file, password_env): both or neither.
void read_credentials(const json& j, const std::string& path, std::string& username,
                      std::string& password) {
    if (j.contains("username")) username = get_string(j, "username", path + ".username");
    auto secret = read_secret(j, path, "password", "password_file", "password_env");
    if (secret && username.empty())
        throw config_error(path + ".username", "is required when a password is set");
    if (!username.empty() && !secret)
        throw config_error(path,
                           "username is set but none of password, password_file, "
                           "password_env is");
    if (secret) password = *secret;
}

// A registry name as clients write it: host, optionally ":port". Lower-case DNS characters.
bool valid_registry_name(const std::string& r) {
    if (r.empty() || r.size() > 255) return false;
    return std::all_of(r.begin(), r.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
               c == ':' || c == '_' || c == '[' || c == ']';
    });
}

void check_url(const std::string& url, const std::string& key) {
    std::string rest;
    if (url.rfind("https://", 0) == 0)
        rest = url.substr(8);
    else if (url.rfind("http://", 0) == 0)
        rest = url.substr(7);
    else
        throw config_error(key, "must start with http:// or https://, got '" + url + "'");
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.empty()) throw config_error(key, "has no host: '" + url + "'");
    if (rest.find('/') != std::string::npos)
        throw config_error(key, "must not have a path (regpin appends /v2/...): '" + url + "'");
    if (rest.find('@') != std::string::npos)
        throw config_error(key, "must not carry credentials; use username and password_file");
    bool has_port = rest.front() == '[' ? rest.find("]:") != std::string::npos
                                        : rest.find(':') != std::string::npos;
    if (has_port) parse_host_port(rest, key);
}

upstream parse_upstream(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(
        j, path,
        {"registry", "aliases", "url", "urls", "ca_file", "tls_verify", "username", "password",
         "password_file", "password_env", "connect_timeout_ms", "read_timeout_ms",
         "low_speed_limit_bytes_per_s", "max_idle_connections", "send_ns", "allow_destinations"});
    upstream u;
    if (!j.contains("registry")) throw config_error(path + ".registry", "is required");
    u.registry = get_string(j, "registry", path + ".registry");
    if (j.contains("url") == j.contains("urls"))
        throw config_error(path + ".url", "give exactly one of url and urls");
    if (j.contains("url")) {
        u.urls.push_back(get_string(j, "url", path + ".url"));
    } else {
        const auto& a = j.at("urls");
        if (!a.is_array() || a.empty() || a.size() > max_upstream_urls)
            throw config_error(path + ".urls", "must be an array of 1 to " +
                                                   std::to_string(max_upstream_urls) + " URLs");
        for (std::size_t i = 0; i < a.size(); ++i) {
            auto p = path + ".urls[" + std::to_string(i) + "]";
            if (!a[i].is_string()) throw config_error(p, "must be a string");
            u.urls.push_back(a[i].get<std::string>());
        }
    }
    if (j.contains("aliases")) {
        const auto& a = j.at("aliases");
        if (!a.is_array()) throw config_error(path + ".aliases", "must be an array of strings");
        for (std::size_t i = 0; i < a.size(); ++i) {
            auto p = path + ".aliases[" + std::to_string(i) + "]";
            if (!a[i].is_string()) throw config_error(p, "must be a string");
            u.aliases.push_back(a[i].get<std::string>());
        }
    } else if (u.registry == docker_hub) {
        u.aliases = {"registry-1.docker.io", "index.docker.io"};
    }
    if (j.contains("ca_file")) {
        u.ca_file = get_string(j, "ca_file", path + ".ca_file");
        std::ifstream probe(u.ca_file);
        if (!probe) throw config_error(path + ".ca_file", "cannot read file '" + u.ca_file + "'");
    }
    if (j.contains("tls_verify")) u.tls_verify = get_bool(j, "tls_verify", path + ".tls_verify");
    read_credentials(j, path, u.username, u.password);
    if (j.contains("connect_timeout_ms"))
        u.connect_timeout = std::chrono::milliseconds(
            get_int(j, "connect_timeout_ms", path + ".connect_timeout_ms", 1, 600000));
    if (j.contains("read_timeout_ms"))
        u.read_timeout = std::chrono::milliseconds(
            get_int(j, "read_timeout_ms", path + ".read_timeout_ms", 1, 3600000));
    if (j.contains("low_speed_limit_bytes_per_s"))
        u.low_speed_limit = static_cast<std::uint64_t>(get_int(
            j, "low_speed_limit_bytes_per_s", path + ".low_speed_limit_bytes_per_s", 0, 1ll << 40));
    if (j.contains("send_ns")) u.send_ns = get_bool(j, "send_ns", path + ".send_ns");
    if (j.contains("allow_destinations")) {
        const auto& a = j.at("allow_destinations");
        auto p = path + ".allow_destinations";
        if (!a.is_array()) throw config_error(p, "must be an array of host names and networks");
        for (std::size_t i = 0; i < a.size(); ++i) {
            if (!a[i].is_string() || a[i].get<std::string>().empty())
                throw config_error(p + "[" + std::to_string(i) + "]",
                                   "must be a host name or a network (\"10.1.0.0/16\")");
            u.allow_destinations.push_back(a[i].get<std::string>());
        }
    }
    if (j.contains("max_idle_connections"))
        u.max_idle_connections = static_cast<int>(
            get_int(j, "max_idle_connections", path + ".max_idle_connections", 0, 1024));
    return u;
}

std::chrono::seconds get_seconds(const json& j, const char* key, const std::string& path,
                                 std::int64_t min, std::int64_t max) {
    return std::chrono::seconds(get_int(j, key, path + "." + key, min, max));
}

pin_checks parse_checks(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path,
                        {"revalidate_after_s", "concurrency", "sweep_interval_s", "sweep_batch",
                         "ratelimit_low_water", "ratelimit_pause_s"});
    pin_checks c;
    if (j.contains("revalidate_after_s"))
        c.revalidate_after = get_seconds(j, "revalidate_after_s", path, 0, 365 * 86400);
    if (j.contains("concurrency"))
        c.concurrency = static_cast<int>(get_int(j, "concurrency", path + ".concurrency", 1, 256));
    if (j.contains("sweep_interval_s"))
        c.sweep_interval = get_seconds(j, "sweep_interval_s", path, 1, 86400);
    if (j.contains("sweep_batch"))
        c.sweep_batch =
            static_cast<int>(get_int(j, "sweep_batch", path + ".sweep_batch", 0, 100000));
    if (j.contains("ratelimit_low_water"))
        c.ratelimit_low_water = static_cast<int>(
            get_int(j, "ratelimit_low_water", path + ".ratelimit_low_water", 0, 100000));
    if (j.contains("ratelimit_pause_s"))
        c.ratelimit_pause = get_seconds(j, "ratelimit_pause_s", path, 1, 86400);
    return c;
}

download_limits parse_downloads(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path,
                        {"max_concurrent", "max_per_upstream", "max_queued", "abandon_after_s"});
    download_limits d;
    if (j.contains("max_concurrent"))
        d.max_concurrent =
            static_cast<int>(get_int(j, "max_concurrent", path + ".max_concurrent", 1, 100000));
    if (j.contains("max_per_upstream"))
        d.max_per_upstream =
            static_cast<int>(get_int(j, "max_per_upstream", path + ".max_per_upstream", 1, 100000));
    if (j.contains("max_queued"))
        d.max_queued = static_cast<int>(get_int(j, "max_queued", path + ".max_queued", 0, 1000000));
    if (j.contains("abandon_after_s"))
        d.abandon_after = get_seconds(j, "abandon_after_s", path, 0, 86400);
    return d;
}

policy_rule parse_policy_rule(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"match", "policy", "revalidate_after_s"});
    policy_rule r;
    if (!j.contains("match")) throw config_error(path + ".match", "is required");
    r.match = get_string(j, "match", path + ".match");
    if (r.match.empty()) throw config_error(path + ".match", "must not be empty");
    if (!j.contains("policy")) throw config_error(path + ".policy", "is required");
    r.policy = get_string(j, "policy", path + ".policy");
    if (r.policy != "pin" && r.policy != "follow" && r.policy != "reject")
        throw config_error(path + ".policy",
                           "must be pin, follow or reject; got '" + r.policy + "'");
    if (j.contains("revalidate_after_s"))
        r.revalidate_after = get_seconds(j, "revalidate_after_s", path, 0, 365 * 86400);
    return r;
}

tls_settings parse_tls(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"cert_file", "key_file"});
    tls_settings t;
    for (const char* k : {"cert_file", "key_file"}) {
        if (!j.contains(k)) throw config_error(path + "." + k, "is required");
        auto f = get_string(j, k, path + "." + k);
        std::ifstream probe(f);
        if (!probe) throw config_error(path + "." + k, "cannot read file '" + f + "'");
        (std::string(k) == "cert_file" ? t.cert_file : t.key_file) = f;
    }
    return t;
}

admin_settings parse_admin(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"listen", "tokens", "tls"});
    admin_settings a;
    if (j.contains("tls")) a.tls = parse_tls(j.at("tls"), path + ".tls");
    if (j.contains("listen")) a.listen = get_string(j, "listen", path + ".listen");
    if (j.contains("tokens")) {
        const auto& ts = j.at("tokens");
        if (!ts.is_array()) throw config_error(path + ".tokens", "must be an array");
        for (std::size_t i = 0; i < ts.size(); ++i) {
            auto p = path + ".tokens[" + std::to_string(i) + "]";
            require_object(ts[i], p);
            reject_unknown_keys(ts[i], p, {"name", "token", "token_file", "token_env", "scope"});
            admin_token t;
            if (!ts[i].contains("name")) throw config_error(p + ".name", "is required");
            t.name = get_string(ts[i], "name", p + ".name");
            if (ts[i].contains("scope")) {
                auto scope = get_string(ts[i], "scope", p + ".scope");
                if (scope == "read")
                    t.scope = token_scope::read;
                else if (scope == "resolve")
                    t.scope = token_scope::resolve;
                else if (scope == "admin")
                    t.scope = token_scope::admin;
                else
                    throw config_error(p + ".scope",
                                       "must be \"read\", \"resolve\" or "
                                       "\"admin\", got '" +
                                           scope + "'");
            }
            auto value = read_secret(ts[i], p, "token", "token_file", "token_env");
            if (!value) throw config_error(p, "one of token, token_file, token_env is required");
            if (value->size() < 16)
                throw config_error(p, "the token must be at least 16 characters");
            t.value = *value;
            a.tokens.push_back(std::move(t));
        }
    }
    return a;
}

admission_settings parse_admission(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"listen", "tls", "unpinned", "timeout_ms"});
    admission_settings a;
    if (j.contains("listen")) a.listen = get_string(j, "listen", path + ".listen");
    if (j.contains("tls")) a.tls = parse_tls(j.at("tls"), path + ".tls");
    if (j.contains("unpinned")) {
        a.unpinned = get_string(j, "unpinned", path + ".unpinned");
        if (a.unpinned != "warn" && a.unpinned != "deny")
            throw config_error(path + ".unpinned",
                               "must be \"warn\" or \"deny\", got '" + a.unpinned + "'");
    }
    if (j.contains("timeout_ms"))
        a.timeout =
            std::chrono::milliseconds(get_int(j, "timeout_ms", path + ".timeout_ms", 100, 25000));
    return a;
}

webhook parse_webhook(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(
        j, path,
        {"url", "secret", "secret_file", "secret_env", "timeout_ms", "ca_file", "tls_verify"});
    webhook w;
    if (!j.contains("url")) throw config_error(path + ".url", "is required");
    w.url = get_string(j, "url", path + ".url");
    if (w.url.rfind("http://", 0) != 0 && w.url.rfind("https://", 0) != 0)
        throw config_error(path + ".url", "must start with http:// or https://");
    if (auto secret = read_secret(j, path, "secret", "secret_file", "secret_env"))
        w.secret = *secret;
    if (j.contains("timeout_ms"))
        w.timeout =
            std::chrono::milliseconds(get_int(j, "timeout_ms", path + ".timeout_ms", 1, 600000));
    if (j.contains("ca_file")) w.ca_file = get_string(j, "ca_file", path + ".ca_file");
    if (j.contains("tls_verify")) w.tls_verify = get_bool(j, "tls_verify", path + ".tls_verify");
    return w;
}

// A size as a JSON number of bytes or a string with a unit (parse_size).
std::uint64_t get_size(const json& j, const std::string& key, const std::string& path) {
    const auto& v = j.at(key);
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_string()) return parse_size(v.get<std::string>(), path);
    throw config_error(
        path, "must be a size in bytes or a string such as \"50GiB\", got " + type_name(v));
}

cache_settings parse_cache(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(
        j, path, {"max_bytes", "min_free_bytes", "min_free_percent", "protect", "scrub_mib_per_s"});
    cache_settings c;
    if (j.contains("max_bytes")) {
        c.max_bytes = get_size(j, "max_bytes", path + ".max_bytes");
        // Below this the folder's own overhead (RocksDB's logs, metadata, memtable flushes)
        // leaves no room for content.
        if (*c.max_bytes < (64ull << 20))
            throw config_error(path + ".max_bytes",
                               "must be at least 64MiB, got " + std::to_string(*c.max_bytes));
    }
    if (j.contains("min_free_bytes"))
        c.min_free_bytes = get_size(j, "min_free_bytes", path + ".min_free_bytes");
    if (j.contains("min_free_percent"))
        c.min_free_percent =
            static_cast<int>(get_int(j, "min_free_percent", path + ".min_free_percent", 0, 90));
    if (j.contains("scrub_mib_per_s"))
        c.scrub_mib_per_s =
            static_cast<int>(get_int(j, "scrub_mib_per_s", path + ".scrub_mib_per_s", 0, 10000));
    if (j.contains("protect")) {
        c.protect = get_string(j, "protect", path + ".protect");
        if (c.protect != "pinned" && c.protect != "none")
            throw config_error(path + ".protect", "must be \"pinned\" or \"none\"");
    }
    return c;
}

history_settings parse_history(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"retention_days"});
    history_settings h;
    if (j.contains("retention_days"))
        h.retention = std::chrono::hours(
            24 * get_int(j, "retention_days", path + ".retention_days", 0, 36500));
    return h;
}

audit_settings parse_audit(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(j, path, {"retention_days", "alert_window_days"});
    audit_settings a;
    if (j.contains("retention_days"))
        a.retention = std::chrono::hours(
            24 * get_int(j, "retention_days", path + ".retention_days", 0, 36500));
    if (j.contains("alert_window_days"))
        a.alert_window = std::chrono::hours(
            24 * get_int(j, "alert_window_days", path + ".alert_window_days", 1, 36500));
    return a;
}

void check_etcd_endpoint(const std::string& url, const std::string& key) {
    bool http = url.rfind("http://", 0) == 0, https = url.rfind("https://", 0) == 0;
    auto rest = url.substr(http ? 7 : https ? 8 : 0);
    if ((!http && !https) || rest.empty() || rest.find('/') != std::string::npos ||
        rest.find('@') != std::string::npos)
        throw config_error(key, "must be http://HOST:PORT or https://HOST:PORT, got '" + url + "'");
}

pin_store_settings parse_pin_store(const json& j, const std::string& path) {
    require_object(j, path);
    reject_unknown_keys(
        j, path,
        {"backend", "endpoints", "prefix", "ca_file", "cert_file", "key_file", "username",
         "password", "password_file", "password_env", "timeout_ms", "replica"});
    pin_store_settings p;
    if (j.contains("backend")) p.backend = get_string(j, "backend", path + ".backend");
    if (p.backend != "embedded" && p.backend != "etcd")
        throw config_error(path + ".backend", "must be \"embedded\" or \"etcd\"");
    if (j.contains("endpoints")) {
        const auto& es = j.at("endpoints");
        if (!es.is_array()) throw config_error(path + ".endpoints", "must be an array of URLs");
        for (std::size_t i = 0; i < es.size(); ++i) {
            auto key = path + ".endpoints[" + std::to_string(i) + "]";
            if (!es[i].is_string()) throw config_error(key, "must be a string");
            check_etcd_endpoint(es[i].get<std::string>(), key);
            p.endpoints.push_back(es[i].get<std::string>());
        }
    }
    if (j.contains("prefix")) p.prefix = get_string(j, "prefix", path + ".prefix");
    if (p.prefix.empty() || p.prefix.front() != '/')
        throw config_error(path + ".prefix", "must start with '/', like \"/regpin/\"");
    if (p.prefix.back() != '/') p.prefix.push_back('/');
    if (j.contains("ca_file")) p.ca_file = get_string(j, "ca_file", path + ".ca_file");
    if (j.contains("cert_file")) p.cert_file = get_string(j, "cert_file", path + ".cert_file");
    if (j.contains("key_file")) p.key_file = get_string(j, "key_file", path + ".key_file");
    if (p.cert_file.empty() != p.key_file.empty())
        throw config_error(path + ".cert_file", "and key_file go together");
    read_credentials(j, path, p.username, p.password);
    if (j.contains("timeout_ms"))
        p.timeout =
            std::chrono::milliseconds(get_int(j, "timeout_ms", path + ".timeout_ms", 100, 60000));
    if (j.contains("replica")) p.replica = get_string(j, "replica", path + ".replica");
    if (p.backend == "etcd" && p.endpoints.empty())
        throw config_error(path + ".endpoints", "at least one etcd endpoint is required");
    return p;
}

}  // namespace

std::vector<std::string> parse_etcd_flag(const std::string& flag) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= flag.size()) {
        auto comma = flag.find(',', start);
        auto part =
            flag.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!part.empty()) {
            check_etcd_endpoint(part, "--etcd");
            out.push_back(part);
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (out.empty()) throw config_error("--etcd", "needs at least one URL");
    return out;
}

std::vector<upstream> default_upstreams() {
    std::vector<upstream> v(4);
    v[0].registry = "docker.io";
    v[0].urls = {"https://registry-1.docker.io"};
    v[0].aliases = {"registry-1.docker.io", "index.docker.io"};
    v[1].registry = "ghcr.io";
    v[1].urls = {"https://ghcr.io"};
    v[2].registry = "quay.io";
    v[2].urls = {"https://quay.io"};
    v[3].registry = "registry.k8s.io";
    v[3].urls = {"https://registry.k8s.io"};
    return v;
}

std::pair<std::string, std::uint16_t> parse_host_port(const std::string& value,
                                                      const std::string& key) {
    std::string host, port;
    if (!value.empty() && value.front() == '[') {
        auto close = value.find(']');
        if (close == std::string::npos || close + 1 >= value.size() || value[close + 1] != ':')
            throw config_error(key, "must be HOST:PORT or [IPv6]:PORT, got '" + value + "'");
        host = value.substr(1, close - 1);
        port = value.substr(close + 2);
    } else {
        auto colon = value.rfind(':');
        if (colon == std::string::npos)
            throw config_error(key, "must be HOST:PORT, got '" + value + "'");
        host = value.substr(0, colon);
        port = value.substr(colon + 1);
    }
    if (host.empty()) throw config_error(key, "has an empty host: '" + value + "'");
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
        throw config_error(key, "has an invalid port: '" + value + "'");
    auto n = std::stoul(port);
    if (n > 65535) throw config_error(key, "port out of range: '" + value + "'");
    return {host, static_cast<std::uint16_t>(n)};
}

upstream parse_upstream_flag(const std::string& flag) {
    auto eq = flag.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == flag.size())
        throw config_error("--upstream", "must be REGISTRY=URL, got '" + flag + "'");
    upstream u;
    u.registry = flag.substr(0, eq);
    u.urls = {flag.substr(eq + 1)};
    if (u.registry == docker_hub) u.aliases = {"registry-1.docker.io", "index.docker.io"};
    return u;
}

std::string_view to_string(token_scope s) {
    switch (s) {
        case token_scope::read:
            return "read";
        case token_scope::resolve:
            return "resolve";
        case token_scope::admin:
            return "admin";
    }
    return "admin";
}

admin_token read_token_file(const std::string& name, const std::string& path) {
    admin_token t{name, trim_newlines(read_file(path, "--admin-token-file"))};
    if (t.value.size() < 16)
        throw config_error("--admin-token-file", "the token must be at least 16 characters");
    return t;
}

void validate(settings& s) {
    parse_host_port(s.listen, "listen");
    if (!s.admin.listen.empty()) parse_host_port(s.admin.listen, "admin.listen");
    if (!s.admission.listen.empty()) {
        parse_host_port(s.admission.listen, "admission.listen");
        if (!s.admission.tls.enabled())
            throw config_error("admission.tls",
                               "is required with admission.listen: the Kubernetes API server "
                               "calls admission webhooks over https only");
    }
    std::set<std::string> token_names;
    for (std::size_t i = 0; i < s.admin.tokens.size(); ++i)
        if (!token_names.insert(s.admin.tokens[i].name).second)
            throw config_error("admin.tokens[" + std::to_string(i) + "].name",
                               "duplicate token name '" + s.admin.tokens[i].name + "'");
    if (s.data_dir.empty()) throw config_error("data_dir", "must not be empty");
    // Each would undo the other: eviction removes pinned layers, the pin's content keeper
    // fetches them again on its next check.
    if (s.cache.protect == "none" && s.pin_content == "all")
        throw config_error("cache.protect",
                           "\"none\" evicts the layers that pin_content \"all\" fetches back; "
                           "use \"pinned\", or pin_content \"manifests\"");
    if (s.upstreams.empty()) throw config_error("upstreams", "at least one upstream is required");
    std::set<std::string> names;
    for (std::size_t i = 0; i < s.upstreams.size(); ++i) {
        auto& u = s.upstreams[i];
        auto path = "upstreams[" + std::to_string(i) + "]";
        if (!valid_registry_name(u.registry))
            throw config_error(path + ".registry",
                               "must be a lower-case registry host such as 'docker.io' or "
                               "'127.0.0.1:5000', got '" +
                                   u.registry + "'");
        std::set<std::string> seen;
        for (std::size_t k = 0; k < u.urls.size(); ++k) {
            auto& url = u.urls[k];
            auto key =
                u.urls.size() == 1 ? path + ".url" : path + ".urls[" + std::to_string(k) + "]";
            check_url(url, key);
            if (!url.empty() && url.back() == '/') url.pop_back();
            if (!seen.insert(url).second) throw config_error(key, "the same URL twice: " + url);
        }
        if (!names.insert(u.registry).second)
            throw config_error(path + ".registry", "duplicate registry '" + u.registry + "'");
        for (std::size_t k = 0; k < u.aliases.size(); ++k) {
            if (!valid_registry_name(u.aliases[k]))
                throw config_error(path + ".aliases[" + std::to_string(k) + "]",
                                   "must be a lower-case registry host");
            if (!names.insert(u.aliases[k]).second)
                throw config_error(path + ".aliases[" + std::to_string(k) + "]",
                                   "registry name '" + u.aliases[k] + "' is used twice");
        }
    }
    if (s.default_upstream.empty()) s.default_upstream = s.upstreams.front().registry;
    for (auto& u : s.upstreams) u.offline = s.offline;
    bool found = std::any_of(s.upstreams.begin(), s.upstreams.end(),
                             [&](const upstream& u) { return u.registry == s.default_upstream; });
    if (!found)
        throw config_error("default_upstream",
                           "'" + s.default_upstream + "' is not the registry of any upstream");
    static const std::set<std::string> levels = {"trace", "debug",    "info", "warn",
                                                 "error", "critical", "off"};
    if (!levels.count(s.log_level))
        throw config_error("log_level",
                           "must be one of trace, debug, info, warn, error, critical, off; got '" +
                               s.log_level + "'");
}

std::uint64_t parse_size(const std::string& text, const std::string& key) {
    auto bad = [&] {
        return config_error(key,
                            "must be a size such as \"50GiB\", \"512MiB\" or a number of "
                            "bytes, got '" +
                                text + "'");
    };
    std::size_t i = 0;
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t start = i;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
    auto number = text.substr(start, i - start);
    if (number.empty() || number.front() == '.' || number.back() == '.' ||
        std::count(number.begin(), number.end(), '.') > 1)
        throw bad();
    while (i < text.size() && text[i] == ' ') ++i;
    std::string unit = text.substr(i);
    while (!unit.empty() && unit.back() == ' ') unit.pop_back();
    static const std::pair<const char*, double> units[] = {{"", 1.0},
                                                           {"B", 1.0},
                                                           {"KB", 1e3},
                                                           {"MB", 1e6},
                                                           {"GB", 1e9},
                                                           {"TB", 1e12},
                                                           {"KiB", 1024.0},
                                                           {"MiB", 1048576.0},
                                                           {"GiB", 1073741824.0},
                                                           {"TiB", 1099511627776.0}};
    double factor = 0;
    for (const auto& [name, f] : units)
        if (unit == name) factor = f;
    if (factor == 0) throw bad();
    double value = std::stod(number) * factor;
    if (value > 9.0e18) throw config_error(key, "is too large: '" + text + "'");
    if (factor == 1.0 && number.find('.') != std::string::npos) throw bad();  // fractional bytes
    return static_cast<std::uint64_t>(value);
}

settings load_json(const std::string& text, const std::string& source) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        // parse_error, and out_of_range for numbers past double (found by the config fuzzer).
        throw config_error(source, std::string("is not valid JSON: ") + e.what());
    }
    require_object(j, source);
    reject_unknown_keys(j, "",
                        {"listen",
                         "data_dir",
                         "upstreams",
                         "default_upstream",
                         "manifest_max_bytes",
                         "log_level",
                         "log_format",
                         "threads",
                         "max_header_bytes",
                         "client_idle_timeout_ms",
                         "client_header_timeout_ms",
                         "max_connections",
                         "shutdown_grace_s",
                         "tls",
                         "offline",
                         "pin_checks",
                         "downloads",
                         "pin_content",
                         "policies",
                         "admin",
                         "admission",
                         "webhooks",
                         "history",
                         "audit",
                         "pin_store",
                         "cache"});
    settings s;
    if (j.contains("listen")) s.listen = get_string(j, "listen", "listen");
    if (j.contains("data_dir")) s.data_dir = get_string(j, "data_dir", "data_dir");
    if (j.contains("default_upstream"))
        s.default_upstream = get_string(j, "default_upstream", "default_upstream");
    if (j.contains("log_level")) s.log_level = get_string(j, "log_level", "log_level");
    if (j.contains("log_format")) {
        s.log_format = get_string(j, "log_format", "log_format");
        if (s.log_format != "text" && s.log_format != "json")
            throw config_error("log_format",
                               "must be \"text\" or \"json\", got '" + s.log_format + "'");
    }
    if (j.contains("manifest_max_bytes"))
        s.manifest_max_bytes = static_cast<std::size_t>(
            get_int(j, "manifest_max_bytes", "manifest_max_bytes", 1024, 64 * 1024 * 1024));
    if (j.contains("threads"))
        s.threads = static_cast<int>(get_int(j, "threads", "threads", 0, 256));
    if (j.contains("max_header_bytes"))
        s.max_header_bytes = static_cast<std::size_t>(
            get_int(j, "max_header_bytes", "max_header_bytes", 1024, 1024 * 1024));
    if (j.contains("client_idle_timeout_ms"))
        s.client_idle_timeout = std::chrono::milliseconds(
            get_int(j, "client_idle_timeout_ms", "client_idle_timeout_ms", 100, 3600000));
    if (j.contains("client_header_timeout_ms"))
        s.client_header_timeout = std::chrono::milliseconds(
            get_int(j, "client_header_timeout_ms", "client_header_timeout_ms", 100, 600000));
    if (j.contains("shutdown_grace_s"))
        s.shutdown_grace =
            std::chrono::seconds(get_int(j, "shutdown_grace_s", "shutdown_grace_s", 0, 3600));
    if (j.contains("max_connections"))
        s.max_connections =
            static_cast<std::size_t>(get_int(j, "max_connections", "max_connections", 1, 1000000));
    if (j.contains("tls")) s.tls = parse_tls(j.at("tls"), "tls");
    if (j.contains("offline")) s.offline = get_bool(j, "offline", "offline");
    if (j.contains("pin_checks")) s.checks = parse_checks(j.at("pin_checks"), "pin_checks");
    if (j.contains("downloads")) s.downloads = parse_downloads(j.at("downloads"), "downloads");
    if (j.contains("pin_content")) {
        s.pin_content = get_string(j, "pin_content", "pin_content");
        if (s.pin_content != "manifests" && s.pin_content != "all" && s.pin_content != "none")
            throw config_error("pin_content", "must be \"manifests\", \"all\" or \"none\"");
    }
    if (j.contains("policies")) {
        const auto& ps = j.at("policies");
        if (!ps.is_array()) throw config_error("policies", "must be an array");
        for (std::size_t i = 0; i < ps.size(); ++i)
            s.policies.push_back(parse_policy_rule(ps[i], "policies[" + std::to_string(i) + "]"));
    }
    if (j.contains("admin")) s.admin = parse_admin(j.at("admin"), "admin");
    if (j.contains("admission")) s.admission = parse_admission(j.at("admission"), "admission");
    if (j.contains("pin_store")) s.pin_store = parse_pin_store(j.at("pin_store"), "pin_store");
    if (j.contains("history")) s.history = parse_history(j.at("history"), "history");
    if (j.contains("audit")) s.audit = parse_audit(j.at("audit"), "audit");
    if (j.contains("cache")) s.cache = parse_cache(j.at("cache"), "cache");
    if (j.contains("webhooks")) {
        const auto& ws = j.at("webhooks");
        if (!ws.is_array()) throw config_error("webhooks", "must be an array");
        for (std::size_t i = 0; i < ws.size(); ++i)
            s.webhooks.push_back(parse_webhook(ws[i], "webhooks[" + std::to_string(i) + "]"));
    }
    if (j.contains("upstreams")) {
        const auto& ups = j.at("upstreams");
        if (!ups.is_array()) throw config_error("upstreams", "must be an array");
        for (std::size_t i = 0; i < ups.size(); ++i)
            s.upstreams.push_back(parse_upstream(ups[i], "upstreams[" + std::to_string(i) + "]"));
    } else {
        s.upstreams = default_upstreams();
    }
    validate(s);
    return s;
}

settings load_file(const std::string& path) { return load_json(read_file(path, "--config"), path); }

}  // namespace regpin::config
