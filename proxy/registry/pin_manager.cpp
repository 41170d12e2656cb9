#include "proxy/registry/pin_manager.hpp"

#include <algorithm>
#include <charconv>
#include <map>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "proxy/oci/media_types.hpp"
#include "proxy/registry/on_pool.hpp"
#include "proxy/registry/summary.hpp"
#include "proxy/registry/upstream_ops.hpp"

namespace regpin::proxy::registry {

namespace asio = boost::asio;
using oci::error_code;
using storage::pin;
using storage::pin_event;
using storage::pin_key;

namespace {

constexpr std::uint64_t max_config_bytes = 4 * 1024 * 1024;

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string key_string(const pin_key& k) {
    return storage::display_name(k) + "#" + std::to_string(k.accept_class);
}

// Docker Hub: "ratelimit-remaining: 76;w=21600".
std::optional<long> remaining_quota(std::string_view header) {
    if (header.empty()) return std::nullopt;
    long v = 0;
    auto [p, ec] = std::from_chars(header.data(), header.data() + header.size(), v);
    if (ec != std::errc{}) return std::nullopt;
    return v;
}

oci::error storage_error(const char* what) {
    return {error_code::unknown, std::string("cache storage failure while ") + what};
}

}  // namespace

std::string accept_for_class(std::uint8_t c) {
    std::string out;
    auto add = [&](std::string_view t) {
        if (!out.empty()) out += ", ";
        out += t;
    };
    if (c & oci::accepts_docker_manifest) add(oci::docker_manifest);
    if (c & oci::accepts_docker_manifest_list) add(oci::docker_manifest_list);
    if (c & oci::accepts_oci_manifest) add(oci::oci_manifest);
    if (c & oci::accepts_oci_index) add(oci::oci_index);
    if (!out.empty()) add("*/*");
    return out;
}

struct pin_manager::state : std::enable_shared_from_this<pin_manager::state> {
    asio::any_io_executor ex;
    const config::settings& settings;
    storage::pin_store& pins;
    storage::manifest_store& manifests;
    storage::blob_store& blobs;
    blob_fetcher& fetcher;
    std::vector<upstream::registry_client*> clients;
    asio::thread_pool& pool;
    pin_hooks hooks;
    std::vector<policy_rule> rules;
    std::vector<std::string> alert_targets;

    std::mutex mutex;
    std::set<std::string> in_flight;
    std::vector<int> running;
    std::vector<std::chrono::steady_clock::time_point> paused_until;
    std::unique_ptr<asio::steady_timer> sweep_timer;
    std::atomic<bool> stopped{false};

    state(asio::any_io_executor e, const config::settings& s, storage::pin_store& p,
          storage::manifest_store& m, storage::blob_store& b, blob_fetcher& f,
          std::vector<upstream::registry_client*> c, asio::thread_pool& tp, pin_hooks h)
        : ex(std::move(e)),
          settings(s),
          pins(p),
          manifests(m),
          blobs(b),
          fetcher(f),
          clients(std::move(c)),
          pool(tp),
          hooks(std::move(h)),
          running(clients.size(), 0),
          paused_until(clients.size()) {
        rules = rules_from(s.policies);
        for (const auto& w : s.webhooks) alert_targets.push_back(w.url);
    }

    resolved_policy policy_for(const pin_key& k) const {
        return resolve_policy(rules, k.registry, k.repository, k.tag,
                              settings.checks.revalidate_after);
    }

    void report(const std::string& registry, std::string_view outcome) {
        if (hooks.checked) hooks.checked(registry, outcome);
    }

    void note_ratelimit(std::size_t ui, const http::response& r) {
        auto left = remaining_quota(r.headers()["ratelimit-remaining"]);
        if (!left || *left > settings.checks.ratelimit_low_water) return;
        std::lock_guard lock(mutex);
        paused_until[ui] = std::chrono::steady_clock::now() + settings.checks.ratelimit_pause;
        spdlog::warn("upstream {}: rate limit nearly used up ({} left): pin checks paused for {}s",
                     clients[ui]->settings().registry, *left,
                     settings.checks.ratelimit_pause.count());
    }

    // The manifest `d`, from the store or fetched (verified) and stored.
    asio::awaitable<std::variant<storage::manifest, oci::error>> manifest(
        std::size_t ui, const std::string& repo, const storage::digest& d) {
        auto cached = manifests.find(d);
        if (!cached) co_return storage_error("reading a manifest");
        if (*cached) co_return std::move(**cached);
        auto got = co_await fetch_manifest(*clients[ui], repo, d.str(), accept_for_class(15),
                                           settings.manifest_max_bytes);
        if (auto* e = std::get_if<oci::error>(&got)) co_return *e;
        auto& f = std::get<fetched_manifest>(got);
        if (!manifests.put(f.digest, f.manifest)) co_return storage_error("storing a manifest");
        co_return std::move(f.manifest);
    }

