#pragma once
// Node configuration that points container runtimes at regpin: containerd's hosts.toml (one
// file per registry), CRI-O/podman registries.conf, k3s registries.yaml, Docker's daemon.json.
// Pure text generation; `regpin hosts-toml` writes the files.

#include <map>
#include <string>
#include <vector>

namespace regpin::proxy::cli {

enum class node_format { containerd, crio, k3s, docker };

struct node_config_request {
    std::string mirror;                   // regpin's URL as nodes reach it: http://10.0.0.5:5000
    std::vector<std::string> registries;  // docker.io, ghcr.io, ...
    // Fail closed: regpin is the only place nodes pull from (containerd `server`, CRI-O
    // location), so `reject` and offline really hold. Otherwise a plain mirror: the runtime
    // falls back to the upstream on any regpin error.
    bool fail_closed = false;
    std::string ca_file;       // CA for an https mirror (containerd `ca`)
    std::string dial_timeout;  // containerd dial_timeout, e.g. "500ms"; empty leaves it out
    // Upstream URLs for plain mode where the default (https://<registry>) is wrong.
    std::map<std::string, std::string> servers;
    // The node's name, sent to regpin as X-Regpin-Node on every request (containerd only),
    // for the pull audit. Empty: none (regpin then knows the node by its address).
    std::string node_name;
};

struct generated_file {
    std::string path;  // relative to the output folder
    std::string text;
};

// The files for `format`; throws std::invalid_argument with a clear message on a bad request
// (no registries, a mirror that is not http(s)://host[:port]).
std::vector<generated_file> generate_node_config(node_format format, const node_config_request& r);

// The upstream containerd would use without a hosts.toml: docker.io -> registry-1.docker.io.
std::string default_server(const std::string& registry);

int hosts_toml_command(int argc, char** argv);

}  // namespace regpin::proxy::cli
