#include "proxy/pins/closure.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <nlohmann/json.hpp>

#include "proxy/cache/fetch_through.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/pins/policy.hpp"

namespace regpin::proxy::pins {

namespace asio = boost::asio;

namespace {

constexpr std::size_t listed_missing = 20;

constexpr std::size_t max_errors = 10000;

}  // namespace

content_mode parse_content_mode(std::string_view s) {
    if (s == "none") return content_mode::none;
    if (s == "all") return content_mode::all;
    return content_mode::manifests;
}

std::string_view to_string(content_mode m) {
    switch (m) {
        case content_mode::none:
            return "none";
        case content_mode::all:
            return "all";
        case content_mode::manifests:
            break;
    }
    return "manifests";
}

nlohmann::json content_json(const content_report& r) {
    nlohmann::json missing = nlohmann::json::array();
    for (const auto& m : r.missing)
        missing.push_back({{"digest", m.digest},
                           {"kind", m.kind},
                           {"platform", m.platform.empty() ? nlohmann::json(nullptr)
                                                           : nlohmann::json(m.platform)},
                           {"reason", m.reason}});
    return {{"state", r.state},
            {"pin_content", std::string(to_string(r.mode))},
            {"manifests", {{"cached", r.manifests_cached}, {"total", r.manifests}}},
            {"configs", {{"cached", r.configs_cached}, {"total", r.configs}}},
            {"layers", {{"cached", r.layers_cached}, {"total", r.layers}}},
            {"missing_count", r.missing_count},
            {"missing", std::move(missing)},
            {"platforms", r.platforms}};
}

closure_keeper::closure_keeper(asio::any_io_executor ex, const config::settings& settings,
                               upstream::upstreams& upstreams, store::content& content,
                               cache::manifest_fetcher& manifests, cache::blob_fetcher& fetcher,
                               observer on_walk)
    : ex_(std::move(ex)),
      settings_(settings),
      upstreams_(upstreams),
      content_(content),
      manifests_(manifests),
      fetcher_(fetcher),
      on_walk_(std::move(on_walk)),
      mode_(parse_content_mode(settings.pin_content)) {}

void closure_keeper::hold(const storage::pin_key& key, const std::string& digest) {
    if (mode_ == content_mode::none || settings_.offline) return;
    auto index = upstreams_.index_of(key.registry);
    if (index == upstream::upstreams::npos || !storage::digest::parse(digest)) return;
    bool start = false;
    {
        std::lock_guard lock(mutex_);
        if (stopped_ || pending_.count(digest) ||
            complete_.count(digest + (holds_layers(key.tag) ? "+" : "")))
            return;
        if (queue_.size() >= queue_capacity) {
            spdlog::warn(
                "pin content: queue full ({} digests); {} of {}/{} not queued, the next check of "
                "its pin queues it again",
                queue_capacity, digest, key.registry, key.repository);
            if (on_walk_) on_walk_("dropped");
            return;
        }
        pending_.insert(digest);
        queue_.push_back({index, key.repository, digest, holds_layers(key.tag)});
        if (running_ < workers) {
            ++running_;
            start = true;
        }
    }
    if (start) asio::co_spawn(ex_, work(), asio::detached);
}

void closure_keeper::forget_complete() {
    std::lock_guard lock(mutex_);
    complete_.clear();
}

void closure_keeper::stop() {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    for (const auto& it : queue_) pending_.erase(it.digest);
    queue_.clear();
}

std::size_t closure_keeper::queued() const {
    std::lock_guard lock(mutex_);
    return pending_.size();
}

asio::awaitable<void> closure_keeper::work() {
    for (;;) {
        item it;
        {
            std::lock_guard lock(mutex_);
            if (queue_.empty()) {
                --running_;
                co_return;
            }
            it = std::move(queue_.front());
            queue_.pop_front();
        }
        bool complete = false;
        try {
            complete = co_await walk(it);
        } catch (const std::exception& e) {
            note(it.digest, std::string("internal error: ") + e.what());
        }
        {
            std::lock_guard lock(mutex_);
            pending_.erase(it.digest);
            if (complete) {
                if (complete_.size() >= remembered_complete) complete_.clear();
                complete_.insert(it.digest + (it.layers ? "+" : ""));
            }
        }
        if (on_walk_) on_walk_(complete ? "complete" : "incomplete");
    }
}

void closure_keeper::note(const std::string& digest, std::string reason) {
    std::lock_guard lock(mutex_);
    if (errors_.size() >= max_errors) errors_.clear();
    errors_[digest] = std::move(reason);
}

asio::awaitable<bool> closure_keeper::walk(const item& it) {
    auto& client = upstreams_.at(it.upstream_index);
    auto d = *storage::digest::parse(it.digest);
    const std::string accept = oci::accept_for_class(oci::accepts_all);
    auto top = co_await manifests_.by_digest(client, it.repository, d, accept,
                                             settings_.manifest_max_bytes);
    if (!top) {
        note(it.digest, "upstream: " + top.error().message);
        co_return false;
    }
    auto refs = oci::read_manifest(top->manifest.media_type, top->manifest.bytes);
    if (!refs) {
        note(it.digest, "the manifest does not parse");
        co_return false;
    }
    if (!refs->is_index) co_return co_await image(it, *refs, "");
    bool complete = true;
    for (const auto& child : refs->children) {
        auto cd = storage::digest::parse(child.digest);
        if (!cd || oci::is_attestation(child)) continue;
        auto m = co_await manifests_.by_digest(client, it.repository, *cd, accept,
                                               settings_.manifest_max_bytes);
        if (!m) {
            note(child.digest, "upstream: " + m.error().message);
            complete = false;
            continue;
        }
        auto child_refs = oci::read_manifest(m->manifest.media_type, m->manifest.bytes);
        if (!child_refs || child_refs->is_index) continue;  // nested indexes are not followed
        if (!co_await image(it, *child_refs, child.platform)) complete = false;
    }
    co_return complete;
}

asio::awaitable<bool> closure_keeper::image(const item& it, const oci::manifest_refs& refs,
                                            const std::string& platform) {
    auto& client = upstreams_.at(it.upstream_index);
    std::vector<std::string> wanted;
    if (refs.config) wanted.push_back(refs.config->digest);
    if (it.layers)
        for (const auto& l : refs.layers) wanted.push_back(l.digest);
    bool complete = true;
    for (const auto& digest : wanted) {
        auto d = storage::digest::parse(digest);
        if (!d) continue;
        auto done = co_await fetcher_.wait_complete(*d, client, it.repository);
        if (!done) {
            note(digest, "upstream: " + done.error().message);
            spdlog::warn("pin content: {} of {} ({}) could not be fetched: {}", digest,
                         it.repository, platform.empty() ? "image" : platform,
                         done.error().message);
            complete = false;
        }
    }
    co_return complete;
}

std::string closure_keeper::reason_for(const std::string& digest, bool required) const {
    std::lock_guard lock(mutex_);
    if (auto e = errors_.find(digest); e != errors_.end()) return e->second;
    if (settings_.offline) return "not cached (regpin is offline)";
    if (!required)
        return "not fetched: pin_content is " + std::string(to_string(mode_)) +
               " (fetched when a client pulls it)";
    return "not fetched yet";
}

bool closure_keeper::holds_layers(std::string_view tag) const {
    return mode_ == content_mode::all || (mode_ == content_mode::manifests && is_artifact_tag(tag));
}

asio::awaitable<content_report> closure_keeper::report(storage::digest d, std::string tag) const {
    content_report r;
    r.mode = mode_;
    bool required_missing = false;
    auto missing = [&](const std::string& digest, const char* kind, const std::string& platform,
                       bool required) {
        ++r.missing_count;
        required_missing = required_missing || required;
        if (r.missing.size() < listed_missing)
            r.missing.push_back({digest, kind, platform, reason_for(digest, required)});
    };
    const bool configs_required = mode_ != content_mode::none;
    const bool layers_required = holds_layers(tag);

    // The images whose blobs count: the manifest itself, or the cached children of an index.
    std::vector<std::pair<storage::manifest, std::string>> images;  // manifest, platform
    r.manifests = 1;
    auto top = co_await content_.find_manifest(d);
    if (top && *top) {
        ++r.manifests_cached;
        auto refs = oci::read_manifest((*top)->media_type, (*top)->bytes);
        if (refs && refs->is_index) {
            for (const auto& child : refs->children) {
                if (oci::is_attestation(child)) continue;
                if (!child.platform.empty()) r.platforms.push_back(child.platform);
                ++r.manifests;
                auto cd = storage::digest::parse(child.digest);
                if (!cd) continue;
                auto m = co_await content_.find_manifest(*cd);
                if (m && *m) {
                    ++r.manifests_cached;
                    images.emplace_back(std::move(**m), child.platform);
                } else {
                    missing(child.digest, "manifest", child.platform, configs_required);
                }
            }
        } else if (refs) {
            images.emplace_back(std::move(**top), "");
        }
    } else {
        missing(d.str(), "manifest", "", true);
    }
    for (const auto& [m, platform] : images) {
        auto refs = oci::read_manifest(m.media_type, m.bytes);
        if (!refs || refs->is_index) continue;
        std::vector<std::pair<std::string, bool>> blobs;  // digest, is the config
        if (refs->config) blobs.emplace_back(refs->config->digest, true);
        for (const auto& l : refs->layers) blobs.emplace_back(l.digest, false);
        for (const auto& [digest, is_config] : blobs) {
            auto bd = storage::digest::parse(digest);
            if (!bd) continue;
            auto found = co_await content_.find_blob(*bd);
            bool cached = found && *found;
            (is_config ? r.configs : r.layers) += 1;
            if (cached)
                (is_config ? r.configs_cached : r.layers_cached) += 1;
            else
                missing(digest, is_config ? "config" : "layer", platform,
                        is_config ? configs_required : layers_required);
        }
    }
    bool fetching = false;
    {
        std::lock_guard lock(mutex_);
        fetching = pending_.count(d.str()) > 0;
    }
    r.state = fetching ? "fetching" : required_missing ? "missing" : "complete";
    co_return r;
}

}  // namespace regpin::proxy::pins
