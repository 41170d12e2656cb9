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
#include "proxy/cli/args.hpp"
#include "proxy/cli/http_call.hpp"
#include "proxy/oci/manifest.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/oci/reference.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::cli {

namespace {

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

std::optional<fetched> get_manifest(const server& base, const oci::image_reference& ref,
                                    const std::string& reference, std::string& error) {
    std::string body;
    unsigned status = 0;
    auto target = "/v2/" + ref.repository + "/manifests/" + reference + "?ns=" + ref.registry;
    auto r = http_get_stream(
        base, target, {{"Accept", oci::accept_for_class(oci::accepts_all)}},
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
    return fetched{d.str(), oci::manifest_media_type("", body), body};
}

bool get_blob(const server& base, const oci::image_reference& ref, const std::string& digest,
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
    CLI::App app{
        "Pulls each image through a running regpin (the normal pull path), so its "
        "manifests and blobs are cached and its tag pinned, as a node's first pull "
        "would. A progress line on a terminal, plain lines otherwise; a summary at the "
        "end. Exit status 1 when any image failed (each failure is listed).",
        "regpin prefetch"};
    server base{"http://127.0.0.1:5000", ""};
    std::vector<std::string> images, platforms;
    std::string list_file;
    app.add_option("IMAGE", images,
                   "REGISTRY/REPOSITORY:TAG, e.g. docker.io/library/nginx:1.27 (a name without "
                   "a registry host means docker.io)");
    app.add_option("--file", list_file, "images, one per line ('#' starts a comment)")
        ->check(CLI::ExistingFile);
    app.add_option("--platform", platforms,
                   "only this OS/ARCH of multi-platform images; repeatable (default: all)")
        ->allow_extra_args(false);
    app.add_option("--registry-url", base.url, "regpin's registry API")->capture_default_str();
    app.add_option("--cacert", base.ca_file, "a CA certificate (PEM) trusted for an https URL")
        ->check(CLI::ExistingFile);
    if (auto exit = parse(app, argc, argv)) return *exit;
    if (!list_file.empty()) {
        std::ifstream in(list_file);
        if (!in) return usage_error(app, "cannot read '" + list_file + "'");
        for (std::string line; std::getline(in, line);) {
            if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
            auto b = line.find_first_not_of(" \t\r");
            if (b == std::string::npos) continue;
            auto e = line.find_last_not_of(" \t\r");
            images.push_back(line.substr(b, e - b + 1));
        }
    }
    if (images.empty()) return usage_error(app, "no images given");

    progress p(::isatty(STDERR_FILENO) != 0);
    std::vector<std::string> failures;
    std::set<std::string> seen_blobs;
    std::size_t ok = 0;
    for (const auto& image : images) {
        auto parsed = oci::parse_image_reference(image);
        if (!parsed) {
            failures.push_back(image + ": " + parsed.error().message);
            p.line("failed " + image + ": " + parsed.error().message);
            continue;
        }
        const auto& ref = *parsed;
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
                    if (child.platform.empty() || oci::is_attestation(child)) continue;
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

// The data folder: --data, else the config's. nullopt when neither was given; a config that
// does not load exits with status 2 and its error.
std::optional<std::string> data_dir_from(const std::string& data, const std::string& config_file,
                                         config::settings* out) {
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
    return std::nullopt;
}

}  // namespace

int export_command(int argc, char** argv) {
    CLI::App app{
        "Writes pinned images and their pins to BUNDLE.tar: an OCI image layout in a tar "
        "(skopeo reads it: skopeo copy oci-archive:BUNDLE.tar:docker.io/library/"
        "nginx:1.27 ...) plus regpin-pins.json with each pin's provenance and history. "
        "Reads the data folder directly (read-only, fine while regpin runs). Every blob "
        "is included once.",
        "regpin export"};
    bundle::export_request r;
    std::string config_file;
    app.add_option("--data", r.data_dir, "regpin's data folder");
    app.add_option("--config", config_file, "take the data folder from this config")
        ->check(CLI::ExistingFile);
    app.add_option("--image", r.images,
                   "a pinned tag, e.g. docker.io/library/nginx:1.27; repeatable")
        ->allow_extra_args(false);
    app.add_flag("--all", r.all, "every pin");
    app.add_option("-o,--output", r.output, "the bundle to write")->required();
    if (auto exit = parse(app, argc, argv)) return *exit;
    auto data = data_dir_from(r.data_dir, config_file, nullptr);
    if (!data) return usage_error(app, "--data DIR (or --config FILE) is required");
    r.data_dir = *data;
    if (r.images.empty() && !r.all) return usage_error(app, "give --image REF or --all");
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
    CLI::App app{
        "Loads a bundle made by 'regpin export' (or a plain OCI layout tar made by "
        "skopeo, with --as) into a data folder. Every digest is verified before "
        "anything becomes visible; importing twice changes nothing. An existing pin with "
        "another digest is never overwritten silently: the conflict is reported and the "
        "configured policy applies (pin: keep it and record the bundle's digest as "
        "pending; follow: take the bundle's; reject: reject the tag). regpin must not "
        "be running on that data folder.",
        "regpin import"};
    bundle::import_request r;
    std::string config_file, data;
    app.add_option("BUNDLE", r.bundle, "the bundle (a tar)")->required();
    app.add_option("--data", data, "the data folder to import into (created if missing)");
    app.add_option("--config", config_file,
                   "policies, webhooks and the data folder from this config")
        ->check(CLI::ExistingFile);
    app.add_option("--as", r.as,
                   "pin the layout's image as REGISTRY/REPO:TAG (for layouts without regpin "
                   "provenance)");
    if (auto exit = parse(app, argc, argv)) return *exit;
    auto dir = data_dir_from(data, config_file, &r.settings);
    if (!dir) return usage_error(app, "--data DIR (or --config FILE) is required");
    r.data_dir = *dir;
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
