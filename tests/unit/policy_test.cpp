#include "proxy/pins/policy.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace regpin::proxy::pins;
using namespace std::chrono_literals;

namespace {

const std::string pinned = "sha256:" + std::string(64, 'a');
const std::string upstream = "sha256:" + std::string(64, 'b');

namespace storage = regpin::storage;

storage::digest digest_of(const std::string& s) { return *storage::digest::parse(s); }

// A pin serving `served`, in `state`, with `pending` pending (empty: nothing).
storage::pin pin_at(const std::string& served,
                    storage::pin_state state = storage::pin_state::pinned,
                    const std::string& pending = "") {
    storage::pin p{{"docker.io", "library/x", "v1", 15}, digest_of(served)};
    p.state = state;
    if (!pending.empty()) p.pending_digest = digest_of(pending);
    return p;
}

const storage::manifest any_manifest{"application/vnd.oci.image.manifest.v1+json", "m"};

}  // namespace

TEST(PolicyGlob, SingleStarStaysWithinOnePathComponent) {
    EXPECT_TRUE(glob_match("docker.io/library/*:*", "docker.io/library/nginx:1.27"));
    EXPECT_FALSE(glob_match("docker.io/*:*", "docker.io/library/nginx:1.27"));
    EXPECT_TRUE(glob_match("docker.io/library/*", "docker.io/library/nginx:1.27"));
    EXPECT_FALSE(glob_match("docker.io/library/*", "docker.io/library/a/b:1"));
}

TEST(PolicyGlob, DoubleStarCrossesSlashes) {
    EXPECT_TRUE(glob_match("ghcr.io/myorg/**", "ghcr.io/myorg/team/api:v1"));
    EXPECT_TRUE(glob_match("ghcr.io/myorg/**", "ghcr.io/myorg/api:v1"));
    EXPECT_FALSE(glob_match("ghcr.io/myorg/**", "ghcr.io/other/api:v1"));
    EXPECT_TRUE(glob_match("**:latest", "quay.io/a/b/c:latest"));
    EXPECT_FALSE(glob_match("**:latest", "quay.io/a/b/c:latest2"));
    EXPECT_TRUE(glob_match("quay.io/**:v1.*", "quay.io/org/app:v1.4.2"));
    EXPECT_FALSE(glob_match("quay.io/**:v1.*", "quay.io/org/app:v2.0"));
    EXPECT_TRUE(glob_match("**", ""));
    EXPECT_TRUE(glob_match("a/***/b", "a/x/y/b"));  // three stars act as two
}

TEST(PolicyGlob, QuestionMarkIsOneCharacterOtherThanSlash) {
    EXPECT_TRUE(glob_match("r/app:v?", "r/app:v1"));
    EXPECT_FALSE(glob_match("r/app:v?", "r/app:v10"));
    EXPECT_FALSE(glob_match("r/app:v?", "r/app:v"));
    EXPECT_FALSE(glob_match("r?app:v1", "r/app:v1"));
}

TEST(PolicyGlob, EverythingElseIsLiteralAndTheWholeTextMustMatch) {
    EXPECT_TRUE(glob_match("docker.io/library/nginx:1.27", "docker.io/library/nginx:1.27"));
    EXPECT_FALSE(glob_match("docker.io/library/nginx:1.2", "docker.io/library/nginx:1.27"));
    EXPECT_FALSE(glob_match("docker.io/library/nginx", "docker.io/library/nginx:1.27"));
    EXPECT_FALSE(glob_match("docker.io", "xdocker.io"));
    EXPECT_TRUE(glob_match("a[1]\\b", "a[1]\\b"));
    EXPECT_FALSE(glob_match("a[1]", "a1"));
    EXPECT_TRUE(glob_match("", ""));
    EXPECT_FALSE(glob_match("", "a"));
    EXPECT_FALSE(glob_match("a", ""));
    EXPECT_TRUE(glob_match("*", ""));
    EXPECT_FALSE(glob_match("?", ""));
}