    // A small blob (an image config), from the cache or downloaded through it.
    asio::awaitable<std::optional<std::string>> config_blob(std::size_t ui, const std::string& repo,
                                                            const storage::digest& d) {
        auto rec = blobs.find(d);
        if (!rec) co_return std::nullopt;
        if (!*rec) {
            oci::error failure;
            if (!co_await fetcher.wait_complete(d, *clients[ui], repo, failure))
                co_return std::nullopt;
            rec = blobs.find(d);
            if (!rec || !*rec) co_return std::nullopt;
        }
        if ((*rec)->size > max_config_bytes) co_return std::nullopt;
        std::string out, chunk;
        for (std::uint64_t i = 0; i * (*rec)->chunk_size < (*rec)->size; ++i) {
            if (!blobs.read_chunk(d, i, chunk)) co_return std::nullopt;
            out += chunk;
        }
        co_return out;
    }

    // What changed between the two manifests (best effort: unknown fields stay null).
    asio::awaitable<std::string> summary(std::size_t ui, const std::string& repo,
                                         const storage::manifest& pinned,
                                         const storage::manifest& upstream) {
        image_docs a{pinned.media_type, pinned.bytes, {}, {}};
        image_docs b{upstream.media_type, upstream.bytes, {}, {}};
        for (int round = 0; round < 4; ++round) {
            auto plan = what_to_fetch(a, b);
            if (plan.empty()) break;
            bool added = false;
            for (auto [need, docs] : {std::pair{&plan.pinned, &a}, std::pair{&plan.upstream, &b}}) {
                for (const auto& m : need->manifests) {
                    auto d = storage::digest::parse(m);
                    if (!d) continue;
                    auto got = co_await manifest(ui, repo, *d);
                    if (auto* man = std::get_if<storage::manifest>(&got)) {
                        docs->manifests_by_digest[m] = man->bytes;
                        added = true;
                    }
                }
                for (const auto& c : need->configs) {
                    auto d = storage::digest::parse(c);
                    if (!d) continue;
                    if (auto bytes = co_await config_blob(ui, repo, *d)) {
                        docs->configs_by_digest[c] = std::move(*bytes);
                        added = true;
                    }
                }
            }
            if (!added) break;
        }
        co_return summarize(a, b).dump();
    }

    // One pin change, synced, on the blocking pool.
    asio::awaitable<storage::result<std::vector<pin_event>>> apply(
        const storage::pin_change& change) {
        storage::pin_store* store = &pins;
        co_return co_await on_pool<&storage::pin_store::apply>(pool, store, change);
    }

    // An operator's change: applied, announced to the hooks, its events appended to `all`.
    // False when the pin changed meanwhile (or storage failed): nothing was written.
    asio::awaitable<bool> operator_change(const storage::pin_change& change,
                                          std::vector<pin_event>& all) {
        auto applied = co_await apply(change);
        if (!applied) co_return false;
        for (auto& e : *applied) {
            if (hooks.changed) hooks.changed(e);
            all.push_back(std::move(e));
        }
        co_return true;
    }

