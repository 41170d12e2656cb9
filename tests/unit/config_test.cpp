#include "config/config.hpp"

#include <gtest/gtest.h>

using regpin::config::config_error;
using regpin::config::load_json;
using regpin::config::token_scope;

namespace {

// The key named by the error load_json throws for `text`.
std::string failing_key(const std::string& text) {
    try {
        load_json(text);
    } catch (const config_error& e) {
        return e.key();
    }
    return "<no error>";
}

}  // namespace

TEST(Config, EmptyObjectGivesTheFourDefaultUpstreamsWithDockerHubFirst) {
    auto s = load_json("{}");
    ASSERT_EQ(s.upstreams.size(), 4u);
    EXPECT_EQ(s.upstreams[0].registry, "docker.io");
    EXPECT_EQ(s.upstreams[0].urls, std::vector<std::string>{"https://registry-1.docker.io"});
    EXPECT_EQ(s.upstreams[3].registry, "registry.k8s.io");
    EXPECT_EQ(s.default_upstream, "docker.io");
    EXPECT_EQ(s.listen, "127.0.0.1:5000");
    EXPECT_EQ(s.manifest_max_bytes, 4u * 1024 * 1024);
    EXPECT_TRUE(s.upstreams[1].tls_verify);
}

TEST(Config, FullUpstreamIsParsed) {
    ::setenv("REGPIN_TEST_PW", "s3cret", 1);
    auto s = load_json(R"({"listen":"0.0.0.0:5001","data_dir":"/var/lib/regpin",
        "upstreams":[{"registry":"ghcr.io","url":"https://ghcr.io/","username":"bot",
                      "password_env":"REGPIN_TEST_PW","connect_timeout_ms":100,"read_timeout_ms":200,
                      "tls_verify":false}]})");
    ASSERT_EQ(s.upstreams.size(), 1u);
    const auto& u = s.upstreams[0];
    EXPECT_EQ(u.urls, std::vector<std::string>{"https://ghcr.io"});
    EXPECT_EQ(u.password, "s3cret");
    EXPECT_EQ(u.connect_timeout.count(), 100);
    EXPECT_EQ(u.read_timeout.count(), 200);
    EXPECT_FALSE(u.tls_verify);
    EXPECT_EQ(s.default_upstream, "ghcr.io");
}

