#pragma once
// Checking one pin against its upstream: HEAD the tag with the pin's accept class (a GET when
// the upstream sends no digest), and on another digest apply the tag's policy: the changed pin,
// its "repointed" event with a summary of what changed, and one alert per webhook go to the
// writer as one change. The upstream moving back to the pinned digest clears what was pending
// ("reverted"). Scheduling checks is the scheduler's business; this runs one when asked.
// Thread-safe.

#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/cache/manifest_fetcher.hpp"
#include "proxy/pins/hooks.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/pins/writer.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/store/pull_audit.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::pins {

struct check_result {
    check_outcome outcome = check_outcome::error;
    std::string upstream_digest;
    std::string error;
    std::vector<storage::pin_event> events;  // as stored
};

class checker {
public:
    checker(const config::settings& settings, const policy_table& policies,
            upstream::upstreams& upstreams, store::pin_records& records,
            cache::manifest_fetcher& manifests, pins::writer& writer);

    // The pull audit: an alerted re-point's summary says which clients pulled the old digest
    // within audit.alert_window_days ("old_digest_pulled_by"). Without it, it says nothing.
    void set_audit(store::pull_audit* audit) { audit_ = audit; }

    // Checks the pin `key` on upstream `upstream_index` now.
    [[nodiscard]] boost::asio::awaitable<check_result> check(storage::pin_key key,
                                                             std::size_t upstream_index);

    // First sight of a representation of a tag (`candidate`, a pin of a new accept class) that
    // is not the image of the tag's first pin `first` (pins/classes.hpp): the upstream moved the
    // tag since. Written like a re-point of `first` (event with a summary, alerts), under the
    // tag's policy: reject refuses it until an operator approves; pin and follow serve it, as no
    // pin of the tag is acceptable to its clients. The pin of candidate.key that holds
    // afterwards (another request's, if one was first).
    [[nodiscard]] boost::asio::awaitable<storage::result<storage::pin>> diverged_first_sight(
        storage::pin candidate, storage::manifest candidate_manifest, storage::pin first,
        std::size_t upstream_index, std::string source);

private:
    boost::asio::awaitable<std::string> summary(upstream::registry_client& client,
                                                const std::string& repository,
                                                const storage::manifest& pinned,
                                                const storage::manifest& upstream);
    boost::asio::awaitable<oci::result<storage::manifest>> manifest(
        upstream::registry_client& client, const std::string& repository, const storage::digest& d);
    void report(const std::string& registry, check_outcome o) const;
    boost::asio::awaitable<std::string> with_pulls(std::string summary_json, storage::pin_key key,
                                                   std::string old_digest);

    const config::settings& settings_;
    const policy_table& policies_;
    upstream::upstreams& upstreams_;
    store::pin_records& records_;
    cache::manifest_fetcher& manifests_;
    pins::writer& writer_;
    std::vector<std::string> alert_targets_;  // every webhook URL
    store::pull_audit* audit_ = nullptr;
};

}  // namespace regpin::proxy::pins