    asio::awaitable<check_result> run_check(pin_key key, std::size_t ui);
    asio::awaitable<void> background_check(pin_key key, std::size_t ui);
    asio::awaitable<void> sweep();
    enum class schedule_outcome { started, not_due, in_flight, upstream_busy };
    // Starts a background check of `p` on upstream `ui` if it is due and the upstream has a
    // free slot (upstream_busy: at its concurrency limit or paused by its rate limit).
    schedule_outcome try_schedule(const pin& p, std::size_t ui);
};

asio::awaitable<check_result> pin_manager::state::run_check(pin_key key, std::size_t ui) {
    check_result out;
    auto& client = *clients[ui];
    const auto& registry = client.settings().registry;
    auto found = pins.find(key);
    if (!found) {
        out.outcome = "error";
        out.error = "storage failure reading the pin";
        co_return out;
    }
    if (!*found) {
        out.outcome = "no_pin";
        co_return out;
    }
    auto p = **found;

    upstream::request req;
    req.method = boost::beast::http::verb::head;
    req.target = "/v2/" + key.repository + "/manifests/" + key.tag;
    req.accept = accept_for_class(key.accept_class);
    req.scope = "repository:" + key.repository + ":pull";
    auto resp = co_await client.send(req);
    if (!resp) {
        out.outcome = "error";
        out.error = transport_error(registry, resp.error()).message;
        report(registry, "error");
        co_return out;
    }
    note_ratelimit(ui, *resp);
    if (resp->status() != 200) {
        out.outcome = "error";
        out.error = upstream_error(registry, resp->status(), error_code::manifest_unknown).message;
        report(registry, "error");
        co_return out;
    }
    std::optional<storage::digest> upstream_digest;
    if (auto h = resp->headers()["Docker-Content-Digest"]; !h.empty())
        upstream_digest = storage::digest::parse(h);
    if (!upstream_digest) {
        // No usable digest on HEAD: GET the tag and hash it, as containerd does.
        auto got = co_await fetch_manifest(client, key.repository, key.tag, req.accept,
                                           settings.manifest_max_bytes);
        if (auto* e = std::get_if<oci::error>(&got)) {
            out.outcome = "error";
            out.error = e->message;
            report(registry, "error");
            co_return out;
        }
        upstream_digest = std::get<fetched_manifest>(got).digest;
    }
    out.upstream_digest = upstream_digest->str();
    auto now = now_ms();

    if (*upstream_digest == p.manifest_digest) {
        report(registry, "unchanged");
        out.outcome = "unchanged";
        if (p.state == storage::pin_state::pending) {
            // The upstream went back to the pinned digest: nothing is pending any more.
            auto np = p;
            np.state = storage::pin_state::pinned;
            np.pending_digest.reset();
            np.last_verified_ms = now;
            storage::pin_change change{key, p, np};
            change.events.push_back({0, now, "reverted", key, p.pending_digest->str(),
                                     p.manifest_digest.str(), "policy", "", "", ""});
            auto applied = co_await apply(change);
            if (applied) {
                out.events = *applied;
                for (const auto& e : *applied)
                    if (hooks.changed) hooks.changed(e);
            }
        } else {
            (void)pins.touch_verified(key, now);
        }
        co_return out;
    }

    auto policy = policy_for(key);
    auto decision =
        decide_repoint(policy.policy, p.manifest_digest.str(), upstream_digest->str(), p.alerted);
    auto fetched = co_await manifest(ui, key.repository, *upstream_digest);
    if (auto* e = std::get_if<oci::error>(&fetched)) {
        out.outcome = "error";
        out.error = e->message;
        report(registry, "error");
        co_return out;
    }
    auto& upstream_manifest = std::get<storage::manifest>(fetched);

    auto np = apply_repoint(p, *decision, *upstream_digest, upstream_manifest, now);
    storage::pin_change change{key, p, np};
    if (decision->record_event) {
        std::string summary_json = "{}";
        auto pinned_manifest = co_await manifest(ui, key.repository, p.manifest_digest);
        if (auto* pm = std::get_if<storage::manifest>(&pinned_manifest))
            summary_json = co_await summary(ui, key.repository, *pm, upstream_manifest);
        change.events.push_back({0, now, "repointed", key, p.manifest_digest.str(),
                                 upstream_digest->str(), "policy",
                                 std::string(to_string(policy.policy)),
                                 std::string(to_string(decision->action)), summary_json});
        change.alert_targets = alert_targets;
    } else if (np.state == p.state && np.manifest_digest == p.manifest_digest &&
               np.pending_digest == p.pending_digest) {
        (void)pins.touch_verified(key, now);
        report(registry, "unchanged");
        out.outcome = "already_recorded";
        co_return out;
    }
    auto applied = co_await apply(change);
    if (!applied) {
        out.outcome = "error";
        out.error = applied.error() == storage::errc::conflict
                        ? "the pin changed during the check; it will be checked again"
                        : "storage failure writing the pin";
        report(registry, "error");
        co_return out;
    }
    out.events = *applied;
    out.outcome = decision->record_event ? "repointed" : "already_recorded";
    report(registry, decision->record_event ? "repointed" : "unchanged");
    for (const auto& e : *applied)
        if (hooks.repointed) hooks.repointed(e);
    co_return out;
}

asio::awaitable<void> pin_manager::state::background_check(pin_key key, std::size_t ui) {
    auto self = shared_from_this();
    try {
        auto r = co_await run_check(key, ui);
        if (r.outcome == "error")
            spdlog::debug("pin check {}: {}", storage::display_name(key), r.error);
    } catch (const std::exception& e) {
        spdlog::error("pin check {} failed: {}", storage::display_name(key), e.what());
    }
    std::lock_guard lock(mutex);
    in_flight.erase(key_string(key));
    --running[ui];
}

pin_manager::state::schedule_outcome pin_manager::state::try_schedule(const pin& p,
                                                                      std::size_t ui) {
    auto policy = policy_for(p.key);
    auto age_ms = now_ms() - p.last_verified_ms;
    if (age_ms <
        std::chrono::duration_cast<std::chrono::milliseconds>(policy.revalidate_after).count())
        return schedule_outcome::not_due;
    {
        std::lock_guard lock(mutex);
        if (std::chrono::steady_clock::now() < paused_until[ui])
            return schedule_outcome::upstream_busy;
        if (running[ui] >= settings.checks.concurrency) return schedule_outcome::upstream_busy;
        if (!in_flight.insert(key_string(p.key)).second) return schedule_outcome::in_flight;
        ++running[ui];
    }
    asio::co_spawn(asio::make_strand(ex), background_check(p.key, ui), asio::detached);
    return schedule_outcome::started;
}

asio::awaitable<void> pin_manager::state::sweep() {
    auto self = shared_from_this();
    // Each sweep reads a bounded page of pins from a cursor, so its cost does not grow with the
    // store. One cursor per upstream: pins are stored in registry order, and a single cursor
    // would spend sweeps inside one registry's pins while the other upstreams' check slots stay
    // idle. Upstreams in registry order, the order of the pins.
    std::map<std::string, std::size_t> upstreams;  // registry -> upstream index
    for (std::size_t i = 0; i < clients.size(); ++i) upstreams[clients[i]->settings().registry] = i;
    std::vector<std::optional<pin_key>> cursors(clients.size());  // the last pin examined
    while (!stopped) {
        sweep_timer->expires_after(settings.checks.sweep_interval);
        auto [ec] = co_await sweep_timer->async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec || stopped) co_return;
        int scheduled = 0;
        for (const auto& [registry, ui] : upstreams) {
            if (scheduled >= settings.checks.sweep_batch) break;
            storage::pin_filter page;
            page.registry = registry;
            page.after = cursors[ui];
            page.limit = 4 * static_cast<std::size_t>(settings.checks.sweep_batch);
            auto listed = pins.list(page);
            if (!listed) continue;
            std::size_t examined = 0;
            for (const auto& p : *listed) {
                if (scheduled >= settings.checks.sweep_batch) break;
                auto outcome = try_schedule(p, ui);
                // Due, but no free slot: the next sweep starts at this pin instead of passing it
                // over until the cursor comes round again.
                if (outcome == schedule_outcome::upstream_busy) break;
                ++examined;
                if (outcome == schedule_outcome::started) ++scheduled;
            }
            if (examined == listed->size() && listed->size() < page.limit)
                cursors[ui].reset();  // the end of this registry's pins: start over
            else if (examined > 0)
                cursors[ui] = (*listed)[examined - 1].key;
        }
    }
}

