// One tag, one truth (proxy/pins/classes.hpp): which pin of another accept class answers a
// client, and when two representations of a tag are the same image.
#include "proxy/pins/classes.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/oci/media_types.hpp"

using namespace regpin::proxy;
using namespace regpin::proxy::pins;
namespace storage = regpin::storage;

namespace {

std::string digest_text(char c) { return "sha256:" + std::string(64, c); }

storage::pin pin_of(std::uint8_t cls, std::string_view media_type, char digest, std::int64_t seen) {
    storage::pin p{{"docker.io", "library/x", "v1", cls},
                   *storage::digest::parse(digest_text(digest))};
    p.media_type = std::string(media_type);
    p.first_seen_ms = seen;
    return p;
}

constexpr std::uint8_t docker_only = oci::accepts_docker_manifest;
constexpr std::uint8_t oci_only = oci::accepts_oci_manifest | oci::accepts_oci_index;

oci::manifest_refs index_of(std::vector<char> children) {
    oci::manifest_refs r;
    r.is_index = true;
    for (char c : children)
        r.children.push_back({std::string(oci::oci_manifest), digest_text(c), 1, ""});
    return r;
}

}  // namespace

TEST(OneTagOneTruth, AnyClientThatAcceptsThePinnedIndexIsServedIt) {
    std::vector<storage::pin> pins{pin_of(oci::accepts_all, oci::oci_index, 'a', 10)};
    for (std::uint8_t cls : {std::uint8_t{0}, oci_only, std::uint8_t(oci::accepts_oci_index)}) {
        auto answer = answer_for_class(pins, cls);
        ASSERT_TRUE(answer.serve) << int(cls);
        EXPECT_EQ(answer.serve->manifest_digest.str(), digest_text('a'));
        EXPECT_FALSE(answer.prefer_upstream_index);
    }
}

TEST(OneTagOneTruth, AClientThatDoesNotAcceptAnyPinnedTypeIsNotServed) {
    std::vector<storage::pin> pins{pin_of(oci::accepts_all, oci::oci_index, 'a', 10)};
    auto answer = answer_for_class(pins, docker_only);
    EXPECT_FALSE(answer.serve);
    ASSERT_TRUE(answer.first);
    EXPECT_EQ(answer.first->manifest_digest.str(), digest_text('a'));
}

TEST(OneTagOneTruth, AnIndexIsPreferredThenTheEarliestPin) {
    std::vector<storage::pin> pins{
        pin_of(docker_only, oci::docker_manifest, 'a', 5),
        pin_of(oci_only, oci::oci_index, 'b', 20),
        pin_of(oci::accepts_docker_manifest_list, oci::docker_manifest_list, 'c', 10)};
    auto answer = answer_for_class(pins, oci::accepts_all);
    ASSERT_TRUE(answer.serve);
    EXPECT_EQ(answer.serve->manifest_digest.str(), digest_text('c'));
    EXPECT_FALSE(answer.prefer_upstream_index);
    EXPECT_EQ(answer.first->manifest_digest.str(), digest_text('a'));
}

TEST(OneTagOneTruth, AOnePlatformManifestAnswersButTheUpstreamsIndexIsPreferred) {
    std::vector<storage::pin> pins{pin_of(docker_only, oci::docker_manifest, 'a', 5)};
    auto all = answer_for_class(pins, oci::accepts_all);
    ASSERT_TRUE(all.serve);
    EXPECT_TRUE(all.prefer_upstream_index);
    // */* and clients that accept no index take it as it is.
    auto any = answer_for_class(pins, 0);
    ASSERT_TRUE(any.serve);
    EXPECT_FALSE(any.prefer_upstream_index);
    auto manifests =
        answer_for_class(pins, oci::accepts_docker_manifest | oci::accepts_oci_manifest);
    ASSERT_TRUE(manifests.serve);
    EXPECT_FALSE(manifests.prefer_upstream_index);
}

TEST(OneTagOneTruth, SameImageWhenOneListsTheOtherOrTheyShareAChild) {
    auto a = digest_text('a'), b = digest_text('b'), c = digest_text('c'), d = digest_text('d');
    auto e = digest_text('e');
    EXPECT_TRUE(same_image({a, std::nullopt}, {a, std::nullopt}));
    EXPECT_FALSE(same_image({a, std::nullopt}, {b, std::nullopt}));
    EXPECT_TRUE(same_image({a, index_of({'b', 'c'})}, {b, std::nullopt}));
    EXPECT_TRUE(same_image({b, std::nullopt}, {a, index_of({'b', 'c'})}));
    EXPECT_TRUE(same_image({a, index_of({'b', 'c'})}, {d, index_of({'c', 'e'})}));
    EXPECT_FALSE(same_image({a, index_of({'b', 'c'})}, {d, index_of({'e'})}));
    EXPECT_FALSE(same_image({a, index_of({'b'})}, {e, std::nullopt}));
}

// pick_for_class: what the registry API's manifest() and the resolve API both answer from.
TEST(OneTagOneTruth, AClassOwnPinAnswersElseAnAcceptedOneUnlessAnIndexIsPreferred) {
    auto own = pin_of(oci::accepts_all, oci::oci_manifest, 'a', 20);
    auto single = pin_of(docker_only, oci::docker_manifest, 'b', 10);
    auto pick = pick_for_class({single, own}, oci::accepts_all);
    ASSERT_TRUE(pick.answer);
    EXPECT_EQ(pick.answer->manifest_digest.str(), digest_text('a')) << "its own class first";
    EXPECT_FALSE(pick.others);

    // Only a single manifest of another class, and the client accepts indexes: a first sight
    // decides (the upstream may have an index of the same image).
    pick = pick_for_class({single}, oci::accepts_all);
    EXPECT_FALSE(pick.answer);
    ASSERT_TRUE(pick.others);
    EXPECT_TRUE(pick.others->prefer_upstream_index);
    EXPECT_EQ(pick.others->serve->manifest_digest.str(), digest_text('b'));

    // A client that takes no index is served it.
    pick = pick_for_class({single}, docker_only | oci::accepts_oci_manifest);
    ASSERT_TRUE(pick.answer);
    EXPECT_EQ(pick.answer->manifest_digest.str(), digest_text('b'));

    pick = pick_for_class({}, oci::accepts_all);
    EXPECT_FALSE(pick.answer);
    ASSERT_TRUE(pick.others);
    EXPECT_FALSE(pick.others->first);
}
