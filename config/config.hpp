#pragma once
// regpin settings: plain structs, JSON loading and validation, defaults.
// Every error names the key (JSON pointer style, e.g. "upstreams[1].url") and the problem.

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace regpin::config {

// Thrown by load_* and validate(); what() reads "<key>: <problem>".
class config_error : public std::runtime_error {
public:
    config_error(const std::string& key, const std::string& problem)
        : std::runtime_error(key + ": " + problem), key_(key) {}
    const std::string& key() const { return key_; }

private:
    std::string key_;
};

// Docker Hub as clients name it. It gets default aliases here and the "library/" rule for
// one-component names (proxy/oci/reference.hpp).
inline constexpr std::string_view docker_hub = "docker.io";

struct upstream {
    // The registry host clients name (containerd's `ns`, the path prefix): "docker.io",
    // "ghcr.io", "127.0.0.1:5000".
    std::string registry;
    // Other names for the same registry ("registry-1.docker.io" for docker.io).
    std::vector<std::string> aliases;
    // Where regpin fetches from, in order of preference: "https://registry-1.docker.io". http
    // or https, no path. Several are mirrors of one registry (`urls` in the configuration;
    // `url` is one): each request goes to the first healthy one and moves on to the next when
    // it fails or lacks the content (proxy/upstream/registry_client.hpp).
    std::vector<std::string> urls;
    // Extra CA bundle (PEM) trusted in addition to the system CAs.
    std::string ca_file;
    bool tls_verify = true;
    // Credentials for this upstream's token server or Basic auth. The password comes from
    // exactly one of password, password_file, password_env (resolved at load time).
    std::string username;
    std::string password;
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds read_timeout{30000};
    // A blob download slower than this (bytes per second, over a read_timeout window) is
    // abandoned; a manifest must arrive whole within read_timeout. 0 turns the limit off.
    std::uint64_t low_speed_limit = 1024;
    // Idle keep-alive connections kept per upstream host.
    int max_idle_connections = 16;
    // The upstream is itself a proxy (another regpin, for tiering): add `?ns=<registry>` to
    // every request so it routes the way containerd's requests would.
    bool send_ns = false;
    // Hosts and networks ("10.1.0.0/16") the upstream's redirects and token realm may send
    // regpin to although they are loopback, link-local or private (proxy/http/destinations.hpp).
    std::vector<std::string> allow_destinations;
    // Set from settings::offline: the client refuses every request without dialling.
    bool offline = false;
};

// A policy rule: the first rule whose glob matches "registry/repository:tag" decides.
struct policy_rule {
    std::string match;   // glob: * (not /), ** (anything), ? (one character, not /)
    std::string policy;  // "pin", "follow" or "reject"
    std::optional<std::chrono::seconds> revalidate_after;
};

// Background checks of pins against their upstream.
struct pin_checks {
    std::chrono::seconds revalidate_after{600};
    // Checks in flight per upstream.
    int concurrency = 4;
    // The sweep re-checks pins nobody requested: every interval, at most `sweep_batch` of them.
    std::chrono::seconds sweep_interval{60};
    int sweep_batch = 50;
    // Docker Hub's ratelimit-remaining at or below this pauses checks for `ratelimit_pause`.
    int ratelimit_low_water = 20;
    std::chrono::seconds ratelimit_pause{900};
};

// Upstream blob downloads: they belong to no client (one per digest, shared by every client
// that asks), so they are bounded here.
struct download_limits {
    // Downloads running at once, in total and per upstream; more wait in a queue of
    // `max_queued`, and past it the client gets 503 with Retry-After.
    int max_concurrent = 64;
    int max_per_upstream = 32;
    int max_queued = 1024;
    // A download no client, prefetch or pin-content fetch waits for any more is cancelled
    // after this long (a client that retries within it joins the download again).
    std::chrono::seconds abandon_after{10};
};

// The cache's share of its disk (issue 15). Eviction removes the blobs read least recently until
// the data folder fits: never those a pin needs (`protect`), never manifests (a few KiB each).
struct cache_settings {
    // The data folder's size at most, bytes; nullopt: no cap but free space.
    std::optional<std::uint64_t> max_bytes;
    // Free space kept on the data folder's file system: the larger of the two.
    std::uint64_t min_free_bytes = 0;
    int min_free_percent = 10;
    // "pinned": never evict what a pin's served or pending digest reaches (its manifests,
    // configs and layers held); "none": everything goes by last access.
    std::string protect = "pinned";
    // Background re-hashing of what is stored, MiB per second (proxy/cache/scrubber.hpp);
    // 0: only on demand (regpin verify).
    int scrub_mib_per_s = 0;
};

// Parses a size: a whole number of bytes, or a number with a unit ("50GiB", "512 MiB", "2GB",
// "1.5TiB"): B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024). Throws
// config_error naming `key`.
std::uint64_t parse_size(const std::string& text, const std::string& key);

// What an admin token may do (issue 17). "read": every GET of the admin API except resolve
// (pins, history, events, audit, cache, verify progress) and the console without its change
// buttons; "resolve": GET /api/v1/resolve only (a pipeline's token: it may pin a tag on first
// sight, as a pull would, and nothing else); "admin": everything.
enum class token_scope { read, resolve, admin };
std::string_view to_string(token_scope s);

struct admin_token {
    std::string name;   // who acted, in the pin history ("token:<name>")
    std::string value;  // resolved from token_file / token_env at load time
    token_scope scope = token_scope::admin;
};

// TLS for one of regpin's own listeners.
struct tls_settings {
    std::string cert_file;  // PEM certificate chain
    std::string key_file;   // PEM private key
    bool enabled() const { return !cert_file.empty(); }
};

struct admin_settings {
    std::string listen = "127.0.0.1:5001";
    tls_settings tls;
    std::vector<admin_token> tokens;
};

// The Kubernetes mutating admission webhook (issue 17): its own TLS listener, because the API
// server calls it without regpin's admin token (it can do no more than a pull can: resolve a
// tag to its pin, pinning it on first sight).
struct admission_settings {
    std::string listen;  // "0.0.0.0:8443"; empty: no webhook
    tls_settings tls;    // required when listen is set (the API server calls https only)
    // An image regpin cannot pin (no upstream for its registry, a rejected tag, an upstream that
    // does not answer in time): "warn" admits the object unchanged with a warning the API server
    // shows to kubectl, "deny" refuses it.
    std::string unpinned = "warn";
    // regpin's own deadline for one review, well under the API server's (timeoutSeconds: 10 in
    // deploy/kubernetes/components/admission); past it, images not resolved yet count as unpinned.
    std::chrono::milliseconds timeout{4000};
};

struct webhook {
    std::string url;
    std::string secret;  // HMAC-SHA256 key; empty sends no signature
    std::chrono::milliseconds timeout{5000};
    std::string ca_file;
    bool tls_verify = true;
};

// How long the pin history and undelivered alerts are kept (issue 14).
struct history_settings {
    // Events older than this are removed with their undelivered alerts; 0 keeps them forever.
    std::chrono::hours retention{24 * 90};
};

// The pull audit (issue 16): who pulled which manifest digest.
struct audit_settings {
    // Records not pulled for this long are removed; 0 keeps them forever.
    std::chrono::hours retention{24 * 30};
    // A re-point alert names the clients that pulled the old digest within this window.
    std::chrono::hours alert_window{24 * 7};
};

// Where pins live (issue 13). "embedded": RocksDB in data_dir, for one process. "etcd": shared
// by every replica that names the same endpoints and prefix; blobs and manifests stay local.
struct pin_store_settings {
    std::string backend = "embedded";    // "embedded" or "etcd"
    std::vector<std::string> endpoints;  // "http://127.0.0.1:2379", "https://etcd-0:2379"
    std::string prefix = "/regpin/";
    std::string ca_file;    // etcd's CA (PEM)
    std::string cert_file;  // client certificate and key, for etcd --client-cert-auth
    std::string key_file;
    // etcd's own auth; the password comes from password, password_file or password_env.
    std::string username;
    std::string password;
    std::chrono::milliseconds timeout{3000};
    // This replica's name among the live ones (check shards, webhook leader); empty: the
    // host name (the pod name in Kubernetes) and the process id.
    std::string replica;
};

struct settings {
    std::string listen = "127.0.0.1:5000";
    std::string data_dir = "./regpin-data";
    std::vector<upstream> upstreams;
    // Registry of the upstream used when a request names neither `ns` nor a path prefix.
    std::string default_upstream;
    std::size_t manifest_max_bytes = 4 * 1024 * 1024;
    std::string log_level = "info";
    // "text": one line per request as people read it; "json": one JSON object per line, for
    // log shippers.
    std::string log_format = "text";
    // Threads running the network event loop; 0 means one per core.
    int threads = 0;
    // Request header limit (request line plus headers), bytes.
    std::size_t max_header_bytes = 16 * 1024;
    std::chrono::milliseconds client_idle_timeout{60000};
    // From a request's first byte to its last header byte.
    std::chrono::milliseconds client_header_timeout{10000};
    // Open client connections at most; more close the longest idle one, or are answered 503.
    std::size_t max_connections = 1024;
    // On SIGTERM: how long transfers in progress may take to finish before regpin exits.
    std::chrono::seconds shutdown_grace{25};
    // TLS on the registry API listener (TLS 1.2 and 1.3 only).
    tls_settings tls;
    // Never contact an upstream: serve only what is cached, pinned or imported.
    bool offline = false;
    pin_checks checks;
    download_limits downloads;
    // What a pin holds beyond its manifest (issue 12, point 3): "manifests" (every child
    // manifest and config blob of the pinned digest), "all" (and every layer of every
    // platform), "none" (only what clients pulled).
    std::string pin_content = "manifests";
    std::vector<policy_rule> policies;
    admin_settings admin;
    admission_settings admission;
    std::vector<webhook> webhooks;
    history_settings history;
    audit_settings audit;
    pin_store_settings pin_store;
    cache_settings cache;
};

// Parses "URL[,URL...]" (the --etcd flag) into an etcd pin store's endpoints.
std::vector<std::string> parse_etcd_flag(const std::string& flag);

// The upstreams a fresh install talks to: Docker Hub, ghcr.io, quay.io, registry.k8s.io.
std::vector<upstream> default_upstreams();

// Parses and validates a JSON document. Unknown keys are errors (typos must not pass silently).
settings load_json(const std::string& text, const std::string& source = "config");
// Reads FILE and calls load_json; a missing or unreadable file is a config_error on "--config".
settings load_file(const std::string& path);

// Parses "REGISTRY=URL" (the --upstream flag) into an upstream with default timeouts.
upstream parse_upstream_flag(const std::string& flag);

// An admin token read from FILE (the --admin-token-file flag); at least 16 characters.
admin_token read_token_file(const std::string& name, const std::string& path);

// Checks cross-field rules (unique registries, default upstream exists, URL shape, listen
// address). Fills default_upstream with the first upstream when empty.
void validate(settings& s);

// Splits "host:port" / "[v6]:port"; throws config_error naming `key`.
std::pair<std::string, std::uint16_t> parse_host_port(const std::string& value,
                                                      const std::string& key);

}  // namespace regpin::config
