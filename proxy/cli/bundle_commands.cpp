// regpin prefetch | export | import: seeding a cache and carrying it to an air-gapped site.
#include "proxy/cli/bundle_commands.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/bundle/bundle.hpp"
#include "proxy/cli/http_call.hpp"
#include "proxy/oci/manifest.hpp"
#include "proxy/registry/pin_manager.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::cli {

namespace {

constexpr const char* usage_prefetch = R"(Usage: regpin prefetch [options] IMAGE... | --file LIST

Pulls each image through a running regpin (the normal pull path), so its manifests and blobs
are cached and its tag pinned, as a node's first pull would.

  IMAGE                 REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/nginx:1.27, ghcr.io/org/app:v1
                        (a name without a registry host means docker.io)
  --file LIST           images, one per line ('#' starts a comment)
  --platform OS/ARCH    only this platform of multi-platform images; repeatable (default: all)
  --registry-url URL    regpin's registry API (default http://127.0.0.1:5000)
  --cacert FILE         CA certificate (PEM) trusted for an https registry URL

A progress line on a terminal, plain lines otherwise; a summary at the end. Exit status 1
when any image failed (each failure is listed).
)";

constexpr const char* usage_export =
    R"(Usage: regpin export --data DIR (--image REF ... | --all) -o BUNDLE.tar

Writes pinned images and their pins to BUNDLE.tar: an OCI image layout in a tar (skopeo
reads it: skopeo copy oci-archive:BUNDLE.tar:docker.io/library/nginx:1.27 ...) plus
regpin-pins.json with each pin's provenance and history. Reads the data folder directly
(read-only, fine while regpin runs). Every blob is included once.

  --data DIR       regpin's data folder
  --config FILE    take the data folder from this config
  --image REF      a pinned tag, e.g. docker.io/library/nginx:1.27; repeatable
  --all            every pin
  -o FILE          the bundle to write
)";

constexpr const char* usage_import =
    R"(Usage: regpin import BUNDLE.tar --data DIR [--config FILE] [--as REGISTRY/REPO:TAG]

Loads a bundle made by 'regpin export' (or a plain OCI layout tar made by skopeo, with --as)
into a data folder. Every digest is verified before anything becomes visible; importing
twice changes nothing. An existing pin with another digest is never overwritten silently:
the conflict is reported and the configured policy applies (pin: keep it and record the
bundle's digest as pending; follow: take the bundle's; reject: reject the tag).
regpin must not be running on that data folder.

  --data DIR       the data folder to import into (created if missing)
  --config FILE    policies, webhooks and the data folder from this config
  --as REF         pin the layout's image as REF (for layouts without regpin provenance)
)";

[[noreturn]] void usage_error(const std::string& message, const char* usage) {
    std::fprintf(stderr, "regpin: %s\n\n%s", message.c_str(), usage);
    std::exit(2);
}

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) b /= 1024, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
    return buf;
}

class progress {
public:
    explicit progress(bool tty) : tty_(tty), start_(std::chrono::steady_clock::now()) {}
    void image(const std::string& name) { name_ = name, layers_done_ = 0, layers_total_ = 0; }
    void layers(std::size_t total) { layers_total_ += total; }
    void layer_done() { ++layers_done_, draw(true); }
    void bytes(std::size_t n) {
        bytes_ += n;
        draw(false);
    }
    void line(const std::string& text) {
        if (tty_) std::fprintf(stderr, "\r\033[K");
        std::fprintf(stderr, "%s\n", text.c_str());
    }
    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    std::uint64_t total_bytes() const { return bytes_; }

private:
    void draw(bool force) {
        if (!tty_) return;
        auto now = std::chrono::steady_clock::now();
        if (!force && now - last_ < std::chrono::milliseconds(100)) return;
        last_ = now;
        double rate = bytes_ / std::max(seconds(), 0.001);
        std::fprintf(stderr, "\r\033[K%s  blobs %zu/%zu  %s  %s/s", name_.c_str(), layers_done_,
                     layers_total_, human_bytes(static_cast<double>(bytes_)).c_str(),
                     human_bytes(rate).c_str());
    }
    bool tty_;
    std::string name_;
    std::size_t layers_done_ = 0, layers_total_ = 0;
    std::uint64_t bytes_ = 0;
    std::chrono::steady_clock::time_point start_, last_;
};

// Fetches a manifest through regpin and checks it against `expect` (a digest) when given.
struct fetched {
    std::string digest, media_type, bytes;
};