TEST(Config, DockerHubGetsItsAliasesByDefault) {
    auto s = load_json(R"({"upstreams":[{"registry":"docker.io","url":"http://127.0.0.1:1"}]})");
    EXPECT_EQ(s.upstreams[0].aliases,
              (std::vector<std::string>{"registry-1.docker.io", "index.docker.io"}));
}

TEST(Config, AnUpstreamListsItsMirrorsInOrder) {
    auto s = load_json(
        R"({"upstreams":[{"registry":"docker.io","urls":["https://mirror.gcr.io/","https://registry-1.docker.io"]}]})");
    EXPECT_EQ(s.upstreams[0].urls,
              (std::vector<std::string>{"https://mirror.gcr.io", "https://registry-1.docker.io"}));
}

TEST(Config, ErrorsNameTheKey) {
    EXPECT_EQ(failing_key("not json"), "config");
    EXPECT_EQ(failing_key(R"({"listen":5})"), "listen");
    EXPECT_EQ(failing_key(R"({"listen":"nohost"})"), "listen");
    EXPECT_EQ(failing_key(R"({"listen":"127.0.0.1:99999"})"), "listen");
    EXPECT_EQ(failing_key(R"({"lisen":"127.0.0.1:1"})"), "lisen");
    EXPECT_EQ(failing_key(R"({"upstreams":[]})"), "upstreams");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"url":"http://x"}]})"), "upstreams[0].registry");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","url":"ftp://x"}]})"),
              "upstreams[0].url");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","url":"http://x/path"}]})"),
              "upstreams[0].url");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","url":"http://u:p@x"}]})"),
              "upstreams[0].url");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"A.io","url":"http://x"}]})"),
              "upstreams[0].registry");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io"}]})"), "upstreams[0].url");
    EXPECT_EQ(
        failing_key(R"({"upstreams":[{"registry":"a.io","url":"http://x","urls":["http://y"]}]})"),
        "upstreams[0].url");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","urls":[]}]})"), "upstreams[0].urls");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","urls":["http://y","ftp://z"]}]})"),
              "upstreams[0].urls[1]");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","urls":["http://y","http://y/"]}]})"),
              "upstreams[0].urls[1]");
    EXPECT_EQ(
        failing_key(
            R"({"upstreams":[{"registry":"a.io","url":"http://x"},{"registry":"a.io","url":"http://y"}]})"),
        "upstreams[1].registry");
    EXPECT_EQ(
        failing_key(R"({"upstreams":[{"registry":"a.io","url":"http://x","read_timeout_ms":0}]})"),
        "upstreams[0].read_timeout_ms");
    EXPECT_EQ(failing_key(R"({"upstreams":[{"registry":"a.io","url":"http://x","password":"p"}]})"),
              "upstreams[0].username");
    EXPECT_EQ(
        failing_key(
            R"({"upstreams":[{"registry":"a.io","url":"http://x","password_env":"REGPIN_UNSET_VAR_X"}]})"),
        "upstreams[0].password_env");
    EXPECT_EQ(
        failing_key(
            R"({"upstreams":[{"registry":"a.io","url":"http://x","ca_file":"/nonexistent/ca.pem"}]})"),
        "upstreams[0].ca_file");
    EXPECT_EQ(
        failing_key(
            R"({"default_upstream":"quay.io","upstreams":[{"registry":"a.io","url":"http://x"}]})"),
        "default_upstream");
    EXPECT_EQ(failing_key(R"({"log_level":"loud"})"), "log_level");
}

TEST(Config, ErrorMessageSaysWhatIsWrong) {
    try {
        load_json(R"({"upstreams":[{"registry":"a.io","url":"ftp://x"}]})");
        FAIL() << "no error";
    } catch (const config_error& e) {
        EXPECT_STREQ(e.what(),
                     "upstreams[0].url: must start with http:// or https://, got 'ftp://x'");
    }
}

TEST(Config, UpstreamFlagSplitsAtTheFirstEquals) {
    auto u = regpin::config::parse_upstream_flag("127.0.0.1:5000=http://127.0.0.1:5000");
    EXPECT_EQ(u.registry, "127.0.0.1:5000");
    EXPECT_EQ(u.urls, std::vector<std::string>{"http://127.0.0.1:5000"});
    EXPECT_THROW(regpin::config::parse_upstream_flag("docker.io"), config_error);
    EXPECT_THROW(regpin::config::parse_upstream_flag("=http://x"), config_error);
}

TEST(Config, HostPortAcceptsIpv6) {
    auto [h, p] = regpin::config::parse_host_port("[::1]:5000", "listen");
    EXPECT_EQ(h, "::1");
    EXPECT_EQ(p, 5000);
}

TEST(Config, PoliciesAdminAndWebhooksAreParsed) {
    ::setenv("REGPIN_TEST_ADMIN", "0123456789abcdef0123", 1);
    auto s = load_json(R"({
        "pin_checks": {"revalidate_after_s": 30, "concurrency": 2, "sweep_interval_s": 5, "sweep_batch": 7},
        "policies": [{"match": "docker.io/library/*:*", "policy": "follow", "revalidate_after_s": 60},
                     {"match": "**", "policy": "reject"}],
        "admin": {"listen": "127.0.0.1:0", "tokens": [{"name": "ops", "token_env": "REGPIN_TEST_ADMIN"}]},
        "webhooks": [{"url": "https://hooks.example/regpin", "secret": "k", "timeout_ms": 1000}]})");
    EXPECT_EQ(s.checks.revalidate_after.count(), 30);
    EXPECT_EQ(s.checks.concurrency, 2);
    EXPECT_EQ(s.checks.sweep_batch, 7);
    ASSERT_EQ(s.policies.size(), 2u);
    EXPECT_EQ(s.policies[0].policy, "follow");
    EXPECT_EQ(s.policies[0].revalidate_after->count(), 60);
    EXPECT_FALSE(s.policies[1].revalidate_after);
    ASSERT_EQ(s.admin.tokens.size(), 1u);
    EXPECT_EQ(s.admin.tokens[0].name, "ops");
    EXPECT_EQ(s.admin.tokens[0].value, "0123456789abcdef0123");
    ASSERT_EQ(s.webhooks.size(), 1u);
    EXPECT_EQ(s.webhooks[0].secret, "k");
}

TEST(Config, PolicyAdminAndWebhookErrorsNameTheKey) {
    EXPECT_EQ(failing_key(R"({"policies":[{"match":"**","policy":"maybe"}]})"),
              "policies[0].policy");
    EXPECT_EQ(failing_key(R"({"policies":[{"policy":"pin"}]})"), "policies[0].match");
    EXPECT_EQ(failing_key(R"({"admin":{"tokens":[{"name":"a","token":"short"}]}})"),
              "admin.tokens[0]");
    EXPECT_EQ(failing_key(R"({"admin":{"tokens":[{"name":"a"}]}})"), "admin.tokens[0]");
    EXPECT_EQ(failing_key(R"({"admin":{"listen":"nope"}})"), "admin.listen");
    EXPECT_EQ(failing_key(R"({"webhooks":[{"url":"ftp://x"}]})"), "webhooks[0].url");
    EXPECT_EQ(failing_key(R"({"pin_checks":{"concurrency":0}})"), "pin_checks.concurrency");
    EXPECT_EQ(failing_key(R"({"pin_checks":{"bogus":1}})"), "pin_checks.bogus");
}

TEST(Config, NumberPastDoubleIsAConfigErrorNotACrash) {
    // Found by tests/fuzz/config_fuzz: nlohmann throws out_of_range, not parse_error.
    EXPECT_EQ(failing_key(R"({"threads": 1e999999})"), "config");
}

TEST(Config, AnEmptyKeyIsNamedInTheError) {
    // Found by tests/fuzz/config_fuzz: the error for key "" named no key at all.
    EXPECT_EQ(failing_key(R"({"": 1})"), "\"\"");
    EXPECT_EQ(failing_key(R"({"admin": {"": 1}})"), "admin.\"\"");
}

TEST(Config, PinStoreDefaultsToEmbeddedAndParsesEtcd) {
    EXPECT_EQ(load_json("{}").pin_store.backend, "embedded");
    auto s = load_json(
        R"({"pin_store":{"backend":"etcd","endpoints":["http://10.0.0.1:2379","https://e:2379"],
            "prefix":"/fleet","timeout_ms":500,"replica":"r1","username":"regpin","password":"pw"}})");
    EXPECT_EQ(s.pin_store.backend, "etcd");
    ASSERT_EQ(s.pin_store.endpoints.size(), 2u);
    EXPECT_EQ(s.pin_store.endpoints[1], "https://e:2379");
    EXPECT_EQ(s.pin_store.prefix, "/fleet/") << "a prefix always ends with '/'";
    EXPECT_EQ(s.pin_store.timeout.count(), 500);
    EXPECT_EQ(s.pin_store.replica, "r1");
    EXPECT_EQ(s.pin_store.password, "pw");
}

TEST(Config, PinStoreErrorsNameTheKey) {
    EXPECT_EQ(failing_key(R"({"pin_store":{"backend":"consul"}})"), "pin_store.backend");
    EXPECT_EQ(failing_key(R"({"pin_store":{"backend":"etcd"}})"), "pin_store.endpoints");
    EXPECT_EQ(failing_key(R"({"pin_store":{"backend":"etcd","endpoints":["10.0.0.1:2379"]}})"),
              "pin_store.endpoints[0]");
    EXPECT_EQ(failing_key(R"({"pin_store":{"backend":"etcd","endpoints":["http://u:p@e:2379"]}})"),
              "pin_store.endpoints[0]");
    EXPECT_EQ(failing_key(R"({"pin_store":{"prefix":"regpin"}})"), "pin_store.prefix");
    EXPECT_EQ(failing_key(R"({"pin_store":{"cert_file":"/c.pem"}})"), "pin_store.cert_file");
    EXPECT_EQ(failing_key(R"({"pin_store":{"password":"pw"}})"), "pin_store.username");
    EXPECT_EQ(failing_key(R"({"pin_store":{"endpoint":"http://e:2379"}})"), "pin_store.endpoint");
}

TEST(Config, HistoryIsKeptNinetyDaysUnlessSaidOtherwise) {
    EXPECT_EQ(load_json("{}").history.retention, std::chrono::hours(24 * 90));
    EXPECT_EQ(load_json(R"({"history":{"retention_days":7}})").history.retention,
              std::chrono::hours(24 * 7));
    EXPECT_EQ(load_json(R"({"history":{"retention_days":0}})").history.retention.count(), 0)
        << "0 keeps the history forever";
    EXPECT_EQ(failing_key(R"({"history":{"retention_days":-1}})"), "history.retention_days");
    EXPECT_EQ(failing_key(R"({"history":{"retention_days":1.5}})"), "history.retention_days");
    EXPECT_EQ(failing_key(R"({"history":{"retention_days":"90"}})"), "history.retention_days");
    EXPECT_EQ(failing_key(R"({"history":{"retention":90}})"), "history.retention");
    EXPECT_EQ(failing_key(R"({"history":90})"), "history");
}

TEST(Config, EtcdFlagSplitsAtCommas) {
    auto e = regpin::config::parse_etcd_flag("http://a:2379,,https://b:2379");
    ASSERT_EQ(e.size(), 2u);
    EXPECT_EQ(e[0], "http://a:2379");
    EXPECT_EQ(e[1], "https://b:2379");
    EXPECT_THROW(regpin::config::parse_etcd_flag(""), config_error);
    EXPECT_THROW(regpin::config::parse_etcd_flag("a:2379"), config_error);
}

TEST(Config, CacheLimitsTakeUnitsAndDefaultToTenPercentFree) {
    auto d = load_json("{}").cache;
    EXPECT_FALSE(d.max_bytes.has_value());
    EXPECT_EQ(d.min_free_percent, 10);
    EXPECT_EQ(d.min_free_bytes, 0u);
    EXPECT_EQ(d.protect, "pinned");
    auto c = load_json(
                 R"({"cache":{"max_bytes":"50GiB","min_free_bytes":"2 GB","min_free_percent":0,
                              "protect":"none"}})")
                 .cache;
    EXPECT_EQ(c.max_bytes, 50ull << 30);
    EXPECT_EQ(c.min_free_bytes, 2000000000u);
    EXPECT_EQ(c.min_free_percent, 0);
    EXPECT_EQ(c.protect, "none");
    EXPECT_EQ(load_json(R"({"cache":{"max_bytes":134217728}})").cache.max_bytes, 128ull << 20);
    EXPECT_EQ(load_json(R"({"cache":{"max_bytes":"1.5TiB"}})").cache.max_bytes,
              3ull * (1ull << 39));
    EXPECT_EQ(regpin::config::parse_size("512MiB", "k"), 512ull << 20);
    EXPECT_EQ(regpin::config::parse_size("100", "k"), 100u);
    for (const char* bad : {"", "GiB", "5 GiBs", "-1GiB", "1..5GiB", ".5GiB", "1.5", "5 gib"})
        EXPECT_THROW(regpin::config::parse_size(bad, "k"), config_error) << bad;
    EXPECT_EQ(failing_key(R"({"cache":{"max_bytes":"10MiB"}})"), "cache.max_bytes")
        << "below the folder's own overhead";
    EXPECT_EQ(failing_key(R"({"cache":{"max_bytes":-5}})"), "cache.max_bytes");
    EXPECT_EQ(failing_key(R"({"cache":{"max_bytes":"lots"}})"), "cache.max_bytes");
    EXPECT_EQ(failing_key(R"({"cache":{"min_free_percent":95}})"), "cache.min_free_percent");
    EXPECT_EQ(failing_key(R"({"cache":{"protect":"all"}})"), "cache.protect");
    EXPECT_EQ(failing_key(R"({"cache":{"max_size":1}})"), "cache.max_size");
    EXPECT_EQ(d.scrub_mib_per_s, 0) << "the background scrub is off unless asked for";
    EXPECT_EQ(load_json(R"({"cache":{"scrub_mib_per_s":64}})").cache.scrub_mib_per_s, 64);
    EXPECT_EQ(failing_key(R"({"cache":{"scrub_mib_per_s":-1}})"), "cache.scrub_mib_per_s");
    EXPECT_EQ(failing_key(R"({"cache":{"protect":"none"},"pin_content":"all"})"), "cache.protect")
        << "eviction and pin_content all would undo each other";
}

TEST(Config, AuditAndLogFormat) {
    auto d = load_json("{}");
    EXPECT_EQ(d.audit.retention, std::chrono::hours(24 * 30));
    EXPECT_EQ(d.audit.alert_window, std::chrono::hours(24 * 7));
    EXPECT_EQ(d.log_format, "text");
    auto s =
        load_json(R"({"audit":{"retention_days":0,"alert_window_days":3},"log_format":"json"})");
    EXPECT_EQ(s.audit.retention.count(), 0);
    EXPECT_EQ(s.audit.alert_window, std::chrono::hours(72));
    EXPECT_EQ(s.log_format, "json");
    EXPECT_EQ(failing_key(R"({"log_format":"xml"})"), "log_format");
    EXPECT_EQ(failing_key(R"({"audit":{"alert_window_days":0}})"), "audit.alert_window_days");
    EXPECT_EQ(failing_key(R"({"audit":{"retention":5}})"), "audit.retention");
}

TEST(Config, TokenScopesAndAdmission) {
    auto s = load_json(R"({"admin":{"tokens":[
        {"name":"ops","token":"0123456789abcdef0"},
        {"name":"ci","token":"0123456789abcdef1","scope":"resolve"},
        {"name":"viewer","token":"0123456789abcdef2","scope":"read"}]}})");
    ASSERT_EQ(s.admin.tokens.size(), 3u);
    EXPECT_EQ(s.admin.tokens[0].scope, token_scope::admin);
    EXPECT_EQ(s.admin.tokens[1].scope, token_scope::resolve);
    EXPECT_EQ(s.admin.tokens[2].scope, token_scope::read);
    EXPECT_EQ(
        failing_key(
            R"({"admin":{"tokens":[{"name":"x","token":"0123456789abcdef","scope":"write"}]}})"),
        "admin.tokens[0].scope");

    auto d = load_json("{}");
    EXPECT_TRUE(d.admission.listen.empty());
    EXPECT_EQ(d.admission.unpinned, "warn");
    EXPECT_EQ(d.admission.timeout, std::chrono::milliseconds(4000));
    // The API server calls https only: a listener without TLS is refused.
    EXPECT_EQ(failing_key(R"({"admission":{"listen":"127.0.0.1:0"}})"), "admission.tls");
    EXPECT_EQ(failing_key(R"({"admission":{"unpinned":"maybe"}})"), "admission.unpinned");
    EXPECT_EQ(failing_key(R"({"admission":{"timeout_ms":60000}})"), "admission.timeout_ms");
    auto a = load_json(R"({"admission":{"unpinned":"deny","timeout_ms":2500}})");
    EXPECT_EQ(a.admission.unpinned, "deny");
    EXPECT_EQ(a.admission.timeout, std::chrono::milliseconds(2500));
}
