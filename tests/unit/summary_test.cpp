#include "proxy/pins/summary.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "proxy/oci/media_types.hpp"
#include "storage/digest.hpp"

using namespace regpin::proxy::pins;
namespace oci = regpin::proxy::oci;
using nlohmann::json;

namespace {

std::string layer(char c) { return "sha256:" + std::string(64, c); }

std::string digest_of(const std::string& bytes) { return regpin::storage::sha256_of(bytes).str(); }

std::string config_blob(const std::string& created, const std::string& revision,
                        const std::string& version, const std::string& arch = "amd64") {
    return json{{"created", created},
                {"architecture", arch},
                {"os", "linux"},
                {"config",
                 {{"Labels",
                   {{"org.opencontainers.image.revision", revision},
                    {"org.opencontainers.image.version", version}}}}},
                {"rootfs", {{"type", "layers"}}}}
        .dump();
}

std::string manifest(std::string_view media_type, const std::string& config,
                     const std::vector<std::string>& layers) {
    json l = json::array();
    for (const auto& d : layers) l.push_back({{"mediaType", "layer"}, {"digest", d}, {"size", 1}});
    return json{{"schemaVersion", 2},
                {"mediaType", media_type},
                {"config", {{"mediaType", "config"}, {"digest", digest_of(config)}, {"size", 1}}},
                {"layers", l}}
        .dump();
}

json entry(const std::string& child, std::string os, std::string arch, std::string variant = "") {
    json platform = {{"os", os}, {"architecture", arch}};
    if (!variant.empty()) platform["variant"] = variant;
    return {{"mediaType", oci::oci_manifest},
            {"digest", digest_of(child)},
            {"size", child.size()},
            {"platform", platform}};
}

json attestation(const std::string& child) {
    return {{"mediaType", oci::oci_manifest},
            {"digest", digest_of(child)},
            {"size", 1},
            {"platform", {{"os", "unknown"}, {"architecture", "unknown"}}},
            {"annotations", {{"vnd.docker.reference.type", "attestation-manifest"}}}};
}

// A vector, not a json: `{one_entry}` as a json would be the entry itself, not an array of it.
std::string index(std::string_view media_type, const std::vector<json>& entries) {
    return json{{"schemaVersion", 2}, {"mediaType", media_type}, {"manifests", json(entries)}}
        .dump();
}

// Fetches whatever the plan asks for from `store` until nothing is left, like the caller would.
void fetch_all(image_docs& pinned, image_docs& upstream,
               const std::map<std::string, std::string>& store, int* rounds = nullptr) {
    int n = 0;
    for (auto plan = what_to_fetch(pinned, upstream); !plan.empty() && n < 10;
         plan = what_to_fetch(pinned, upstream), ++n) {
        auto fill = [&](image_docs& side, const needed& need) {
            for (const auto& d : need.manifests) side.manifests_by_digest[d] = store.at(d);
            for (const auto& d : need.configs) side.configs_by_digest[d] = store.at(d);
        };
        fill(pinned, plan.pinned);
        fill(upstream, plan.upstream);
    }
    if (rounds) *rounds = n;
}

// The issue's pair: upstream rebuilt linux/amd64 from a new revision (3 of 4 layers shared)
// and added linux/arm64.
struct known_pair {
    std::map<std::string, std::string> store;
    image_docs pinned, upstream;
    std::string pinned_amd64_config, upstream_amd64_config;

