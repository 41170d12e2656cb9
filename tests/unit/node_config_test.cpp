#include "proxy/cli/node_config.hpp"

#include <gtest/gtest.h>

using namespace regpin::proxy::cli;

namespace {

node_config_request request(bool fail_closed) {
    node_config_request r;
    r.mirror = "http://10.0.0.5:5000";
    r.registries = {"docker.io", "ghcr.io"};
    r.fail_closed = fail_closed;
    return r;
}

}  // namespace

TEST(NodeConfig, PlainContainerdKeepsTheUpstreamAsServerAndRegpinAsMirror) {
    auto files = generate_node_config(node_format::containerd, request(false));
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0].path, "docker.io/hosts.toml");
    EXPECT_NE(files[0].text.find("server = \"https://registry-1.docker.io\""), std::string::npos);
    EXPECT_NE(files[0].text.find("[host.\"http://10.0.0.5:5000\"]"), std::string::npos);
    EXPECT_NE(files[0].text.find("capabilities = [\"pull\", \"resolve\"]"), std::string::npos);
    EXPECT_NE(files[1].text.find("server = \"https://ghcr.io\""), std::string::npos);
}

TEST(NodeConfig, FailClosedContainerdMakesRegpinTheServer) {
    auto files = generate_node_config(node_format::containerd, request(true));
    EXPECT_NE(files[0].text.find("server = \"http://10.0.0.5:5000\""), std::string::npos);
    EXPECT_EQ(files[0].text.find("registry-1.docker.io"), std::string::npos);
}

TEST(NodeConfig, CrioUsesARegistryPathPrefixOnTheMirror) {
    auto plain = generate_node_config(node_format::crio, request(false));
    ASSERT_EQ(plain.size(), 1u);
    EXPECT_NE(plain[0].text.find(
                  "[[registry.mirror]]\nlocation = \"10.0.0.5:5000/docker.io\"\ninsecure = true"),
              std::string::npos);
    auto closed = generate_node_config(node_format::crio, request(true));
    EXPECT_NE(closed[0].text.find("location = \"10.0.0.5:5000/ghcr.io\""), std::string::npos);
    EXPECT_EQ(closed[0].text.find("[[registry.mirror]]"), std::string::npos);
}

TEST(NodeConfig, K3sAndDocker) {
    auto k3s = generate_node_config(node_format::k3s, request(false));
    EXPECT_NE(k3s[0].text.find("\"docker.io\":\n    endpoint:\n      - \"http://10.0.0.5:5000\""),
              std::string::npos);
    auto docker = generate_node_config(node_format::docker, request(false));
    EXPECT_NE(docker[0].text.find("\"registry-mirrors\": [\"http://10.0.0.5:5000\"]"),
              std::string::npos);
    EXPECT_NE(docker[0].text.find("\"insecure-registries\": [\"10.0.0.5:5000\"]"),
              std::string::npos);
}

TEST(NodeConfig, BadRequestsAreExplained) {
    auto r = request(false);
    r.registries = {"ghcr.io"};
    EXPECT_THROW(generate_node_config(node_format::docker, r), std::invalid_argument);
    r.mirror = "10.0.0.5:5000";
    EXPECT_THROW(generate_node_config(node_format::containerd, r), std::invalid_argument);
    r.mirror = "http://10.0.0.5:5000";
    r.registries.clear();
    EXPECT_THROW(generate_node_config(node_format::containerd, r), std::invalid_argument);
}

TEST(NodeConfig, NodeNameBecomesAHeaderForRegpinOnly) {
    auto r = request(false);
    r.node_name = "worker-7.example";
    auto files = generate_node_config(node_format::containerd, r);
    const auto& text = files[0].text;
    auto header = text.find(
        "[host.\"http://10.0.0.5:5000\".header]\n    X-Regpin-Node = [\"worker-7.example\"]");
    EXPECT_NE(header, std::string::npos) << text;
    // After the mirror's table, so it is the mirror's header; `server` (the upstream) has none.
    EXPECT_GT(header, text.find("[host.\"http://10.0.0.5:5000\"]"));
    EXPECT_EQ(text.find("X-Regpin-Node"), text.rfind("X-Regpin-Node"));
    for (const char* bad : {"a b", "node\"x", "x\ny", ""}) {
        r.node_name = bad;
        if (r.node_name.empty()) continue;
        EXPECT_THROW(generate_node_config(node_format::containerd, r), std::invalid_argument)
            << bad;
    }
    r.node_name = std::string(254, 'a');
    EXPECT_THROW(generate_node_config(node_format::containerd, r), std::invalid_argument);
    r.node_name = "worker-7";
    EXPECT_THROW(generate_node_config(node_format::crio, r), std::invalid_argument);
}
