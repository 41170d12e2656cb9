#include "proxy/cli/node_config.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "proxy/cli/args.hpp"
#include "proxy/http/message.hpp"

namespace regpin::proxy::cli {

namespace {

struct mirror_url {
    std::string scheme, hostport;
};

mirror_url parse_mirror(const std::string& url) {
    mirror_url m;
    auto sep = url.find("://");
    if (sep == std::string::npos)
        throw std::invalid_argument(
            "--mirror must be http://HOST[:PORT] or https://HOST[:PORT], got '" + url + "'");
    m.scheme = url.substr(0, sep);
    m.hostport = url.substr(sep + 3);
    while (!m.hostport.empty() && m.hostport.back() == '/') m.hostport.pop_back();
    if ((m.scheme != "http" && m.scheme != "https") || m.hostport.empty() ||
        m.hostport.find('/') != std::string::npos)
        throw std::invalid_argument(
            "--mirror must be http://HOST[:PORT] or https://HOST[:PORT], got '" + url + "'");
    return m;
}

std::string toml_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
    }
    return out + "\"";
}

std::string containerd_file(const std::string& registry, const mirror_url& m,
                            const node_config_request& r) {
    std::string base = m.scheme + "://" + m.hostport;
    std::string t =
        "# Written by `regpin hosts-toml`: pulls of " + registry + " go through regpin.\n";
    if (r.fail_closed) {
        t += "# Fail-closed: regpin is the server, so containerd never goes to the upstream "
             "itself.\n";
        t += "server = " + toml_string(base) + "\n\n";
    } else {
        t += "# containerd tries regpin first and falls back to `server` (the upstream) on any\n"
             "# error or when regpin is down: pins hold, `reject` and offline mode do not.\n";
        auto it = r.servers.find(registry);
        t += "server = " +
             toml_string(it != r.servers.end() ? it->second : default_server(registry)) + "\n\n";
    }
    t += "[host." + toml_string(base) + "]\n";
    t += "  capabilities = [\"pull\", \"resolve\"]\n";
    if (!r.ca_file.empty()) t += "  ca = " + toml_string(r.ca_file) + "\n";
    if (!r.dial_timeout.empty()) t += "  dial_timeout = " + toml_string(r.dial_timeout) + "\n";
    if (!r.node_name.empty()) {
        // Sent to regpin only (never to `server`): the pull audit's node name. A claim, not an
        // identity: any client can send any name.
        t += "\n  [host." + toml_string(base) + ".header]\n";
        t += "    X-Regpin-Node = [" + toml_string(r.node_name) + "]\n";
    }
    return t;
}

}  // namespace

std::string default_server(const std::string& registry) {
    if (registry == "docker.io") return "https://registry-1.docker.io";
    return "https://" + registry;
}

std::vector<generated_file> generate_node_config(node_format format, const node_config_request& r) {
    if (r.registries.empty()) throw std::invalid_argument("at least one --registry is required");
    if (!r.node_name.empty()) {
        if (!http::plausible_node_name(r.node_name))
            throw std::invalid_argument(
                "--node-name must be 1 to 253 letters, digits, '.', '-' or '_' (a Kubernetes node "
                "name), got '" +
                r.node_name + "'");
        if (format != node_format::containerd)
            throw std::invalid_argument(
                "--node-name needs --format containerd: CRI-O, k3s and Docker cannot add request "
                "headers (regpin's audit then names the node by its address)");
    }
    auto m = parse_mirror(r.mirror);
    bool insecure = m.scheme == "http";
    std::vector<generated_file> out;
    switch (format) {
        case node_format::containerd:
            for (const auto& reg : r.registries)
                out.push_back({reg + "/hosts.toml", containerd_file(reg, m, r)});
            break;
        case node_format::crio: {
            std::string t =
                "# Written by `regpin hosts-toml --format crio`: for\n"
                "# /etc/containers/registries.conf.d/ (CRI-O, podman, skopeo).\n"
                "# The mirror location carries the registry as a path prefix, which is\n"
                "# how regpin tells registries apart without containerd's `ns`.\n";
            for (const auto& reg : r.registries) {
                t += "\n[[registry]]\nprefix = " + toml_string(reg) + "\n";
                if (reg.find(':') != std::string::npos)
                    t += "# note: a registry with a port cannot be a path prefix; regpin must list "
                         "it as\n"
                         "# its default upstream for this entry to work.\n";
                if (r.fail_closed) {
                    t += "location = " + toml_string(m.hostport + "/" + reg) + "\n";
                    if (insecure) t += "insecure = true\n";
                } else {
                    t += "location = " + toml_string(reg) + "\n";
                    t += "[[registry.mirror]]\nlocation = " + toml_string(m.hostport + "/" + reg) +
                         "\n";
                    if (insecure) t += "insecure = true\n";
                }
            }
            out.push_back({"registries.conf", t});
            break;
        }
        case node_format::k3s: {
            std::string t =
                "# Written by `regpin hosts-toml --format k3s`: /etc/rancher/k3s/registries.yaml\n";
            if (r.fail_closed)
                t += "# Fail-closed also needs k3s started with "
                     "--disable-default-registry-endpoint;\n"
                     "# otherwise k3s falls back to the upstream when regpin answers an error.\n";
            else
                t += "# k3s tries regpin first and falls back to the upstream on any error.\n";
            t += "mirrors:\n";
            for (const auto& reg : r.registries)
                t += "  " + toml_string(reg) + ":\n    endpoint:\n      - " +
                     toml_string(m.scheme + "://" + m.hostport) + "\n";
            if (!r.ca_file.empty())
                t += "configs:\n  " + toml_string(m.hostport) +
                     ":\n    tls:\n      ca_file: " + toml_string(r.ca_file) + "\n";
            out.push_back({"registries.yaml", t});
            break;
        }
        case node_format::docker: {
            bool hub = false;
            for (const auto& reg : r.registries) hub = hub || reg == "docker.io";
            if (!hub)
                throw std::invalid_argument(
                    "Docker uses registry mirrors for Docker Hub only: include --registry "
                    "docker.io");
            std::string t =
                "{\n  \"registry-mirrors\": [" + toml_string(m.scheme + "://" + m.hostport) + "]";
            if (insecure) t += ",\n  \"insecure-registries\": [" + toml_string(m.hostport) + "]";
            t += "\n}\n";
            out.push_back({"daemon.json", t});
            break;
        }
    }
    return out;
}

