#include "proxy/registry/router.hpp"

#include <gtest/gtest.h>

using namespace regpin;
using proxy::registry::route_to_upstream;
using proxy::registry::routed;

namespace {

config::settings two_upstreams() {
    config::settings s;
    s.upstreams = config::default_upstreams();
    config::upstream local;
    local.registry = "127.0.0.1:5000";
    local.urls = {"http://127.0.0.1:5000"};
    s.upstreams.push_back(local);
    config::validate(s);
    return s;
}

proxy::oci::result<routed> route(const std::string& target) {
    auto r = proxy::oci::parse_route(target);
    return route_to_upstream(*r, two_upstreams());
}

routed ok(const std::string& target) {
    auto r = route(target);
    if (!r) {
        ADD_FAILURE() << target << ": " << r.error().message;
        return {};
    }
    return *r;
}

}  // namespace

TEST(Router, NsPicksTheUpstream) {
    auto r = ok("/v2/team/app/manifests/v1?ns=ghcr.io");
    EXPECT_EQ(r.registry, "ghcr.io");
    EXPECT_EQ(r.repository, "team/app");
    EXPECT_EQ(ok("/v2/team/app/manifests/v1?ns=127.0.0.1:5000").upstream_index, 4u);
}

TEST(Router, UnknownNsIsNameUnknown) {
    auto r = route("/v2/team/app/manifests/v1?ns=evil.example.com");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, proxy::oci::error_code::name_unknown);
}

TEST(Router, PathPrefixPicksTheUpstream) {
    auto r = ok("/v2/quay.io/prometheus/node-exporter/manifests/v1");
    EXPECT_EQ(r.registry, "quay.io");
    EXPECT_EQ(r.repository, "prometheus/node-exporter");
    EXPECT_EQ(ok("/v2/127.0.0.1:5000/a/manifests/v1").registry, "127.0.0.1:5000");
}

TEST(Router, UnknownHostPrefixIsNameUnknown) {
    auto r = route("/v2/evil.example.com/a/manifests/v1");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, proxy::oci::error_code::name_unknown);
}

TEST(Router, NeitherGoesToTheDefaultUpstream) {
    auto r = ok("/v2/team/app/manifests/v1");
    EXPECT_EQ(r.registry, "docker.io");
    EXPECT_EQ(r.repository, "team/app");
}

TEST(Router, DockerHubShortNamesGainLibraryOnDockerHubOnly) {
    EXPECT_EQ(ok("/v2/nginx/manifests/1.27?ns=docker.io").repository, "library/nginx");
    EXPECT_EQ(ok("/v2/nginx/manifests/1.27").repository, "library/nginx");
    EXPECT_EQ(ok("/v2/docker.io/nginx/manifests/1.27").repository, "library/nginx");
    EXPECT_EQ(ok("/v2/nginx/manifests/1.27?ns=ghcr.io").repository, "nginx");
    EXPECT_EQ(ok("/v2/nginx/manifests/1.27?ns=registry-1.docker.io").registry, "docker.io");
}

TEST(Router, LibraryPrefixCannotPushANamePastTheLimit) {
    // Found by tests/fuzz/route_fuzz: a 250-character Docker Hub short name is valid, but
    // "library/" + it is not.
    auto r = route("/v2/" + std::string(250, 'a') + "/manifests/v1");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, proxy::oci::error_code::name_invalid);
}