pin_manager::pin_manager(asio::any_io_executor ex, const config::settings& settings,
                         storage::pin_store& pins, storage::manifest_store& manifests,
                         storage::blob_store& blobs, blob_fetcher& fetcher,
                         std::vector<upstream::registry_client*> clients,
                         asio::thread_pool& blocking, pin_hooks hooks)
    : state_(std::make_shared<state>(std::move(ex), settings, pins, manifests, blobs, fetcher,
                                     std::move(clients), blocking, std::move(hooks))) {}

pin_manager::~pin_manager() { stop(); }

resolved_policy pin_manager::policy_for(const pin_key& key) const {
    return state_->policy_for(key);
}

void pin_manager::served(const pin& p, std::size_t upstream_index) {
    if (state_->settings.offline || state_->stopped || upstream_index >= state_->clients.size())
        return;
    state_->try_schedule(p, upstream_index);
}

asio::awaitable<check_result> pin_manager::check(pin_key key, std::size_t upstream_index) {
    auto st = state_;
    co_return co_await st->run_check(std::move(key), upstream_index);
}

void pin_manager::start_sweep() {
    if (state_->settings.offline) return;
    state_->sweep_timer = std::make_unique<asio::steady_timer>(asio::make_strand(state_->ex));
    asio::co_spawn(state_->sweep_timer->get_executor(), state_->sweep(), asio::detached);
}

void pin_manager::stop() {
    state_->stopped = true;
    if (state_->sweep_timer)
        asio::post(state_->sweep_timer->get_executor(),
                   [st = state_] { st->sweep_timer->cancel(); });
}

