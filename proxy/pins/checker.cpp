#include "proxy/pins/checker.hpp"

#include <charconv>

#include <boost/beast/http/verb.hpp>
#include <nlohmann/json.hpp>

#include "proxy/cache/fetch_through.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/pins/summary.hpp"
#include "proxy/upstream/fetch.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::pins {

namespace asio = boost::asio;
using oci::error_code;
using storage::pin_event;

namespace {

constexpr std::uint64_t max_config_bytes = 4 * 1024 * 1024;

check_result failed(std::string why) {
    check_result out;
    out.outcome = check_outcome::error;
    out.error = std::move(why);
    return out;
}

}  // namespace

checker::checker(const config::settings& settings, const policy_table& policies,
                 upstream::upstreams& upstreams, store::pin_records& records,
                 cache::manifest_fetcher& manifests, pins::writer& writer)
    : settings_(settings),
      policies_(policies),
      upstreams_(upstreams),
      records_(records),
      manifests_(manifests),
      writer_(writer) {
    for (const auto& w : settings.webhooks) alert_targets_.push_back(w.url);
}

void checker::report(const std::string& registry, check_outcome o) const {
    if (writer_.hooks().checked) writer_.hooks().checked(registry, o);
}

asio::awaitable<oci::result<storage::manifest>> checker::manifest(upstream::registry_client& client,
                                                                  const std::string& repository,
                                                                  const storage::digest& d) {
    // Named, not temporaries: g++ 12 destroys a temporary argument of a coroutine call inside
    // co_await twice (proxy/README.md).
    const std::string accept = oci::accept_for_class(oci::accepts_all);
    const std::string repo = repository;
    auto got = co_await manifests_.by_digest(client, repo, d, accept, settings_.manifest_max_bytes);
    if (!got) co_return got.error();
    co_return std::move(got->manifest);
}

asio::awaitable<std::string> checker::summary(upstream::registry_client& client,
                                              const std::string& repository,
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
                auto got = co_await manifest(client, repository, *d);
                if (got) {
                    docs->manifests_by_digest[m] = got->bytes;
                    added = true;
                }
            }
            for (const auto& c : need->configs) {
                auto d = storage::digest::parse(c);
                if (!d) continue;
                auto bytes = co_await cache::small_blob(manifests_.content(), client, repository,
                                                        *d, max_config_bytes);
                if (bytes) {
                    docs->configs_by_digest[c] = std::move(*bytes);
                    added = true;
                }
            }
        }
        if (!added) break;
    }
    co_return summarize(a, b).dump();
}

asio::awaitable<std::string> checker::with_pulls(std::string summary_json, storage::pin_key key,
                                                 std::string old_digest) {
    if (!audit_) co_return summary_json;
    auto summary = nlohmann::json::parse(summary_json, nullptr, false);
    if (!summary.is_object()) co_return summary_json;
    storage::audit_query q;
    q.digest = old_digest;
    q.registry = key.registry;
    q.repository = key.repository;
    const auto window = audit_->settings().alert_window;
    q.since_ms =
        storage::now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(window).count();
    q.limit = 100000;
    auto found = co_await audit_->query(q);
    if (!found) co_return summary_json;
    // One client per node name (or address), most recent first; up to 20 named.
    const auto clients = storage::pull_clients(*found);
    constexpr std::size_t named = 20;
    nlohmann::json names = nlohmann::json::array();
    for (std::size_t i = 0; i < clients.size() && i < named; ++i) names.push_back(clients[i]);
    const auto days = window.count() / 24;
    summary["old_digest_pulled_by"] = {{"window_days", days},
                                       {"clients", clients.size()},
                                       {"names", names},
                                       {"more", clients.size() > named}};
    if (summary.contains("text") && summary["text"].is_string())
        summary["text"] = summary["text"].get<std::string>() + "; the old digest was pulled by " +
                          std::to_string(clients.size()) +
                          (clients.size() == 1 ? " client" : " clients") + " in the last " +
                          std::to_string(days) + (days == 1 ? " day" : " days");
    co_return summary.dump();
}

