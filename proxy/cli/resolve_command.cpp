// regpin resolve: the images of Kubernetes YAML pinned to the digests nodes get through regpin
// (issue 17, point 2). Each `image: NAME:TAG` in a container list becomes NAME:TAG@DIGEST, the
// digest of the tag's pin: asked of a running regpin (GET /api/v1/resolve, which pins a tag on
// first sight as a pull would) or read from a data folder offline (--data, only what is pinned
// already). Everything else in the YAML stays byte for byte (yaml_images.hpp).

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/cli/admin_client.hpp"
#include "proxy/cli/args.hpp"
#include "proxy/cli/commands.hpp"
#include "proxy/cli/yaml_images.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/pins/resolution.hpp"
#include "proxy/pins/views.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::cli {

namespace {

using nlohmann::json;

// One image's answer: its pin's digest and state, or why it has none.
struct answer {
    std::string reference;  // REGISTRY/REPOSITORY:TAG, when the image parses
    std::optional<std::string> digest;
    std::string state;            // pinned, pending, rejected; "unpinned" without a digest
    std::string upstream_digest;  // pending: what the upstream moved to
    std::string reason;           // without a digest: why
};

// Where answers come from: the admin API, or a data folder read offline.
class resolver {
public:
    virtual ~resolver() = default;
    virtual answer resolve(const oci::image_reference& ref) = 0;
};

class api_resolver final : public resolver {
public:
    explicit api_resolver(common c) : c_(std::move(c)) {}
    answer resolve(const oci::image_reference& ref) override {
        answer a{ref.str(), std::nullopt, "unpinned", {}, {}};
        auto got = call_any(c_, "GET", "/api/v1/resolve?ref=" + query_escape(ref.str()));
        if (got.status == 403) {
            // A rejected tag's 403 carries its pin in the detail; any other is the token's scope.
            const auto& errors = got.body["errors"];
            bool rejected = errors.is_array() && !errors.empty() && errors[0].is_object() &&
                            errors[0].contains("detail") && errors[0]["detail"].is_object() &&
                            errors[0]["detail"].value("state", "") == "rejected";
            if (!rejected) fail("the admin API refused the token: " + got.message);
            a.state = "rejected";
        }
        if (got.status != 200) {
            a.reason = got.message;
            return a;
        }
        a.digest = got.body.value("digest", "");
        a.state = got.body.value("state", "pinned");
        if (got.body["upstream_digest"].is_string())
            a.upstream_digest = got.body["upstream_digest"];
        return a;
    }

private:
    common c_;
};

class data_resolver final : public resolver {
public:
    explicit data_resolver(const std::string& dir) : dir_(dir) {
        storage::open_report opened;
        auto db = storage::open_database(dir, opened, storage::open_mode::read_only);
        if (!db) fail("cannot open the data folder '" + dir + "': " + opened.error_detail);
        pins_ = std::make_unique<storage::rocksdb_pin_store>(*db);
    }
    answer resolve(const oci::image_reference& ref) override {
        answer a{ref.str(), std::nullopt, "unpinned", {}, {}};
        auto listed = pins_->list_tag(ref.registry, ref.repository, ref.tag);
        if (!listed) fail("cannot read the pins in '" + dir_ + "'");
        auto p = pins::pin_for_nodes(*listed);
        if (!p) {
            a.reason = "not pinned in " + dir_ +
                       " (offline, a tag is pinned by a pull, a resolve "
                       "or an imported bundle first)";
            return a;
        }
        a.state = std::string(storage::to_string(p->state));
        if (p->pending_digest) a.upstream_digest = p->pending_digest->str();
        if (p->state == storage::pin_state::rejected) {
            a.reason = pins::rejected_reason(*p);
            return a;
        }
        a.digest = p->manifest_digest.str();
        return a;
    }

private:
    std::string dir_;
    std::unique_ptr<storage::rocksdb_pin_store> pins_;
};

std::string read_all(std::istream& in) {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct input {
    std::string name;  // a path, or "-" for standard input
    std::string text;
    std::vector<yaml_image> images;
};

// What the lock file says of one image.
json lock_entry(const std::string& image, const answer& a, const std::string& when) {
    json j = {{"image", image},
              {"reference", a.reference.empty() ? json() : json(a.reference)},
              {"digest", a.digest ? json(*a.digest) : json()},
              {"state", a.state},
              {"resolved_at", when}};
    if (!a.upstream_digest.empty()) j["upstream_digest"] = a.upstream_digest;
    if (!a.reason.empty()) j["reason"] = a.reason;
    return j;
}

int check_lock(const std::string& lock_path, resolver& r, const std::vector<input>& inputs) {
    std::ifstream in(lock_path);
    if (!in) fail("cannot read the lock file '" + lock_path + "'");
    auto lock = json::parse(read_all(in), nullptr, false);
    if (!lock.is_object() || !lock.contains("images") || !lock["images"].is_array())
        fail("'" + lock_path + "' is not a regpin lock file (no \"images\" list)");
    int drift = 0;
    std::map<std::string, std::string> locked;  // image -> digest
    for (const auto& e : lock["images"]) {
        auto image = e.value("image", "");
        auto digest = e.contains("digest") && e["digest"].is_string()
                          ? e["digest"].get<std::string>()
                          : std::string();
        locked[image] = digest;
        if (digest.empty() || !e.contains("reference") || !e["reference"].is_string()) {
            std::printf("skip     %s: %s\n", image.c_str(),
                        e.value("reason", "a digest without a tag: nothing to compare").c_str());
            continue;
        }
        auto ref = oci::parse_image_name(e["reference"].get<std::string>());
        if (!ref) {
            std::printf("DRIFT    %s: the reference does not parse (%s)\n", image.c_str(),
                        ref.error().message.c_str());
            ++drift;
            continue;
        }
        auto a = r.resolve(*ref);
        if (!a.digest) {
            std::printf("DRIFT    %s: locked %s, now unpinned: %s\n", image.c_str(), digest.c_str(),
                        a.reason.c_str());
            ++drift;
        } else if (*a.digest != digest) {
            std::printf("DRIFT    %s: locked %s, pinned now %s (%s)\n", image.c_str(),
                        digest.c_str(), a.digest->c_str(), a.state.c_str());
            ++drift;
        } else if (a.state == "pending") {
            std::printf("ok       %s: %s (the upstream moved the tag to %s; not approved)\n",
                        image.c_str(), digest.c_str(), a.upstream_digest.c_str());
        } else {
            std::printf("ok       %s: %s\n", image.c_str(), digest.c_str());
        }
    }
    // Images in the given YAML that the lock does not know, or pins a different digest of.
    for (const auto& f : inputs)
        for (const auto& img : f.images) {
            auto at = img.value.find('@');
            std::string name = img.value.substr(0, at);
            auto it = locked.find(img.value);
            if (it == locked.end()) it = locked.find(name);
            if (it == locked.end()) {
                std::printf("DRIFT    %s (%s line %zu): not in the lock file\n", img.value.c_str(),
                            f.name.c_str(), img.line);
                ++drift;
            } else if (at != std::string::npos && !it->second.empty() &&
                       img.value.substr(at + 1) != it->second) {
                std::printf("DRIFT    %s (%s line %zu): the lock file has %s\n", img.value.c_str(),
                            f.name.c_str(), img.line, it->second.c_str());
                ++drift;
            }
        }
    if (drift) {
        std::fprintf(stderr, "regpin: %d image(s) drifted from %s\n", drift, lock_path.c_str());
        return 1;
    }
    return 0;
}

}  // namespace

int resolve_command(int argc, char** argv) {
    CLI::App app{
        "Pins the container images of Kubernetes YAML (Pods, Deployments, StatefulSets, "
        "DaemonSets, ReplicaSets, Jobs, CronJobs, Lists, helm template or kustomize output; "
        "init and ephemeral containers too): each image: NAME:TAG becomes NAME:TAG@DIGEST, the "
        "digest regpin serves nodes for that tag. A tag regpin has not seen is pinned now, as a "
        "pull would pin it (not with --data). Everything else stays byte for byte. Reads FILEs "
        "(or standard input) and writes the result to standard output, or back to the files "
        "with --in-place. An image regpin cannot pin (no upstream for its registry, a rejected "
        "tag, --data without that pin) is an error (exit 1, nothing written) unless "
        "--allow-unpinned leaves it as it is.",
        "regpin resolve"};
    common c;
    std::vector<std::string> files;
    std::string lock_path, data_dir;
    bool in_place = false, check = false, allow_unpinned = false;
    app.add_option("FILE", files, "YAML files ('-' or none: standard input)");
    app.add_flag("-i,--in-place", in_place, "write each file back instead of to standard output");
    app.add_option("--lock", lock_path,
                   "write a lock file (JSON: each image, its reference, digest, pin state, time)");
    app.add_flag("--check", check,
                 "compare --lock FILE with the pins now (and the FILEs' images with the lock): "
                 "exit 1 on any drift, write nothing");
    app.add_flag("--allow-unpinned", allow_unpinned,
                 "leave images regpin cannot pin as they are (listed in the lock file with why)");
    app.add_option("--data", data_dir,
                   "read the pins from this data folder instead of a running regpin (offline; "
                   "the embedded pin store)")
        ->check(CLI::ExistingDirectory);
    add_common(app, c, nullptr);
    if (auto exit = parse(app, argc, argv)) return *exit;
    if (check && lock_path.empty()) return usage_error(app, "--check needs --lock FILE");
    if (in_place && (files.empty() || std::count(files.begin(), files.end(), "-")))
        return usage_error(app, "--in-place needs FILEs (not standard input)");
    if (!in_place && !check && files.size() > 1)
        return usage_error(app, "several FILEs: use --in-place, or concatenate them");

    std::vector<input> inputs;
    if (files.empty()) files.push_back("-");
    for (const auto& f : files) {
        input in{f, {}, {}};
        if (f == "-") {
            in.text = read_all(std::cin);
        } else {
            std::ifstream s(f, std::ios::binary);
            if (!s) fail("cannot read '" + f + "'");
            in.text = read_all(s);
        }
        try {
            in.images = find_images(in.text);
        } catch (const yaml_error& e) {
            fail((f == "-" ? std::string("standard input") : f) + ": not YAML: " + e.what());
        }
        inputs.push_back(std::move(in));
    }

    std::unique_ptr<resolver> r;
    if (!data_dir.empty()) {
        r = std::make_unique<data_resolver>(data_dir);
    } else {
        read_token(c);
        r = std::make_unique<api_resolver>(c);
    }
    if (check) return check_lock(lock_path, *r, inputs);

    // Each distinct image once.
    std::map<std::string, answer> answers;
    for (const auto& f : inputs)
        for (const auto& img : f.images) {
            if (answers.count(img.value)) continue;
            answer a;
            if (auto at = img.value.find('@'); at != std::string::npos) {
                // Pinned by digest already: left as it is. With a tag too, --check compares
                // the tag's pin with it later.
                a.digest = img.value.substr(at + 1);
                a.state = "digest";
                auto name = img.value.substr(0, at);
                if (oci::has_tag(name))
                    if (auto ref = oci::parse_image_name(name)) a.reference = ref->str();
            } else if (auto ref = oci::parse_image_name(img.value); !ref) {
                a.reason = ref.error().message;
                a.state = "unpinned";
            } else {
                a = r->resolve(*ref);
            }
            answers.emplace(img.value, std::move(a));
        }
    int unpinned = 0;
    for (const auto& f : inputs)
        for (const auto& img : f.images) {
            const auto& a = answers.at(img.value);
            if (a.digest) continue;
            ++unpinned;
            std::fprintf(stderr, "regpin: %s line %zu: cannot pin %s: %s\n",
                         f.name == "-" ? "standard input" : f.name.c_str(), img.line,
                         img.value.c_str(), a.reason.c_str());
        }
    if (unpinned && !allow_unpinned) {
        std::fprintf(stderr,
                     "regpin: %d image(s) cannot be pinned; nothing written (--allow-unpinned "
                     "leaves them as they are)\n",
                     unpinned);
        return 1;
    }

    std::vector<std::string> outputs;
    for (const auto& f : inputs) {
        std::vector<yaml_image> change;
        std::vector<std::string> values;
        for (const auto& img : f.images) {
            const auto& a = answers.at(img.value);
            if (!a.digest || a.state == "digest") continue;
            change.push_back(img);
            values.push_back(img.value + "@" + *a.digest);
        }
        try {
            outputs.push_back(replace_images(f.text, change, values));
        } catch (const yaml_error& e) {
            fail(f.name + ": " + e.what());
        }
    }
    if (!lock_path.empty()) {
        auto when = pins::format_time(storage::now_ms());
        json lock = {
            {"lockVersion", 1}, {"generated_by", "regpin resolve"}, {"images", json::array()}};
        for (const auto& [image, a] : answers) lock["images"].push_back(lock_entry(image, a, when));
        std::ofstream out(lock_path, std::ios::binary | std::ios::trunc);
        if (!(out << lock.dump(2) << "\n")) fail("cannot write the lock file '" + lock_path + "'");
    }
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!in_place) {
            std::fwrite(outputs[i].data(), 1, outputs[i].size(), stdout);
            continue;
        }
        if (outputs[i] == inputs[i].text) continue;
        auto tmp = inputs[i].name + ".regpin-tmp";
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            if (!(out << outputs[i])) fail("cannot write '" + tmp + "'");
        }
        if (std::rename(tmp.c_str(), inputs[i].name.c_str()) != 0)
            fail("cannot replace '" + inputs[i].name + "'");
    }
    std::size_t pinned = 0, pending = 0;
    for (const auto& [image, a] : answers) {
        if (a.state == "pinned") ++pinned;
        if (a.state == "pending") {
            ++pending;
            std::fprintf(stderr,
                         "regpin: %s: the upstream moved the tag to %s; pinned to %s until an "
                         "operator approves\n",
                         image.c_str(), a.upstream_digest.c_str(), a.digest->c_str());
        }
    }
    std::fprintf(stderr, "regpin: %zu image(s): %zu pinned, %zu pending, %d left unpinned\n",
                 answers.size(), pinned, pending, unpinned);
    return 0;
}

}  // namespace regpin::proxy::cli