std::size_t pin_manager::upstream_index(const std::string& registry) const {
    for (std::size_t i = 0; i < state_->clients.size(); ++i)
        if (state_->clients[i]->settings().registry == registry) return i;
    return std::string::npos;
}

namespace {

std::vector<pin> pins_of_tag(storage::pin_store& pins, const pin_target& t) {
    std::vector<pin> out;
    auto listed = pins.list_repository(t.registry, t.repository);
    if (!listed) return out;
    for (auto& p : *listed)
        if (p.key.tag == t.tag) out.push_back(std::move(p));
    return out;
}

oci::error no_pin(const pin_target& t) {
    return {error_code::manifest_unknown,
            "no pin for " + t.registry + "/" + t.repository + ":" + t.tag};
}

}  // namespace

asio::awaitable<pin_manager::events_or_error> pin_manager::approve(
    pin_target t, std::optional<std::string> digest, std::string actor) {
    auto st = state_;
    auto ui = upstream_index(t.registry);
    auto current = pins_of_tag(st->pins, t);
    if (current.empty() || ui == std::string::npos) co_return no_pin(t);
    std::vector<pin_event> all;
    for (const auto& p : current) {
        std::optional<storage::digest> target;
        if (digest)
            target = storage::digest::parse(*digest);
        else
            target = p.pending_digest;
        if (!target)
            co_return oci::error{error_code::denied, digest ? "invalid digest '" + *digest + "'"
                                                            : "nothing is pending for " +
                                                                  storage::display_name(p.key) +
                                                                  ": give the digest to approve"};
        auto m = co_await st->manifest(ui, t.repository, *target);
        if (auto* e = std::get_if<oci::error>(&m)) co_return *e;
        auto& man = std::get<storage::manifest>(m);
        auto np = serve_digest(p, *target, man, now_ms());
        storage::pin_change change{p.key, p, np};
        change.events.push_back({0, now_ms(), "approved", p.key, p.manifest_digest.str(),
                                 target->str(), actor, "", "", ""});
        if (!co_await st->operator_change(change, all))
            co_return oci::error{error_code::denied, "the pin changed meanwhile; try again"};
    }
    co_return all;
}

asio::awaitable<pin_manager::events_or_error> pin_manager::unpin(pin_target t, std::string actor) {
    auto st = state_;
    auto current = pins_of_tag(st->pins, t);
    if (current.empty()) co_return no_pin(t);
    std::vector<pin_event> all;
    for (const auto& p : current) {
        storage::pin_change change{p.key, p, std::nullopt};
        change.events.push_back(
            {0, now_ms(), "unpinned", p.key, p.manifest_digest.str(), "", actor, "", "", ""});
        if (!co_await st->operator_change(change, all))
            co_return oci::error{error_code::denied, "the pin changed meanwhile; try again"};
    }
    co_return all;
}

asio::awaitable<pin_manager::events_or_error> pin_manager::set(pin_target t, std::string digest,
                                                               std::string actor) {
    auto st = state_;
    auto ui = upstream_index(t.registry);
    if (ui == std::string::npos)
        co_return oci::error{error_code::name_unknown, "no upstream for registry " + t.registry};
    auto target = storage::digest::parse(digest);
    if (!target)
        co_return oci::error{error_code::digest_invalid, "invalid digest '" + digest + "'"};
    auto m = co_await st->manifest(ui, t.repository, *target);
    if (auto* e = std::get_if<oci::error>(&m)) co_return *e;
    auto& man = std::get<storage::manifest>(m);
    auto current = pins_of_tag(st->pins, t);
    std::vector<std::optional<pin>> befores(current.begin(), current.end());
    if (befores.empty()) befores.push_back(std::nullopt);
    std::vector<pin_event> all;
    for (const auto& before : befores) {
        // A new pin is made for the accept class every common client sends (all four types).
        pin_key key = before ? before->key : pin_key{t.registry, t.repository, t.tag, 15};
        auto np = serve_digest(before ? *before : pin{key, *target}, *target, man, now_ms());
        if (!before) np.first_seen_ms = np.last_verified_ms;
        storage::pin_change change{key, before, np};
        change.events.push_back({0, now_ms(), "set", key,
                                 before ? before->manifest_digest.str() : "", target->str(), actor,
                                 "", "", ""});
        if (!co_await st->operator_change(change, all))
            co_return oci::error{error_code::denied, "the pin changed meanwhile; try again"};
    }
    co_return all;
}

}  // namespace regpin::proxy::registry