asio::awaitable<check_result> checker::check(storage::pin_key key, std::size_t ui) {
    auto& client = upstreams_.at(ui);
    const auto& registry = client.settings().registry;
    auto found = co_await records_.find(key);
    if (!found) co_return failed("storage failure reading the pin");
    if (!*found) {
        check_result out;
        out.outcome = check_outcome::no_pin;
        co_return out;
    }
    auto p = **found;
    // What the pin serves and awaits is held again on every check: a closure cut short by a
    // restart or an upstream fault completes.
    if (const auto& holds = writer_.hooks().holds) {
        holds(key, p.manifest_digest.str());
        if (p.pending_digest) holds(key, p.pending_digest->str());
    }

    check_result out;
    const auto accept = oci::accept_for_class(key.accept_class);
    auto named = co_await upstream::head_manifest(client, key.repository, key.tag, accept);
    if (!named) {
        report(registry, check_outcome::error);
        co_return failed(named.error().message);
    }
    auto upstream_digest = named->digest;
    auto source = named->source;
    if (!upstream_digest) {
        // No usable digest on HEAD: GET the tag and hash it, as containerd does.
        auto got = co_await upstream::fetch_manifest(client, key.repository, key.tag, accept,
                                                     settings_.manifest_max_bytes);
        if (!got) {
            report(registry, check_outcome::error);
            co_return failed(got.error().message);
        }
        upstream_digest = got->digest;
        source = got->source;
    }
    out.upstream_digest = upstream_digest->str();
    auto now = storage::now_ms();

    if (reverts(p, upstream_digest->str())) {
        // The upstream is back at the pinned digest, or at one an operator decided: nothing is
        // pending any more.
        report(registry, check_outcome::unchanged);
        out.outcome = check_outcome::unchanged;
        auto np = p;
        np.state = storage::pin_state::pinned;
        np.pending_digest.reset();
        np.last_verified_ms = now;
        storage::pin_change change{key, p, np};
        change.events.push_back({0, now, storage::event_type::reverted, key,
                                 p.pending_digest->str(), p.manifest_digest.str(), "policy", "", "",
                                 ""});
        std::vector<storage::pin_change> changes{change};
        auto applied = co_await writer_.commit(changes);
        if (applied) out.events = *applied;
        co_return out;
    }

    auto policy = policies_.for_key(key);
    auto decision = decide_repoint(policy.policy, p, upstream_digest->str());
    if (!decision) {
        // The pinned digest, a decided one, or the re-point already recorded: nothing changes.
        (void)co_await records_.touch_verified(key, now);
        report(registry, check_outcome::unchanged);
        out.outcome = *upstream_digest == p.manifest_digest ? check_outcome::unchanged
                                                            : check_outcome::already_recorded;
        co_return out;
    }
    auto fetched = co_await manifest(client, key.repository, *upstream_digest);
    if (!fetched) {
        report(registry, check_outcome::error);
        auto f = failed(fetched.error().message);
        f.upstream_digest = out.upstream_digest;
        co_return f;
    }
    auto& upstream_manifest = *fetched;

    // Every re-point is an event; the first one to a digest is also alerted, to every webhook,
    // with a summary of what changed.
    std::string summary_json = "{}";
    if (decision->alert) {
        auto pinned_manifest = co_await manifest(client, key.repository, p.manifest_digest);
        if (pinned_manifest)
            summary_json =
                co_await summary(client, key.repository, *pinned_manifest, upstream_manifest);
        const auto old_digest = p.manifest_digest.str();
        summary_json = co_await with_pulls(summary_json, key, old_digest);
    }
    auto np = apply_repoint(p, *decision, *upstream_digest, upstream_manifest, now);
    storage::pin_change change{key, p, np};
    change.events.push_back({0, now, storage::event_type::repointed, key, p.manifest_digest.str(),
                             upstream_digest->str(), "policy",
                             std::string(to_string(policy.policy)),
                             std::string(to_string(decision->action)), summary_json, source});
    if (decision->alert)
        for (const auto& target : alert_targets_) change.alerts.push_back({0, target});
    std::vector<storage::pin_change> changes{change};
    auto applied = co_await writer_.commit(changes);
    if (!applied) {
        report(registry, check_outcome::error);
        auto f = failed(applied.error() == storage::errc::conflict
                            ? "the pin changed during the check; it will be checked again"
                            : "storage failure writing the pin");
        f.upstream_digest = out.upstream_digest;
        co_return f;
    }
    out.events = *applied;
    out.outcome = check_outcome::repointed;
    report(registry, check_outcome::repointed);
    co_return out;
}

asio::awaitable<storage::result<storage::pin>> checker::diverged_first_sight(
    storage::pin candidate, storage::manifest candidate_manifest, storage::pin first,
    std::size_t upstream_index, std::string source) {
    const auto key = candidate.key;
    auto& client = upstreams_.at(upstream_index);
    auto policy = policies_.for_key(key);
    std::string summary_json = "{}";
    if (auto pinned_manifest = co_await manifest(client, key.repository, first.manifest_digest))
        summary_json =
            co_await summary(client, key.repository, *pinned_manifest, candidate_manifest);
    const auto old_digest = first.manifest_digest.str();
    summary_json = co_await with_pulls(summary_json, key, old_digest);
    if (policy.policy == policy_kind::reject) {
        candidate.state = storage::pin_state::rejected;
        candidate.pending_digest = candidate.manifest_digest;
        candidate.pending_since_ms = candidate.first_seen_ms;
    }
    candidate.alerted.push_back(candidate.manifest_digest.str());
    storage::pin_change change{key, std::nullopt, candidate};
    change.events.push_back({0, candidate.first_seen_ms, storage::event_type::repointed, key,
                             first.manifest_digest.str(), candidate.manifest_digest.str(),
                             "first-pull", std::string(to_string(policy.policy)), "diverged",
                             summary_json, source});
    if (policy.policy != policy_kind::artifact)
        for (const auto& target : alert_targets_) change.alerts.push_back({0, target});
    std::vector<storage::pin_change> changes{change};
    auto applied = co_await writer_.commit(changes);
    if (!applied && applied.error() != storage::errc::conflict) co_return applied.error();
    // Written, or another request pinned this class first: the stored pin holds.
    auto held = co_await records_.find(key);
    if (!held) co_return held.error();
    if (!*held) co_return storage::errc::conflict;  // unpinned meanwhile
    co_return std::move(**held);
}

}  // namespace regpin::proxy::pins
