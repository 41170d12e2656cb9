// Signed Docker schema 1 manifests: the digest names the JWS payload (issue 18, point 1).
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <string>

#include "storage/manifest_store.hpp"

using namespace regpin::storage;

namespace {

std::string b64url(const std::string& in) {
    std::string out(4 * ((in.size() + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
    return out;
}

const std::string payload =
    "{\n   \"schemaVersion\": 1,\n   \"name\": \"team/app\",\n   \"tag\": \"v1\",\n"
    "   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []\n}";

// The body as Distribution lays it out: the payload up to its last "\n}", the signatures,
// then the tail. `length` overrides formatLength.
std::string signed_body(const std::string& p, long length = -1,
                        const std::string& tail_override = "") {
    auto cut = p.rfind("\n}");
    std::string header = "{\"formatLength\":" + std::to_string(length < 0 ? long(cut) : length) +
                         ",\"formatTail\":\"" +
                         b64url(tail_override.empty() ? p.substr(cut) : tail_override) +
                         "\",\"time\":\"2026-12-05T00:00:00Z\"}";
    return p.substr(0, cut) +
           ",\n   \"signatures\": [{\"header\":{\"alg\":\"ES256\"},\"signature\":\"c2ln\"," +
           "\"protected\":\"" + b64url(header) + "\"}]" + p.substr(cut);
}

}  // namespace

TEST(Schema1, TheDigestNamesTheSignedPayloadNotTheBody) {
    manifest m{std::string(docker_schema1_signed), signed_body(payload)};
    auto d = sha256_of(payload);
    EXPECT_EQ(digested_bytes(m), payload);
    EXPECT_EQ(manifest_digest(m)->str(), d.str());
    EXPECT_TRUE(manifest_matches(d, m));
    EXPECT_FALSE(manifest_matches(sha256_of(m.bytes), m));
    // The same bytes under another media type are addressed by their own hash.
    manifest plain{"application/vnd.docker.distribution.manifest.v1+json", m.bytes};
    EXPECT_TRUE(manifest_matches(sha256_of(m.bytes), plain));
    EXPECT_FALSE(manifest_matches(d, plain));
}

TEST(Schema1, ForgedOrBrokenSignaturesMatchNothing) {
    auto d = sha256_of(payload);
    auto body = signed_body(payload);
    // A byte changed before formatLength: another payload, not d's.
    auto forged = body;
    forged.replace(forged.find("amd64"), 5, "arm64");
    EXPECT_FALSE(manifest_matches(d, {std::string(docker_schema1_signed), forged}));
    // formatLength past the end, a tail that is not base64url, no signatures, not JSON.
    for (const auto& bad : {signed_body(payload, 100000), signed_body(payload, 0),
                            std::string("{\"schemaVersion\":1}"), std::string("not json"),
                            std::string("{\"signatures\":[{\"protected\":\"!!\"}]}")}) {
        manifest m{std::string(docker_schema1_signed), bad};
        EXPECT_FALSE(digested_bytes(m).has_value()) << bad;
        EXPECT_FALSE(manifest_matches(d, m)) << bad;
    }
    // A payload that still carries signatures is not one.
    auto nested = signed_body(payload, -1, "\n   ,\"signatures\": []\n}");
    EXPECT_FALSE(digested_bytes({std::string(docker_schema1_signed), nested}).has_value());
}
