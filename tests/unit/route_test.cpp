#include "proxy/oci/route.hpp"

#include <gtest/gtest.h>

#include "proxy/oci/errors.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/oci/range.hpp"

using namespace regpin::proxy::oci;

namespace {

const std::string d256 = "sha256:" + std::string(64, 'a');

route ok(std::string_view target) {
    auto r = parse_route(target);
    if (!r) {
        ADD_FAILURE() << target << ": " << r.error().message;
        return {};
    }
    return *r;
}

error fails(std::string_view target) {
    auto r = parse_route(target);
    if (!r) return r.error();
    ADD_FAILURE() << target << " parsed";
    return {};
}

}  // namespace

TEST(Route, BaseEndpoint) {
    EXPECT_EQ(ok("/v2/").kind, endpoint::base);
    EXPECT_EQ(ok("/v2").kind, endpoint::base);
}

TEST(Route, ManifestByTagWithMultiComponentNameAndNs) {
    auto r = ok("/v2/library/nginx/manifests/1.27?ns=docker.io");
    EXPECT_EQ(r.kind, endpoint::manifest);
    EXPECT_EQ(r.name, "library/nginx");
    EXPECT_EQ(r.reference, "1.27");
    EXPECT_EQ(r.ns, "docker.io");
}

TEST(Route, NamesContainingApiKeywordsSplitAtTheLastOne) {
    auto r = ok("/v2/a/manifests/b/manifests/latest");
    EXPECT_EQ(r.name, "a/manifests/b");
    EXPECT_EQ(r.reference, "latest");
    auto b = ok("/v2/x/blobs/y/blobs/" + d256);
    EXPECT_EQ(b.kind, endpoint::blob);
    EXPECT_EQ(b.name, "x/blobs/y");
}

TEST(Route, BlobTagsAndReferrers) {
    auto b = ok("/v2/team/app/blobs/" + d256);
    EXPECT_EQ(b.kind, endpoint::blob);
    EXPECT_EQ(b.reference, d256);
    auto t = ok("/v2/team/app/tags/list?n=10&last=v1");
    EXPECT_EQ(t.kind, endpoint::tags_list);
    EXPECT_EQ(t.name, "team/app");
    EXPECT_EQ(t.n, "10");
    EXPECT_EQ(t.last, "v1");
    auto f = ok("/v2/team/app/referrers/" + d256 + "?artifactType=application/x");
    EXPECT_EQ(f.kind, endpoint::referrers);
    EXPECT_EQ(f.artifact_type, "application/x");
}

TEST(Route, RegistryHostPrefixIsKeptInTheName) {
    auto r = ok("/v2/127.0.0.1:5000/team/app/manifests/v1");
    EXPECT_EQ(r.name, "127.0.0.1:5000/team/app");
}

TEST(Route, InvalidInputGetsTheMatchingCode) {
    EXPECT_EQ(fails("/v2/UPPER/manifests/v1").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/a/../b/manifests/v1").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/../team/manifests/x").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/./team/manifests/x").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/-evil.com/team/manifests/x").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/a/%2e%2e/manifests/v1").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/a%2fb/manifests/v1").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2//manifests/v1").code, error_code::name_invalid);
    EXPECT_EQ(fails("/v2/a/manifests/-bad").code, error_code::tag_invalid);
    EXPECT_EQ(fails("/v2/a/manifests/" + std::string(129, 't')).code, error_code::tag_invalid);
    EXPECT_EQ(fails("/v2/a/manifests/sha256:totallywrong").code, error_code::digest_invalid);
    EXPECT_EQ(fails("/v2/a/blobs/latest").code, error_code::digest_invalid);
    EXPECT_EQ(fails("/v2/a/blobs/md5:abcd").code, error_code::digest_invalid);
    EXPECT_EQ(fails("/v2/a/blobs/uploads/").code, error_code::unsupported);
    EXPECT_EQ(fails("/v1/a/manifests/x").code, error_code::name_unknown);
    EXPECT_EQ(fails("/v2/_catalog").code, error_code::name_unknown);
}