std::optional<fetched> get_manifest(const server& base, const bundle::image_ref& ref,
                                    const std::string& reference, std::string& error) {
    std::string body;
    unsigned status = 0;
    auto target = "/v2/" + ref.repository + "/manifests/" + reference + "?ns=" + ref.registry;
    auto r = http_get_stream(
        base, target, {{"Accept", registry::accept_for_class(15)}},
        [&](unsigned s, std::string_view piece) {
            status = s;
            if (body.size() < 5 * 1024 * 1024) body.append(piece);
        },
        std::chrono::seconds(300));
    if (!r.error.empty()) {
        error = "cannot reach regpin at " + base.url + ": " + r.error;
        return std::nullopt;
    }
    if (r.status != 200) {
        auto j = nlohmann::json::parse(body, nullptr, false);
        std::string msg = body.substr(0, 200);
        if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty())
            msg = j["errors"][0].value("message", msg);
        error = "manifest " + reference + ": " + std::to_string(r.status) + " " + msg;
        return std::nullopt;
    }
    auto d = storage::sha256_of(body);
    if (storage::digest::parse(reference) && d.str() != reference) {
        error = "manifest " + reference + " came back with other bytes";
        return std::nullopt;
    }
    auto j = nlohmann::json::parse(body, nullptr, false);
    std::string type = j.is_object() ? j.value("mediaType", std::string()) : std::string();
    return fetched{d.str(), type, body};
}

bool get_blob(const server& base, const bundle::image_ref& ref, const std::string& digest,
              progress& p, std::string& error) {
    auto d = storage::digest::parse(digest);
    if (!d) {
        error = "invalid digest " + digest;
        return false;
    }
    storage::hasher h(d->algorithm());
    auto r = http_get_stream(
        base, "/v2/" + ref.repository + "/blobs/" + digest + "?ns=" + ref.registry, {},
        [&](unsigned status, std::string_view piece) {
            if (status != 200) return;
            h.update(piece);
            p.bytes(piece.size());
        },
        std::chrono::seconds(300));
    if (!r.error.empty() || r.status != 200) {
        error = "blob " + digest + ": " +
                (r.error.empty() ? "status " + std::to_string(r.status) : r.error);
        return false;
    }
    if (!(h.finish() == *d)) {
        error = "blob " + digest + " arrived with other bytes";
        return false;
    }
    return true;
}

}  // namespace

int prefetch_command(int argc, char** argv) {
    server base{"http://127.0.0.1:5000", ""};
    std::vector<std::string> images, platforms;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value", usage_prefetch);
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage_prefetch, stdout);
            return 0;
        } else if (a == "--registry-url") {
            base.url = take();
        } else if (a == "--cacert") {
            base.ca_file = take();
        } else if (a == "--platform") {
            platforms.push_back(take());
        } else if (a == "--file") {
            auto f = take();
            std::ifstream in(f);
            if (!in) usage_error("cannot read '" + f + "'", usage_prefetch);
            for (std::string line; std::getline(in, line);) {
                if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
                auto b = line.find_first_not_of(" \t\r");
                if (b == std::string::npos) continue;
                auto e = line.find_last_not_of(" \t\r");
                images.push_back(line.substr(b, e - b + 1));
            }
        } else if (a.rfind("--", 0) == 0) {
            usage_error("unknown option '" + a + "'", usage_prefetch);
        } else {
            images.push_back(a);
        }
    }
    if (images.empty()) usage_error("no images given", usage_prefetch);

    progress p(::isatty(STDERR_FILENO) != 0);
    std::vector<std::string> failures;
    std::set<std::string> seen_blobs;
    std::size_t ok = 0;
    for (const auto& image : images) {
        bundle::image_ref ref;
        try {
            ref = bundle::parse_image_ref(image);
        } catch (const std::invalid_argument& e) {
            failures.push_back(image + ": " + e.what());
            p.line("failed " + image + ": " + e.what());
            continue;
        }
        p.image(ref.str());
        std::string error;
        auto top = get_manifest(base, ref, ref.tag, error);
        std::vector<fetched> images_to_get;
        if (top) {
            auto refs = oci::read_manifest(top->media_type, top->bytes);
            if (!refs) {
                error = "the manifest does not parse";
            } else if (refs->is_index) {
                for (const auto& child : refs->children) {
                    if (!platforms.empty() && std::find(platforms.begin(), platforms.end(),
                                                        child.platform) == platforms.end())
                        continue;
                    if (child.platform.empty() || child.platform == "unknown/unknown")
                        continue;  // attestations
                    auto m = get_manifest(base, ref, child.digest, error);
                    if (!m) break;
                    images_to_get.push_back(*m);
                }
                if (error.empty() && images_to_get.empty())
                    error = "no platform of the index matches --platform";
            } else {
                images_to_get.push_back(*top);
            }
        }
        std::size_t blob_count = 0;
        for (const auto& m : images_to_get) {
            if (!error.empty()) break;
            auto refs = oci::read_manifest(m.media_type, m.bytes);
            if (!refs) {
                error = "manifest " + m.digest + " does not parse";
                break;
            }
            std::vector<std::string> digests;
            if (refs->config) digests.push_back(refs->config->digest);
            for (const auto& l : refs->layers) digests.push_back(l.digest);
            p.layers(digests.size());
            for (const auto& d : digests) {
                if (seen_blobs.insert(d).second && !get_blob(base, ref, d, p, error)) {
                    seen_blobs.erase(d);
                    break;
                }
                ++blob_count;
                p.layer_done();
            }
        }
        if (!error.empty()) {
            failures.push_back(ref.str() + ": " + error);
            p.line("failed " + ref.str() + ": " + error);
            continue;
        }
        ++ok;
        p.line("ok     " + ref.str() + " " + top->digest + " (" +
               std::to_string(images_to_get.size()) + " image(s), " + std::to_string(blob_count) +
               " blobs)");
    }
    std::fprintf(stderr, "prefetched %zu of %zu images, %s in %.1f s\n", ok, images.size(),
                 human_bytes(static_cast<double>(p.total_bytes())).c_str(), p.seconds());
    if (!failures.empty()) {
        std::fprintf(stderr, "failed:\n");
        for (const auto& f : failures) std::fprintf(stderr, "  %s\n", f.c_str());
        return 1;
    }
    return 0;
}

