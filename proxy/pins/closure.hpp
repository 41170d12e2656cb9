#pragma once
// A pin holds its content, not just the mapping (issue 12, point 3). Registries delete untagged
// manifests after a re-push (GHCR cleanup, ECR lifecycle rules, Quay expiry, Harbor retention),
// so the platforms of a pinned index that nobody pulled yet would become unpullable exactly
// when regpin is meant to absorb the re-push. The keeper fetches a pinned digest's closure in
// the background, at first sight and when a re-point is recorded (the new digest too), and
// again on every check (so a closure cut short by a restart or an upstream fault completes):
//   pin_content "manifests" (default): every child manifest and every config blob;
//   "all": also every layer of every platform;
//   "none": nothing beyond what clients pull.
// Artifact tags (signatures, attestations: policy.hpp's is_artifact_tag) are held whole, layers
// included, under "manifests" and "all": they are small, and verification needs every byte.
// Through a bounded queue (full: the digest is dropped, counted and logged; the next check
// queues it again) and two workers. report() says, from the store alone, whether a digest's
// closure is complete, being fetched or missing, and why.
// Thread-safe: hold() may be called from any thread.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"
#include "proxy/cache/blob_fetcher.hpp"
#include "proxy/cache/manifest_fetcher.hpp"
#include "proxy/oci/manifest.hpp"
#include "proxy/store/content.hpp"
#include "proxy/upstream/upstreams.hpp"
#include "storage/pin.hpp"

namespace regpin::proxy::pins {

enum class content_mode { none, manifests, all };
// From the validated config value ("none", "manifests", "all").
content_mode parse_content_mode(std::string_view s);
std::string_view to_string(content_mode m);

struct content_item {
    std::string digest;
    std::string kind;      // "manifest", "config", "layer"
    std::string platform;  // "linux/arm64", or empty for a single manifest
    std::string reason;    // why it is not cached
};

struct content_report {
    std::string state;  // "complete", "fetching", "missing"
    content_mode mode = content_mode::manifests;
    std::size_t manifests = 0, manifests_cached = 0;
    std::size_t configs = 0, configs_cached = 0;
    std::size_t layers = 0, layers_cached = 0;  // of the manifests cached
    std::size_t missing_count = 0;
    std::vector<content_item> missing;  // the first 20
    // An index's platforms ("linux/amd64"), attestations left out; empty for one image or
    // when the manifest is not cached.
    std::vector<std::string> platforms;
};
nlohmann::json content_json(const content_report& r);

class closure_keeper {
public:
    static constexpr std::size_t queue_capacity = 4096;
    static constexpr std::size_t workers = 2;
    // Digests whose closure a walk found complete, remembered so that the check of every pin
    // (hold() again) costs no store reads; cleared when full, and when content was evicted
    // (forget_complete).
    static constexpr std::size_t remembered_complete = 65536;

    // result: "complete", "incomplete" (something could not be fetched), "dropped" (queue full).
    using observer = std::function<void(std::string_view result)>;

    closure_keeper(boost::asio::any_io_executor ex, const config::settings& settings,
                   upstream::upstreams& upstreams, store::content& content,
                   cache::manifest_fetcher& manifests, cache::blob_fetcher& fetcher,
                   observer on_walk = nullptr);

    // Queues the closure of `digest` (a manifest of key.repository on key.registry's upstream).
    // Non-blocking; a digest queued or being fetched is not queued twice.
    void hold(const storage::pin_key& key, const std::string& digest);

    // What the store holds of `d`'s closure (no upstream request), the closure of a pin of
    // tag `tag` (artifact tags are held whole).
    [[nodiscard]] boost::asio::awaitable<content_report> report(storage::digest d,
                                                                std::string tag) const;

    std::size_t queued() const;

    // Content was evicted (cache/evictor.hpp): closures found complete may not be any more,
    // so the next hold() of each walks it again.
    void forget_complete();

    // Queues nothing more and forgets what is queued (walks under way end with the loop).
    void stop();

private:
    struct item {
        std::size_t upstream_index = 0;
        std::string repository;
        std::string digest;
        bool layers = false;  // every layer too
    };
    boost::asio::awaitable<void> work();
    // Fetches what is missing; false when something could not be had.
    boost::asio::awaitable<bool> walk(const item& it);
    boost::asio::awaitable<bool> image(const item& it, const oci::manifest_refs& refs,
                                       const std::string& platform);
    void note(const std::string& digest, std::string reason);
    std::string reason_for(const std::string& digest, bool required) const;
    bool holds_layers(std::string_view tag) const;

    boost::asio::any_io_executor ex_;
    const config::settings& settings_;
    upstream::upstreams& upstreams_;
    store::content& content_;
    cache::manifest_fetcher& manifests_;
    cache::blob_fetcher& fetcher_;
    observer on_walk_;
    content_mode mode_;

    mutable std::mutex mutex_;
    std::deque<item> queue_;
    std::set<std::string> pending_;             // digests queued or being walked
    std::unordered_set<std::string> complete_;  // walked complete (key: digest, "+" for layers)
    std::size_t running_ = 0;
    bool stopped_ = false;
    std::map<std::string, std::string> errors_;  // digest -> why the last fetch failed
};

}  // namespace regpin::proxy::pins
