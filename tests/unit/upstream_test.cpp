#include "proxy/upstream/challenge.hpp"

#include <gtest/gtest.h>

using regpin::proxy::upstream::parse_challenge;

TEST(Challenge, DockerHubBearer) {
    auto c = parse_challenge(
        R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull")");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->scheme, "bearer");
    EXPECT_EQ(c->realm, "https://auth.docker.io/token");
    EXPECT_EQ(c->service, "registry.docker.io");
    EXPECT_EQ(c->scope, "repository:library/alpine:pull");
}

TEST(Challenge, InsufficientScopeAndSpacing) {
    auto c = parse_challenge(
        R"(Bearer realm="https://r/t", error="insufficient_scope" ,scope="a:b:pull,push")");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->error, "insufficient_scope");
    EXPECT_EQ(c->scope, "a:b:pull,push");
}

TEST(Challenge, BasicAndUnquoted) {
    auto c = parse_challenge("Basic realm=registry");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->scheme, "basic");
    EXPECT_EQ(c->realm, "registry");
}

TEST(Challenge, MalformedIsRejected) {
    EXPECT_FALSE(parse_challenge(""));
    EXPECT_FALSE(parse_challenge(R"(Bearer realm="unterminated)"));
}