TEST(PolicyGlob, PathologicalPatternsRunInLinearTime) {
    std::string text(20000, 'a');
    std::string pattern;
    for (int i = 0; i < 50; ++i) pattern += "**a";
    auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(glob_match(pattern + "**b", text));
    EXPECT_TRUE(glob_match(pattern + "**", text));
    EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*a*b", text));
    // A backtracking matcher takes astronomically long here; the NFA needs ~milliseconds.
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(PolicyGlob, ArbitraryBytesAreSafe) {
    std::string junk;
    for (int i = 0; i < 256; ++i) junk += static_cast<char>(i);
    EXPECT_TRUE(glob_match(junk, junk));
    EXPECT_FALSE(glob_match(junk, junk.substr(1)));
    EXPECT_TRUE(glob_match(std::string("a\0b", 3), std::string("a\0b", 3)));
}

TEST(PolicyResolve, FirstMatchingRuleWins) {
    std::vector<policy_rule> rules = {
        {"docker.io/library/*:latest", policy_kind::follow, 60s},
        {"docker.io/**", policy_kind::reject, std::nullopt},
    };
    auto r = resolve_policy(rules, "docker.io", "library/nginx", "latest", 3600s);
    EXPECT_EQ(r.policy, policy_kind::follow);
    EXPECT_EQ(r.revalidate_after, 60s);
    EXPECT_EQ(r.rule_index, 0u);

    r = resolve_policy(rules, "docker.io", "library/nginx", "1.27", 3600s);
    EXPECT_EQ(r.policy, policy_kind::reject);
    EXPECT_EQ(r.revalidate_after, 3600s);  // the rule gives none: the default
    EXPECT_EQ(r.rule_index, 1u);
}

TEST(PolicyResolve, NoMatchIsPinWithTheDefaultRevalidation) {
    std::vector<policy_rule> rules = {{"ghcr.io/**", policy_kind::follow, 5s}};
    auto r = resolve_policy(rules, "quay.io", "org/app", "v1", 900s);
    EXPECT_EQ(r.policy, policy_kind::pin);
    EXPECT_EQ(r.revalidate_after, 900s);
    EXPECT_EQ(r.rule_index, resolved_policy::npos);
    EXPECT_EQ(resolve_policy({}, "quay.io", "org/app", "v1", 900s).rule_index,
              resolved_policy::npos);
}

TEST(PolicyResolve, RegistryWithPortIsPartOfTheText) {
    std::vector<policy_rule> rules = {{"localhost:5000/**", policy_kind::follow, std::nullopt}};
    EXPECT_EQ(resolve_policy(rules, "localhost:5000", "a/b", "v1", 1s).policy, policy_kind::follow);
}

TEST(PolicyNames, RoundTrip) {
    for (auto p : {policy_kind::pin, policy_kind::follow, policy_kind::reject})
        EXPECT_EQ(parse_policy(to_string(p)), p);
    EXPECT_EQ(parse_policy("Pin"), std::nullopt);
    EXPECT_EQ(parse_policy(""), std::nullopt);
    EXPECT_EQ(to_string(repoint_action::kept), "kept");
    EXPECT_EQ(to_string(repoint_action::followed), "followed");
    EXPECT_EQ(to_string(repoint_action::rejected), "rejected");
}

TEST(PolicyRepoint, PinKeepsServingThePinnedDigestAndRecordsThePending) {
    auto d = decide_repoint(policy_kind::pin, pin_at(pinned), upstream);
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->alert);
    EXPECT_EQ(d->action, repoint_action::kept);
    EXPECT_EQ(d->new_state, pin_state::pending);
    EXPECT_FALSE(d->move_pin);
    EXPECT_EQ(d->pending_digest, upstream);
}

TEST(PolicyRepoint, FollowMovesThePin) {
    auto d = decide_repoint(policy_kind::follow, pin_at(pinned), upstream);
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->alert);
    EXPECT_EQ(d->action, repoint_action::followed);
    EXPECT_EQ(d->new_state, pin_state::pinned);
    EXPECT_TRUE(d->move_pin);
    EXPECT_EQ(d->pending_digest, "");
}

TEST(PolicyRepoint, RejectFreezesThePinAndKeepsTheCandidate) {
    auto d = decide_repoint(policy_kind::reject, pin_at(pinned), upstream);
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->alert);
    EXPECT_EQ(d->action, repoint_action::rejected);
    EXPECT_EQ(d->new_state, pin_state::rejected);
    EXPECT_FALSE(d->move_pin);
    EXPECT_EQ(d->pending_digest, upstream);
}

TEST(PolicyRepoint, SameDigestIsNotARepoint) {
    auto p = pin_at(pinned);
    p.alerted = {upstream};
    for (auto policy : {policy_kind::pin, policy_kind::follow, policy_kind::reject})
        EXPECT_EQ(decide_repoint(policy, p, pinned), std::nullopt);
}

