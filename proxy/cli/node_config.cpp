#include "proxy/cli/node_config.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace regpin::proxy::cli {

namespace {

constexpr const char* usage =
    R"(Usage: regpin hosts-toml --mirror URL --registry R [--registry R ...] [options]

Writes the node configuration that sends pulls through regpin.

  --mirror URL          regpin as the nodes reach it, e.g. http://10.0.0.5:5000
  --registry R          a registry to send through regpin (docker.io, ghcr.io, quay.io,
                        registry.k8s.io, ...); repeatable
  --fail-closed         regpin is the only source: containerd's `server` (CRI-O: the
                        location) is regpin itself, so `reject` policies and offline mode hold.
                        Without it regpin is a mirror, and the runtime falls back to the
                        upstream whenever regpin answers an error or is down.
  --format F            containerd (default): DIR/<registry>/hosts.toml
                        crio: DIR/registries.conf (CRI-O, podman, skopeo)
                        k3s: DIR/registries.yaml
                        docker: DIR/daemon.json (Docker mirrors Docker Hub only)
  --ca FILE             CA certificate for an https mirror (containerd)
  --dial-timeout D      containerd dial_timeout for regpin, e.g. 500ms (containerd 1.7+)
  --server R=URL        the upstream containerd falls back to for registry R in plain mode
                        (default https://R; https://registry-1.docker.io for docker.io)
  -o, --output DIR      where to write; without it the files are printed
)";

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
    return t;
}

}  // namespace

std::string default_server(const std::string& registry) {
    if (registry == "docker.io") return "https://registry-1.docker.io";
    return "https://" + registry;
}

std::vector<generated_file> generate_node_config(node_format format, const node_config_request& r) {
    if (r.registries.empty()) throw std::invalid_argument("at least one --registry is required");
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
    node_config_request r;
    node_format format = node_format::containerd;
    std::string output;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "regpin: %s needs a value\n\n%s", a.c_str(), usage);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            return 0;
        } else if (a == "--mirror") {
            r.mirror = take();
        } else if (a == "--registry") {
            r.registries.push_back(take());
        } else if (a == "--fail-closed") {
            r.fail_closed = true;
        } else if (a == "--ca") {
            r.ca_file = take();
        } else if (a == "--server") {
            auto v = take();
            auto eq = v.find('=');
            if (eq == std::string::npos || eq == 0) {
                std::fprintf(stderr, "regpin: --server takes REGISTRY=URL\n");
                return 2;
            }
            r.servers[v.substr(0, eq)] = v.substr(eq + 1);
        } else if (a == "--dial-timeout") {
            r.dial_timeout = take();
        } else if (a == "-o" || a == "--output") {
            output = take();
        } else if (a == "--format") {
            auto f = take();
            if (f == "containerd")
                format = node_format::containerd;
            else if (f == "crio")
                format = node_format::crio;
            else if (f == "k3s")
                format = node_format::k3s;
            else if (f == "docker")
                format = node_format::docker;
            else {
                std::fprintf(stderr, "regpin: --format must be containerd, crio, k3s or docker\n");
                return 2;
            }
        } else {
            std::fprintf(stderr, "regpin: unknown option '%s'\n\n%s", a.c_str(), usage);
            return 2;
        }
    }
    if (r.mirror.empty()) {
        std::fprintf(stderr, "regpin: --mirror is required\n\n%s", usage);
        return 2;
    }
    std::vector<generated_file> files;
    try {
        files = generate_node_config(format, r);
    } catch (const std::invalid_argument& e) {
        std::fprintf(stderr, "regpin: %s\n", e.what());
        return 2;
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
