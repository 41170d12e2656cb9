#include "proxy/upstream/challenge.hpp"
#include "proxy/upstream/token_cache.hpp"

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

namespace {

using regpin::proxy::upstream::token_cache;
using namespace std::chrono_literals;

TEST(TokenCache, ALoopOverRandomScopesNeverGrowsItPastItsCapacity) {
    token_cache cache(64);
    auto now = token_cache::clock::now();
    for (int i = 0; i < 10000; ++i)
        cache.put("repository:random/" + std::to_string(i) + ":pull", "t", now + 1h, now);
    EXPECT_EQ(cache.size(), 64u);
    // The newest stay, the oldest went.
    EXPECT_TRUE(cache.find("repository:random/9999:pull", now));
    EXPECT_FALSE(cache.find("repository:random/0:pull", now));
}

TEST(TokenCache, TheLeastRecentlyUsedGoesFirst) {
    token_cache cache(2);
    auto now = token_cache::clock::now();
    cache.put("a", "ta", now + 1h, now);
    cache.put("b", "tb", now + 1h, now);
    EXPECT_EQ(cache.find("a", now), "ta");  // a is now the most recent
    cache.put("c", "tc", now + 1h, now);
    EXPECT_TRUE(cache.find("a", now));
    EXPECT_FALSE(cache.find("b", now));
    EXPECT_TRUE(cache.find("c", now));
}

TEST(TokenCache, ExpiredTokensAreNeverReturnedAndAreSweptWithoutBeingLookedUp) {
    token_cache cache(1000);
    auto now = token_cache::clock::now();
    for (int i = 0; i < 100; ++i) cache.put("old" + std::to_string(i), "t", now + 10s, now);
    EXPECT_FALSE(cache.find("old1", now + 11s));
    EXPECT_EQ(cache.size(), 99u);
    // Adding a token a sweep interval later drops every expired one.
    cache.put("new", "t", now + 1h, now + token_cache::sweep_interval + 1s);
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache.find("new", now + 20s), "t");
}

}  // namespace