// Issue 12: a digest alerted before is re-pointed to again with an event (the caller always
// records one); only the webhook alert is suppressed.
TEST(PolicyRepoint, AnAlreadyAlertedDigestIsARepointWithoutAnAlert) {
    auto p = pin_at(pinned);
    p.alerted = {"sha256:" + std::string(64, 'c'), upstream};
    for (auto policy : {policy_kind::pin, policy_kind::follow, policy_kind::reject}) {
        auto d = decide_repoint(policy, p, upstream);
        ASSERT_TRUE(d) << to_string(policy);
        EXPECT_FALSE(d->alert) << to_string(policy);
    }
    EXPECT_EQ(decide_repoint(policy_kind::pin, p, upstream)->new_state, pin_state::pending);
    EXPECT_EQ(decide_repoint(policy_kind::reject, p, upstream)->new_state, pin_state::rejected);
    EXPECT_TRUE(decide_repoint(policy_kind::follow, p, upstream)->move_pin);
    // Another upstream digest is alerted.
    auto d = decide_repoint(policy_kind::pin, p, "sha256:" + std::string(64, 'd'));
    ASSERT_TRUE(d);
    EXPECT_TRUE(d->alert);
}

TEST(PolicyRepoint, TheSamePendingDigestSeenAgainChangesNothing) {
    EXPECT_EQ(
        decide_repoint(policy_kind::pin, pin_at(pinned, pin_state::pending, upstream), upstream),
        std::nullopt);
    EXPECT_EQ(decide_repoint(policy_kind::reject, pin_at(pinned, pin_state::rejected, upstream),
                             upstream),
              std::nullopt);
    // The policy changed from pin to reject meanwhile: the same digest now rejects the tag.
    auto d =
        decide_repoint(policy_kind::reject, pin_at(pinned, pin_state::pending, upstream), upstream);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->new_state, pin_state::rejected);
}

TEST(PolicyRepoint, OnlyAPendingPinRevertsWhenTheUpstreamComesBack) {
    const std::string decided = "sha256:" + std::string(64, 'e');
    auto pending = pin_at(pinned, pin_state::pending, upstream);
    pending.decided = {decided};
    EXPECT_TRUE(reverts(pending, pinned));
    EXPECT_TRUE(reverts(pending, decided)) << "back at a digest an operator decided";
    EXPECT_FALSE(reverts(pending, upstream));
    EXPECT_FALSE(reverts(pin_at(pinned, pin_state::rejected, upstream), pinned))
        << "only an operator clears a rejection";
    EXPECT_FALSE(reverts(pin_at(pinned), pinned));
}

TEST(PolicyRepoint, FollowFlappingIsAnEventEveryMoveAndAnAlertPerNewDigest) {
    auto p = pin_at(pinned);
    std::vector<bool> alerts;
    for (const auto& next : {upstream, pinned, upstream, pinned, upstream}) {
        auto d = decide_repoint(policy_kind::follow, p, next);
        ASSERT_TRUE(d) << "a move with no decision would change the pin silently";
        alerts.push_back(d->alert);
        p = apply_repoint(p, *d, digest_of(next), any_manifest, 1);
        EXPECT_EQ(p.manifest_digest.str(), next);
    }
    EXPECT_EQ(alerts, (std::vector<bool>{true, true, false, false, false}));
}

// Issue 12: an operator's decision holds until the upstream moves to a digest nobody decided.
TEST(PolicyRepoint, AnOperatorsDecisionHoldsUntilTheUpstreamShowsANewDigest) {
    const std::string later = "sha256:" + std::string(64, 'c');
    auto rejected = pin_at(pinned, pin_state::rejected, upstream);
    rejected.alerted = {upstream};
    // The operator keeps the old digest.
    auto kept = decide(rejected, digest_of(pinned), any_manifest, 5);
    EXPECT_EQ(kept.state, pin_state::pinned);
    EXPECT_FALSE(kept.pending_digest);
    for (auto policy : {policy_kind::pin, policy_kind::follow, policy_kind::reject})
        EXPECT_EQ(decide_repoint(policy, kept, upstream), std::nullopt) << to_string(policy);
    auto fresh = decide_repoint(policy_kind::reject, kept, later);
    ASSERT_TRUE(fresh);
    EXPECT_EQ(fresh->new_state, pin_state::rejected);
    EXPECT_TRUE(fresh->alert);
    // Approving the pending digest: the old one is decided too.
    auto moved =
        decide(pin_at(pinned, pin_state::pending, upstream), digest_of(upstream), any_manifest, 6);
    EXPECT_EQ(moved.manifest_digest.str(), upstream);
    EXPECT_EQ(decide_repoint(policy_kind::pin, moved, pinned), std::nullopt);
}