int hosts_toml_command(int argc, char** argv) {
    CLI::App app{"Writes the node configuration that sends pulls through regpin.",
                 "regpin hosts-toml"};
    node_config_request r;
    node_format format = node_format::containerd;
    std::string output;
    std::vector<std::string> servers;
    app.add_option("--mirror", r.mirror, "regpin as the nodes reach it, e.g. http://10.0.0.5:5000")
        ->required();
    app.add_option("--registry", r.registries,
                   "a registry to send through regpin (docker.io, ghcr.io, quay.io, "
                   "registry.k8s.io, ...); repeatable")
        ->allow_extra_args(false);
    app.add_flag("--fail-closed", r.fail_closed,
                 "regpin is the only source: containerd's `server` (CRI-O: the location) is "
                 "regpin itself, so `reject` policies and offline mode hold. Without it regpin "
                 "is a mirror, and the runtime falls back to the upstream whenever regpin "
                 "answers an error or is down.");
    const std::map<std::string, node_format> formats = {{"containerd", node_format::containerd},
                                                        {"crio", node_format::crio},
                                                        {"k3s", node_format::k3s},
                                                        {"docker", node_format::docker}};
    std::string format_name = "containerd";
    app.add_option("--format", format_name,
                   "containerd (default): DIR/<registry>/hosts.toml; crio: DIR/registries.conf "
                   "(CRI-O, podman, skopeo); k3s: DIR/registries.yaml; docker: DIR/daemon.json "
                   "(Docker mirrors Docker Hub only)")
        ->check(CLI::IsMember({"containerd", "crio", "k3s", "docker"}));
    app.add_option("--ca", r.ca_file, "CA certificate for an https mirror (containerd)");
    app.add_option("--dial-timeout", r.dial_timeout,
                   "containerd dial_timeout for regpin, e.g. 500ms (containerd 1.7+)");
    app.add_option("--server", servers,
                   "REGISTRY=URL: the upstream containerd falls back to in plain mode (default "
                   "https://REGISTRY; https://registry-1.docker.io for docker.io); repeatable")
        ->allow_extra_args(false);
    app.add_option("--node-name", r.node_name,
                   "this node's name, sent to regpin as the X-Regpin-Node header so its pull "
                   "audit names the node (containerd only; in Kubernetes from the downward API, "
                   "spec.nodeName). A claim, not an identity: any client can send any name");
    app.add_option("-o,--output", output, "where to write; without it the files are printed");
    if (auto exit = parse(app, argc, argv)) return *exit;
    format = formats.at(format_name);
    for (const auto& v : servers) {
        auto eq = v.find('=');
        if (eq == std::string::npos || eq == 0)
            return usage_error(app, "--server takes REGISTRY=URL, got '" + v + "'");
        r.servers[v.substr(0, eq)] = v.substr(eq + 1);
    }
    std::vector<generated_file> files;
    try {
        files = generate_node_config(format, r);
    } catch (const std::invalid_argument& e) {
        return usage_error(app, e.what());
    }
    for (const auto& f : files) {
        if (output.empty()) {
            std::printf("# --- %s\n%s\n", f.path.c_str(), f.text.c_str());
            continue;
        }
        auto path = std::filesystem::path(output) / f.path;
        std::error_code ec;
        std::filesystem::create_directories(path.parent_path(), ec);
        // Write beside and rename: containerd re-reads hosts.toml on every pull and must never
        // see a half-written file.
        auto temp = path;
        temp += ".regpin-tmp";
        {
            std::ofstream out(temp, std::ios::trunc);
            if (!out || !(out << f.text) || !(out.flush())) {
                std::fprintf(stderr, "regpin: cannot write %s\n", temp.c_str());
                return 1;
            }
        }
        std::filesystem::rename(temp, path, ec);
        if (ec) {
            std::fprintf(stderr, "regpin: cannot replace %s: %s\n", path.c_str(),
                         ec.message().c_str());
            return 1;
        }
        std::printf("wrote %s\n", path.c_str());
    }
    return 0;
}

}  // namespace regpin::proxy::cli