    known_pair() {
        pinned_amd64_config = config_blob("2026-01-01T00:00:00Z", "abc123", "1.4");
        upstream_amd64_config = config_blob("2026-02-01T00:00:00Z", "def456", "1.4");
        auto arm_config = config_blob("2026-02-01T00:00:00Z", "def456", "1.4", "arm64");
        auto pinned_amd64 = manifest(oci::oci_manifest, pinned_amd64_config,
                                     {layer('1'), layer('2'), layer('3'), layer('4')});
        auto upstream_amd64 = manifest(oci::oci_manifest, upstream_amd64_config,
                                       {layer('1'), layer('2'), layer('3'), layer('5')});
        auto upstream_arm64 =
            manifest(oci::oci_manifest, arm_config, {layer('6'), layer('7'), layer('8')});
        auto att = manifest(oci::oci_manifest, "{}", {layer('9')});
        for (const auto& doc : {pinned_amd64_config, upstream_amd64_config, arm_config,
                                pinned_amd64, upstream_amd64, upstream_arm64, att})
            store[digest_of(doc)] = doc;
        pinned.media_type = std::string(oci::oci_index);
        pinned.manifest_bytes =
            index(oci::oci_index, {entry(pinned_amd64, "linux", "amd64"), attestation(att)});
        upstream.media_type = std::string(oci::oci_index) + "; charset=utf-8";
        upstream.manifest_bytes =
            index(oci::oci_index, {entry(upstream_arm64, "linux", "arm64"),
                                   entry(upstream_amd64, "linux", "amd64"), attestation(att)});
    }
};

}  // namespace

TEST(Summary, KnownPairReportsPlatformAddedLayersSharedAndRevisionChanged) {
    known_pair k;
    int rounds = 0;
    fetch_all(k.pinned, k.upstream, k.store, &rounds);
    EXPECT_EQ(rounds, 2);  // the amd64 children, then their configs

    auto s = summarize(k.pinned, k.upstream);
    EXPECT_EQ(s["media_type"],
              (json{{"pinned", oci::oci_index}, {"upstream", oci::oci_index}, {"changed", false}}));
    EXPECT_EQ(s["platforms"], (json{{"added", {"linux/arm64"}},
                                    {"removed", json::array()},
                                    {"changed", {"linux/amd64"}},
                                    {"unchanged_count", 0}}));
    EXPECT_EQ(s["layers"], (json{{"platform", "linux/amd64"},
                                 {"shared", 3},
                                 {"total_pinned", 4},
                                 {"total_upstream", 4}}));
    EXPECT_EQ(s["config"]["digest"], (json{{"pinned", digest_of(k.pinned_amd64_config)},
                                           {"upstream", digest_of(k.upstream_amd64_config)}}));
    EXPECT_EQ(s["config"]["created"],
              (json{{"pinned", "2026-01-01T00:00:00Z"}, {"upstream", "2026-02-01T00:00:00Z"}}));
    EXPECT_EQ(s["config"]["revision"], (json{{"pinned", "abc123"}, {"upstream", "def456"}}));
    EXPECT_EQ(s["config"]["version"], (json{{"pinned", "1.4"}, {"upstream", "1.4"}}));
    EXPECT_EQ(s["errors"], json::array());
    EXPECT_EQ(s["text"],
              "index: 1 platform added (linux/arm64), 1 changed; linux/amd64 shares 3 of 4 "
              "layers; revision abc123 -> def456; same version 1.4; created "
              "2026-01-01T00:00:00Z -> 2026-02-01T00:00:00Z");
    EXPECT_EQ(s.size(), 6u);  // media_type, platforms, layers, config, errors, text
}

TEST(Summary, WhatToFetchAsksForTheRepresentativeChildrenThenTheirConfigs) {
    known_pair k;
    auto plan = what_to_fetch(k.pinned, k.upstream);
    ASSERT_EQ(plan.pinned.manifests.size(), 1u);
    ASSERT_EQ(plan.upstream.manifests.size(), 1u);
    EXPECT_TRUE(plan.pinned.configs.empty());
    EXPECT_NE(plan.pinned.manifests[0], plan.upstream.manifests[0]);
    // Nothing fetched yet: the summary still reads what it has.
    auto s = summarize(k.pinned, k.upstream);
    EXPECT_EQ(s["platforms"]["added"], json{"linux/arm64"});
    EXPECT_TRUE(s["layers"]["shared"].is_null());
    EXPECT_EQ(s["layers"]["platform"], "linux/amd64");
    EXPECT_TRUE(s["config"]["revision"]["pinned"].is_null());
    EXPECT_EQ(s["text"], "index: 1 platform added (linux/arm64), 1 changed");
}