TEST(PolicyRepoint, ApplyRepointMovesOnFollowAndKeepsPendingOtherwise) {
    using namespace regpin;
    auto a = storage::sha256_of("a"), b = storage::sha256_of("b");
    storage::pin p{{"docker.io", "library/x", "v1", 15}, a};
    p.last_verified_ms = 1;
    storage::manifest m{"application/vnd.oci.image.manifest.v1+json", "b"};

    auto follow = *proxy::pins::decide_repoint(proxy::pins::policy_kind::follow, p, b.str());
    auto moved = proxy::pins::apply_repoint(p, follow, b, m, 100);
    EXPECT_EQ(moved.manifest_digest, b);
    EXPECT_EQ(moved.size, 1u);
    EXPECT_EQ(moved.state, storage::pin_state::pinned);
    EXPECT_FALSE(moved.pending_digest);
    EXPECT_EQ(moved.alerted, std::vector<std::string>{b.str()});

    auto keep = *proxy::pins::decide_repoint(proxy::pins::policy_kind::pin, p, b.str());
    auto kept = proxy::pins::apply_repoint(p, keep, b, m, 100);
    EXPECT_EQ(kept.manifest_digest, a);
    EXPECT_EQ(kept.pending_digest, b);
    EXPECT_EQ(kept.pending_since_ms, 100);
    EXPECT_EQ(kept.state, storage::pin_state::pending);
    // The same digest pending again keeps its pending_since.
    auto again = proxy::pins::apply_repoint(kept, keep, b, m, 200);
    EXPECT_EQ(again.pending_since_ms, 100);
    EXPECT_EQ(again.last_verified_ms, 200);
}

TEST(PolicyArtifacts, SignatureAndReferrersFallbackTagsAreArtifactTags) {
    const std::string hex(64, 'a');
    for (auto suffix : {"", ".sig", ".att", ".sbom"})
        EXPECT_TRUE(is_artifact_tag("sha256-" + hex + suffix)) << suffix;
    EXPECT_FALSE(is_artifact_tag("sha256-" + hex + ".tar"));
    EXPECT_FALSE(is_artifact_tag("sha256-" + std::string(63, 'a')));
    EXPECT_FALSE(is_artifact_tag("sha256-" + std::string(64, 'A')));
    EXPECT_FALSE(is_artifact_tag("v1.2.3"));
}

TEST(PolicyArtifacts, OnlyARuleThatNamesArtifactTagsOverridesTheBuiltInRule) {
    const std::string sig = "sha256-" + std::string(64, 'b') + ".sig";
    std::vector<policy_rule> catch_all = {{"**", policy_kind::reject, std::nullopt},
                                          {"docker.io/**:*", policy_kind::pin, std::nullopt}};
    auto r = resolve_policy(catch_all, "docker.io", "library/x", sig, 60s);
    EXPECT_EQ(r.policy, policy_kind::artifact);
    EXPECT_EQ(r.rule_index, resolved_policy::npos);
    EXPECT_EQ(resolve_policy(catch_all, "docker.io", "library/x", "v1", 60s).policy,
              policy_kind::reject);

    std::vector<policy_rule> named = {{"docker.io/**:sha256-*.sig", policy_kind::reject, 5s},
                                      {"**", policy_kind::follow, std::nullopt}};
    r = resolve_policy(named, "docker.io", "library/x", sig, 60s);
    EXPECT_EQ(r.policy, policy_kind::reject);
    EXPECT_EQ(r.revalidate_after, 5s);
    EXPECT_EQ(resolve_policy(named, "docker.io", "library/x", "sha256-" + std::string(64, 'b'), 60s)
                  .policy,
              policy_kind::artifact);
}

TEST(PolicyArtifacts, AnArtifactUpdateFollowsAndIsNeverAlerted) {
    auto d = decide_repoint(policy_kind::artifact, pin_at(pinned), upstream);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->action, repoint_action::updated);
    EXPECT_EQ(to_string(d->action), "updated");
    EXPECT_EQ(d->new_state, storage::pin_state::pinned);
    EXPECT_TRUE(d->move_pin);
    EXPECT_FALSE(d->alert);
    EXPECT_EQ(to_string(policy_kind::artifact), "artifact");
    EXPECT_FALSE(parse_policy("artifact")) << "built in, never configured";
}