TEST(Route, ErrorsMapToSpecStatuses) {
    EXPECT_EQ((error{error_code::name_invalid, ""}).status(), 400u);
    EXPECT_EQ((error{error_code::digest_invalid, ""}).status(), 400u);
    EXPECT_EQ((error{error_code::manifest_unknown, ""}).status(), 404u);
    EXPECT_EQ((error{error_code::unsupported, ""}).status(), 405u);
    EXPECT_EQ((error{error_code::unavailable, ""}).status(), 503u);
    EXPECT_EQ((error{error_code::name_unknown, "x"}).body(),
              R"({"errors":[{"code":"NAME_UNKNOWN","detail":{},"message":"x"}]})");
}

TEST(Reference, Grammars) {
    EXPECT_TRUE(valid_repository("library/nginx"));
    EXPECT_TRUE(valid_repository("a__b/c-d/e.f/g--h"));
    EXPECT_FALSE(valid_repository("a___b"));
    EXPECT_FALSE(valid_repository("a/"));
    EXPECT_FALSE(valid_repository("-a"));
    EXPECT_FALSE(valid_repository(std::string(256, 'a')));
    EXPECT_TRUE(valid_tag("v1.2.3_rc-1"));
    EXPECT_FALSE(valid_tag(".hidden"));
    EXPECT_FALSE(valid_tag(""));
}

TEST(MediaTypes, AcceptClassCountsOnlyTheFourModernTypes) {
    EXPECT_EQ(accept_class("*/*"), 0);
    EXPECT_EQ(accept_class(""), 0);
    EXPECT_EQ(accept_class("application/vnd.oci.image.index.v1+json"), accepts_oci_index);
    auto containerd =
        "application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";
    EXPECT_EQ(accept_class(containerd), 15);
    EXPECT_EQ(accept_class("application/vnd.oci.image.manifest.v1+json;q=0.5"),
              accepts_oci_manifest);
    EXPECT_EQ(strip_parameters("application/json; charset=utf-8"), "application/json");
}

TEST(Range, SingleRanges) {
    auto r = parse_range("bytes=0-9", 100);
    EXPECT_EQ(r.outcome, range_outcome::partial);
    EXPECT_EQ(r.range.first, 0u);
    EXPECT_EQ(r.range.last, 9u);
    r = parse_range("bytes=90-", 100);
    EXPECT_EQ(r.range.first, 90u);
    EXPECT_EQ(r.range.last, 99u);
    r = parse_range("bytes=-10", 100);
    EXPECT_EQ(r.range.first, 90u);
    EXPECT_EQ(r.range.last, 99u);
    r = parse_range("bytes=50-1000", 100);
    EXPECT_EQ(r.range.last, 99u);
    r = parse_range("bytes=-1000", 100);
    EXPECT_EQ(r.range.first, 0u);
}

TEST(Range, UnsatisfiableAndIgnored) {
    EXPECT_EQ(parse_range("bytes=100-", 100).outcome, range_outcome::unsatisfiable);
    EXPECT_EQ(parse_range("bytes=-0", 100).outcome, range_outcome::unsatisfiable);
    EXPECT_EQ(parse_range("bytes=0-1,5-6", 100).outcome, range_outcome::full);
    EXPECT_EQ(parse_range("items=0-1", 100).outcome, range_outcome::full);
    EXPECT_EQ(parse_range("bytes=5-2", 100).outcome, range_outcome::full);
    EXPECT_EQ(parse_range("bytes=x-2", 100).outcome, range_outcome::full);
    EXPECT_EQ(parse_range("", 100).outcome, range_outcome::full);
}

TEST(MediaTypes, AClassAdmitsTheTypesItNamesAndTheEmptyClassAdmitsAnything) {
    std::string list(docker_manifest_list), manifest(docker_manifest), index(oci_index);
    EXPECT_TRUE(accept_class_admits(accepts_all, list));
    EXPECT_TRUE(accept_class_admits(accepts_docker_manifest, manifest));
    EXPECT_FALSE(accept_class_admits(accepts_docker_manifest, list));
    EXPECT_FALSE(accept_class_admits(accepts_oci_manifest, index));
    EXPECT_TRUE(accept_class_admits(accepts_oci_manifest | accepts_oci_index, index));
    EXPECT_TRUE(accept_class_admits(0, list)) << "*/* only, or no Accept at all";
    EXPECT_FALSE(accept_class_admits(accepts_all,
                                     "application/vnd.docker.distribution.manifest.v1+prettyjws"));
    EXPECT_TRUE(
        accept_class_admits(0, "application/vnd.docker.distribution.manifest.v1+prettyjws"));
}