TEST(Summary, SingleManifestsAreComparedDirectly) {
    auto c1 = config_blob("2026-01-01T00:00:00Z", "aaa", "1");
    auto c2 = config_blob("2026-01-02T00:00:00Z", "aaa", "1");
    image_docs p{std::string(oci::docker_manifest),
                 manifest(oci::docker_manifest, c1, {layer('1'), layer('2')}),
                 {},
                 {{digest_of(c1), c1}}};
    image_docs u{std::string(oci::docker_manifest),
                 manifest(oci::docker_manifest, c2, {layer('1'), layer('2'), layer('3')}),
                 {},
                 {{digest_of(c2), c2}}};
    EXPECT_TRUE(what_to_fetch(p, u).empty());
    auto s = summarize(p, u);
    EXPECT_TRUE(s["platforms"].is_null());
    EXPECT_EQ(
        s["layers"],
        (json{{"platform", nullptr}, {"shared", 2}, {"total_pinned", 2}, {"total_upstream", 3}}));
    EXPECT_EQ(s["text"],
              "manifest: shares 2 layers (2 pinned, 3 upstream); same revision aaa; same version "
              "1; created 2026-01-01T00:00:00Z -> 2026-01-02T00:00:00Z");
}

TEST(Summary, MediaTypeChangeFromDockerListToOciIndexIsNamed) {
    auto c = config_blob("2026-01-01T00:00:00Z", "r", "1");
    auto m = manifest(oci::oci_manifest, c, {layer('1')});
    std::map<std::string, std::string> store = {{digest_of(c), c}, {digest_of(m), m}};
    image_docs p{"", index(oci::docker_manifest_list, {entry(m, "linux", "amd64")}), {}, {}};
    image_docs u{"", index(oci::oci_index, {entry(m, "linux", "amd64")}), {}, {}};
    fetch_all(p, u, store);
    auto s = summarize(p, u);
    EXPECT_EQ(s["media_type"], (json{{"pinned", oci::docker_manifest_list},
                                     {"upstream", oci::oci_index},
                                     {"changed", true}}));
    EXPECT_EQ(s["platforms"]["unchanged_count"], 1);
    EXPECT_EQ(s["text"],
              "docker manifest list -> oci index: same 1 platform; linux/amd64 shares 1 of 1 "
              "layers; same config");
}

TEST(Summary, SingleManifestBecomingAnIndexComparesItsOwnPlatform) {
    auto c = config_blob("2026-01-01T00:00:00Z", "r", "1", "arm64");
    auto m = manifest(oci::oci_manifest, c, {layer('1'), layer('2')});
    auto amd = manifest(oci::oci_manifest, config_blob("x", "r", "1"), {layer('3')});
    std::map<std::string, std::string> store = {{digest_of(c), c}, {digest_of(m), m}};
    image_docs p{std::string(oci::oci_manifest), m, {}, {}};
    image_docs u{std::string(oci::oci_index),
                 index(oci::oci_index, {entry(amd, "linux", "amd64"), entry(m, "linux", "arm64")}),
                 {},
                 {}};
    store[digest_of(amd)] = amd;
    store[digest_of(config_blob("x", "r", "1"))] = config_blob("x", "r", "1");
    fetch_all(p, u, store);
    auto s = summarize(p, u);
    EXPECT_EQ(s["platforms"], (json{{"added", {"linux/amd64"}},
                                    {"removed", json::array()},
                                    {"changed", json::array()},
                                    {"unchanged_count", 1}}));
    EXPECT_EQ(s["layers"]["platform"], "linux/arm64");
    EXPECT_EQ(s["layers"]["shared"], 2);
    EXPECT_EQ(s["text"],
              "oci manifest -> oci index: 1 platform added (linux/amd64); linux/arm64 shares 2 of "
              "2 layers; same config");
}