namespace {

std::string data_dir_from(const std::string& data, const std::string& config_file,
                          config::settings* out, const char* usage) {
    config::settings s;
    if (!config_file.empty()) {
        try {
            s = config::load_file(config_file);
        } catch (const config::config_error& e) {
            std::fprintf(stderr, "regpin: invalid configuration: %s\n", e.what());
            std::exit(2);
        }
    }
    if (out) *out = s;
    if (!data.empty()) return data;
    if (!config_file.empty()) return s.data_dir;
    usage_error("--data DIR (or --config FILE) is required", usage);
}

}  // namespace

int export_command(int argc, char** argv) {
    bundle::export_request r;
    std::string config_file;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value", usage_export);
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage_export, stdout);
            return 0;
        } else if (a == "--data") {
            r.data_dir = take();
        } else if (a == "--config") {
            config_file = take();
        } else if (a == "--image") {
            r.images.push_back(take());
        } else if (a == "--all") {
            r.all = true;
        } else if (a == "-o" || a == "--output") {
            r.output = take();
        } else {
            usage_error("unknown argument '" + a + "'", usage_export);
        }
    }
    r.data_dir = data_dir_from(r.data_dir, config_file, nullptr, usage_export);
    if (r.output.empty()) usage_error("-o BUNDLE.tar is required", usage_export);
    if (r.images.empty() && !r.all) usage_error("give --image REF or --all", usage_export);
    try {
        auto rep = bundle::export_bundle(r);
        for (const auto& w : rep.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        std::printf("exported %zu pins, %zu manifests, %zu blobs (%s) to %s\n", rep.pins,
                    rep.manifests, rep.blobs, human_bytes(static_cast<double>(rep.bytes)).c_str(),
                    r.output.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "regpin: %s\n", e.what());
        return 1;
    }
}

int import_command(int argc, char** argv) {
    bundle::import_request r;
    std::string config_file, data;
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(a + " needs a value", usage_import);
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage_import, stdout);
            return 0;
        } else if (a == "--data") {
            data = take();
        } else if (a == "--config") {
            config_file = take();
        } else if (a == "--as") {
            r.as = take();
        } else if (a.rfind("--", 0) == 0) {
            usage_error("unknown option '" + a + "'", usage_import);
        } else if (r.bundle.empty()) {
            r.bundle = a;
        } else {
            usage_error("one bundle at a time", usage_import);
        }
    }
    if (r.bundle.empty()) usage_error("which bundle?", usage_import);
    r.data_dir = data_dir_from(data, config_file, &r.settings, usage_import);
    try {
        auto rep = bundle::import_bundle(r);
        for (const auto& w : rep.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
        for (const auto& c : rep.conflicts) std::fprintf(stderr, "conflict: %s\n", c.c_str());
        std::printf(
            "imported %s: %zu pins created, %zu unchanged, %zu conflicts; %zu manifests and %zu "
            "blobs added, "
            "%zu blobs already present\n",
            r.bundle.c_str(), rep.pins_created, rep.pins_unchanged, rep.conflicts.size(),
            rep.manifests_added, rep.blobs_added, rep.blobs_present);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "regpin: import failed: %s\n", e.what());
        return 1;
    }
}

}  // namespace regpin::proxy::cli
