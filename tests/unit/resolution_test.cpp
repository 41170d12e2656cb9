// What a tag resolves to for the pipeline, and which token scope each admin endpoint needs
// (issue 17, point 1).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proxy/admin/admin_api.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/pins/resolution.hpp"

using namespace regpin::proxy;
using regpin::config::token_scope;
using regpin::storage::digest;
using regpin::storage::pin;
using regpin::storage::pin_state;

namespace {

const std::string d1 = "sha256:" + std::string(64, '1');
const std::string d2 = "sha256:" + std::string(64, '2');
const std::string amd = "sha256:" + std::string(64, 'a');
const std::string arm = "sha256:" + std::string(64, 'b');
const std::string att = "sha256:" + std::string(64, 'c');

pin make_pin(std::uint8_t cls, const std::string& d, std::string media_type) {
    return pin{{"docker.io", "library/nginx", "1.27", cls},
               *digest::parse(d),
               std::move(media_type),
               100,
               1764000000000,
               1764000000000};
}

regpin::storage::manifest index_manifest() {
    nlohmann::json m = {
        {"schemaVersion", 2},
        {"mediaType", oci::oci_index},
        {"manifests",
         {{{"mediaType", oci::oci_manifest},
           {"digest", amd},
           {"size", 10},
           {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}},
          {{"mediaType", oci::oci_manifest},
           {"digest", arm},
           {"size", 10},
           {"platform", {{"os", "linux"}, {"architecture", "arm64"}, {"variant", "v8"}}}},
          {{"mediaType", oci::oci_manifest},
           {"digest", att},
           {"size", 10},
           {"platform", {{"os", "unknown"}, {"architecture", "unknown"}}}}}}};
    return {std::string(oci::oci_index), m.dump()};
}

}  // namespace

TEST(Resolution, ThePinNodesGetIsContainerdsClass) {
    auto single = make_pin(1, d2, std::string(oci::docker_manifest));
    auto all = make_pin(oci::accepts_all, d1, std::string(oci::oci_index));
    EXPECT_EQ(pins::pin_for_nodes({single, all})->manifest_digest.str(), d1);
    // No pin of containerd's class: the one it would be served (answer_for_class).
    EXPECT_EQ(pins::pin_for_nodes({single})->manifest_digest.str(), d2);
    EXPECT_FALSE(pins::pin_for_nodes({}).has_value());
}

TEST(Resolution, AnIndexNamesItsPlatformsAndAnAskedOne) {
    auto p = make_pin(oci::accepts_all, d1, std::string(oci::oci_index));
    auto m = index_manifest();
    auto r = pins::resolve_pin(p, &m, "linux/arm64");
    ASSERT_TRUE(r.value) << r.error;
    ASSERT_EQ(r.value->platforms.size(), 2u);  // the attestation is not an image
    EXPECT_EQ(r.value->platforms[0].platform, "linux/amd64");
    ASSERT_TRUE(r.value->for_platform);
    EXPECT_EQ(r.value->for_platform->digest, arm);  // linux/arm64 matches linux/arm64/v8
    auto j = pins::resolution_json(*r.value, "pin");
    EXPECT_EQ(j["reference"], "docker.io/library/nginx:1.27");
    EXPECT_EQ(j["pinned_reference"], "docker.io/library/nginx:1.27@" + d1);
    EXPECT_EQ(j["state"], "pinned");
    EXPECT_EQ(j["policy"], "pin");
    EXPECT_TRUE(j["upstream_digest"].is_null());
    EXPECT_EQ(j["platform"]["digest"], arm);
    EXPECT_EQ(j["platforms"].size(), 2u);

    auto missing = pins::resolve_pin(p, &m, "linux/s390x");
    EXPECT_FALSE(missing.value);
    EXPECT_NE(missing.error.find("linux/amd64, linux/arm64/v8"), std::string::npos)
        << missing.error;

    // One image: it is every platform's answer. Pending: the upstream's digest is named.
    auto one = make_pin(oci::accepts_all, d2, std::string(oci::oci_manifest));
    one.state = pin_state::pending;
    one.pending_digest = *digest::parse(d1);
    auto r1 = pins::resolve_pin(one, nullptr, "linux/amd64");
    ASSERT_TRUE(r1.value);
    EXPECT_EQ(r1.value->for_platform->digest, d2);
    auto j1 = pins::resolution_json(*r1.value, "pin");
    EXPECT_EQ(j1["state"], "pending");
    EXPECT_EQ(j1["digest"], d2);
    EXPECT_EQ(j1["upstream_digest"], d1);
}

TEST(Resolution, EveryEndpointNeedsItsScope) {
    using admin::needed_scope;
    using admin::scope_allows;
    EXPECT_EQ(needed_scope("GET", "/api/v1/resolve"), token_scope::resolve);
    EXPECT_EQ(needed_scope("GET", "/api/v1/pins"), token_scope::read);
    EXPECT_EQ(needed_scope("HEAD", "/api/v1/events"), token_scope::read);
    EXPECT_EQ(needed_scope("GET", "/api/v1/audit"), token_scope::read);
    EXPECT_EQ(needed_scope("POST", "/api/v1/pin/approve"), token_scope::admin);
    EXPECT_EQ(needed_scope("POST", "/api/v1/verify"), token_scope::admin);
    EXPECT_EQ(needed_scope("POST", "/api/v1/resolve"), token_scope::admin);
    EXPECT_TRUE(scope_allows(token_scope::admin, token_scope::resolve));
    EXPECT_TRUE(scope_allows(token_scope::admin, token_scope::read));
    EXPECT_TRUE(scope_allows(token_scope::read, token_scope::read));
    EXPECT_FALSE(scope_allows(token_scope::read, token_scope::resolve));
    EXPECT_FALSE(scope_allows(token_scope::read, token_scope::admin));
    EXPECT_FALSE(scope_allows(token_scope::resolve, token_scope::read));
    EXPECT_FALSE(scope_allows(token_scope::resolve, token_scope::admin));
}

TEST(Resolution, AnImageWithoutATagIsLatest) {
    EXPECT_TRUE(oci::has_tag("nginx:1.27"));
    EXPECT_FALSE(oci::has_tag("nginx"));
    EXPECT_FALSE(oci::has_tag("127.0.0.1:5000/team/app"));
    EXPECT_TRUE(oci::has_tag("127.0.0.1:5000/team/app:v1"));
    EXPECT_EQ(oci::parse_image_name("nginx")->str(), "docker.io/library/nginx:latest");
    EXPECT_EQ(oci::parse_image_name("127.0.0.1:5000/team/app")->str(),
              "127.0.0.1:5000/team/app:latest");
    EXPECT_EQ(oci::parse_image_name("ghcr.io/org/app:v2")->str(), "ghcr.io/org/app:v2");
    EXPECT_FALSE(oci::parse_image_name("UPPER/case:v1"));
}
