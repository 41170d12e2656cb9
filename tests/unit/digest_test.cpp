#include "storage/digest.hpp"

#include <gtest/gtest.h>

using regpin::storage::digest;

TEST(Digest, Sha256OfKnownInput) {
    EXPECT_EQ(regpin::storage::sha256_of("abc").str(),
              "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(regpin::storage::sha256_of("").str(),
              "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Digest, StreamingEqualsOneShot) {
    std::string data(100000, 'x');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
    regpin::storage::hasher h;
    h.update(std::string_view(data).substr(0, 12345));
    h.update(std::string_view(data).substr(12345));
    EXPECT_EQ(h.finish(), regpin::storage::sha256_of(data));
}

TEST(Digest, ParseAcceptsOnlyVerifiableWellFormedDigests) {
    auto ok =
        digest::parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->algorithm(), "sha256");
    EXPECT_EQ(ok->hex().size(), 64u);
    EXPECT_FALSE(
        digest::parse("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    EXPECT_FALSE(digest::parse("sha256:abc"));
    EXPECT_FALSE(digest::parse("sha256"));
    EXPECT_FALSE(digest::parse(":abc"));
    EXPECT_FALSE(digest::parse("sha256:../../etc/passwd"));
    EXPECT_EQ(digest::classify("blake3:abcd"), digest::problem::unsupported_algorithm);
    EXPECT_EQ(digest::classify("sha256:xyz"), digest::problem::malformed);
    EXPECT_EQ(digest::classify("SHA256:abcd"), digest::problem::malformed);
    EXPECT_TRUE(digest::parse("sha512:" + std::string(128, 'a')));
}

TEST(Digest, MatchesUsesTheDigestsAlgorithm) {
    auto d512 = regpin::storage::hasher("sha512");
    d512.update(std::string_view("abc"));
    auto d = d512.finish();
    EXPECT_TRUE(regpin::storage::matches(d, "abc"));
    EXPECT_FALSE(regpin::storage::matches(d, "abd"));
}