TEST(Summary, FirstCommonPlatformWhenNotBothHaveLinuxAmd64) {
    auto a = manifest(oci::oci_manifest, "{}", {layer('1')});
    auto b = manifest(oci::oci_manifest, "{}", {layer('2')});
    image_docs p{
        "",
        index(oci::oci_index, {entry(a, "linux", "amd64"), entry(a, "linux", "arm", "v7")}),
        {},
        {}};
    image_docs u{"", index(oci::oci_index, {entry(b, "linux", "arm", "v7")}), {}, {}};
    auto plan = what_to_fetch(p, u);
    EXPECT_EQ(plan.pinned.manifests, std::vector<std::string>{digest_of(a)});
    EXPECT_EQ(summarize(p, u)["layers"]["platform"], "linux/arm/v7");

    image_docs none{"", index(oci::oci_index, {entry(b, "windows", "amd64")}), {}, {}};
    auto s = summarize(p, none);
    EXPECT_TRUE(s["layers"]["platform"].is_null());
    EXPECT_EQ(s["text"],
              "index: 1 platform added (windows/amd64), 2 removed (linux/amd64, linux/arm/v7); "
              "no common platform");
}

TEST(Summary, MalformedDocumentsNeverThrowAndSayWhatCouldNotBeRead) {
    known_pair k;
    image_docs bad{std::string(oci::oci_index), "{not json", {}, {}};
    auto s = summarize(bad, k.upstream);
    EXPECT_EQ(s["media_type"]["pinned"], oci::oci_index);
    EXPECT_TRUE(s["platforms"].is_null());
    EXPECT_TRUE(s["layers"]["shared"].is_null());
    EXPECT_TRUE(s["config"]["created"]["pinned"].is_null());
    EXPECT_EQ(s["errors"], json{"pinned manifest (not JSON)"});
    EXPECT_EQ(s["text"], "unreadable -> index: could not read pinned manifest (not JSON)");

    s = summarize(image_docs{}, image_docs{"text/html", "<html>", {}, {}});
    EXPECT_TRUE(s["media_type"]["pinned"].is_null());
    EXPECT_EQ(s["media_type"]["upstream"], "text/html");
    EXPECT_EQ(s["errors"].size(), 2u);
    EXPECT_NO_THROW(s.dump());
}

TEST(Summary, MalformedChildAndConfigAreReportedNotFatal) {
    known_pair k;
    fetch_all(k.pinned, k.upstream, k.store);
    for (auto& [d, bytes] : k.pinned.manifests_by_digest) bytes = "[]";
    for (auto& [d, bytes] : k.upstream.configs_by_digest) bytes = "\xff\xfe";
    auto s = summarize(k.pinned, k.upstream);
    EXPECT_EQ(s["platforms"]["added"], json{"linux/arm64"});
    EXPECT_TRUE(s["layers"]["shared"].is_null());
    EXPECT_TRUE(s["config"]["revision"]["upstream"].is_null());
    ASSERT_EQ(s["errors"].size(), 2u);
    EXPECT_EQ(s["errors"][0], "pinned linux/amd64 manifest (not an image manifest)");
    EXPECT_EQ(s["errors"][1].get<std::string>().rfind("upstream config sha256:", 0), 0u);
}

TEST(Summary, HostileShapesAndBytesAreSafe) {
    std::string deep(5000, '[');
    std::string deep_closed = deep + std::string(deep.size(), ']');
    std::vector<std::string> docs = {
        deep,
        deep_closed,
        R"({"manifests": [{"digest": "d", "platform": {"os": "linux", "architecture": "amd64"}}]})",
        R"({"manifests": 5})",
        R"({"manifests": [1, "x", {"platform": 5}, {"digest": 7, "platform": {"os": 1}}]})",
        R"({"mediaType": 3, "layers": "x"})",
        R"({"layers": [1, {"digest": []}], "config": {"digest": {}}})",
        std::string("{\"mediaType\": \"a\xc3\x28\"}"),
        "",
        "null",
    };
    for (const auto& a : docs)
        for (const auto& b : docs) {
            image_docs p{"", a, {{"d", deep_closed}}, {}},
                u{"\x01\xff", b, {{"d", a}}, {{"y", deep}}};
            EXPECT_NO_THROW({
                auto s = summarize(p, u);
                (void)s.dump();
                (void)what_to_fetch(p, u);
            });
        }
}
