#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "proxy/bundle/bundle.hpp"
#include "proxy/bundle/pins_file.hpp"
#include "proxy/bundle/tar.hpp"
#include "proxy/oci/manifest.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/pins/views.hpp"
#include "storage/blob_store.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"
#include "storage/referrers_store.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::bundle {

using nlohmann::json;

namespace {

std::string blob_path(const storage::digest& d) {
    return "blobs/" + std::string(d.algorithm()) + "/" + std::string(d.hex());
}

struct collected {
    std::map<std::string, storage::manifest> manifests;  // digest -> manifest
    std::map<std::string, storage::blob_record> blobs;   // digest -> record
};

}  // namespace

export_report export_bundle(const export_request& r) {
    export_report report;
    storage::open_report opened;
    auto db = storage::open_database(r.data_dir, opened, storage::open_mode::read_only);
    if (!db)
        throw std::runtime_error("cannot open the data folder '" + r.data_dir +
                                 "': " + opened.error_detail);
    storage::rocksdb_pin_store pins(*db);
    storage::manifest_store manifests(*db);
    storage::blob_store blobs(*db);

    std::vector<storage::pin> chosen;
    if (r.all) {
        storage::pin_filter all;
        all.limit = static_cast<std::size_t>(-1);
        auto listed = pins.list(all);
        if (!listed) throw std::runtime_error("cannot read pins");
        chosen = std::move(*listed);
    }
    for (const auto& ref : r.images) {
        auto parsed = oci::parse_image_reference(ref);
        if (!parsed) throw std::invalid_argument(parsed.error().message);
        const auto& ir = *parsed;
        auto listed = pins.list_repository(ir.registry, ir.repository);
        if (!listed) throw std::runtime_error("cannot read pins");
        bool found = false;
        for (auto& p : *listed)
            if (p.key.tag == ir.tag) {
                chosen.push_back(p);
                found = true;
            }
        if (!found)
            throw std::runtime_error(ir.str() + " is not pinned in " + opened.path +
                                     " (pull or prefetch it first)");
    }
    // A pinned image's signatures and attestations travel with it: the pins of its artifact
    // tags (cosign's sha256-<hex>.sig/.att/.sbom, the referrers fallback sha256-<hex>). With
    // --all they are chosen already.
    if (!r.all) {
        std::set<std::string> have;
        for (const auto& p : chosen)
            have.insert(storage::display_name(p.key) + "#" + std::to_string(p.key.accept_class));
        std::vector<storage::pin> artifacts;
        std::set<std::pair<std::string, std::string>> repos;
        for (const auto& p : chosen) repos.insert({p.key.registry, p.key.repository});
        for (const auto& [registry, repository] : repos) {
            auto listed = pins.list_repository(registry, repository);
            if (!listed) throw std::runtime_error("cannot read pins");
            for (auto& a : *listed) {
                if (!pins::is_artifact_tag(a.key.tag)) continue;
                auto subject = "sha256:" + a.key.tag.substr(7, 64);
                bool signs_chosen = std::any_of(chosen.begin(), chosen.end(), [&](const auto& p) {
                    return p.key.registry == registry && p.key.repository == repository &&
                           p.manifest_digest.str() == subject;
                });
                auto id = storage::display_name(a.key) + "#" + std::to_string(a.key.accept_class);
                if (signs_chosen && have.insert(id).second) artifacts.push_back(std::move(a));
            }
        }
        chosen.insert(chosen.end(), artifacts.begin(), artifacts.end());
    }
    if (chosen.empty())
        throw std::runtime_error(r.all ? "nothing to export: " + opened.path + " holds no pins"
                                       : "nothing to export: give --image REF or --all");

    collected c;
    std::vector<std::string> missing;
    auto need_blob = [&](const std::string& digest, const std::string& what) {
        auto d = storage::digest::parse(digest);
        if (!d) {
            missing.push_back(what + ": invalid digest " + digest);
            return;
        }
        if (c.blobs.count(digest)) return;
        auto rec = blobs.find(*d);
        if (!rec || !*rec) {
            missing.push_back(what + ": blob " + digest + " is not cached");
            return;
        }
        c.blobs[digest] = **rec;
    };
    auto image = [&](const std::string& digest, const storage::manifest& m,
                     const std::string& what) {
        auto refs = oci::read_manifest(m.media_type, m.bytes);
        if (!refs) {
            missing.push_back(what + ": manifest " + digest + " does not parse");
            return;
        }
        if (refs->config) need_blob(refs->config->digest, what);
        for (const auto& l : refs->layers) need_blob(l.digest, what);
    };
    // How many of an image's config and layers are not cached (unparseable: counted as one).
    auto uncached_blobs = [&](const storage::manifest& m) {
        auto refs = oci::read_manifest(m.media_type, m.bytes);
        if (!refs) return std::size_t{1};
        std::vector<std::string> digests;
        if (refs->config) digests.push_back(refs->config->digest);
        for (const auto& l : refs->layers) digests.push_back(l.digest);
        std::size_t n = 0;
        for (const auto& digest : digests) {
            auto d = storage::digest::parse(digest);
            auto rec = d ? blobs.find(*d) : storage::result<std::optional<storage::blob_record>>{};
            if (!d || !rec || !*rec) ++n;
        }
        return n;
    };
    for (const auto& p : chosen) {
        auto what = storage::display_name(p.key);
        auto top = p.manifest_digest.str();
        if (c.manifests.count(top)) continue;
        auto m = manifests.find(p.manifest_digest);
        if (!m || !*m) {
            missing.push_back(what + ": manifest " + top + " is not cached");
            continue;
        }
        if ((*m)->media_type == storage::docker_schema1_signed) {
            // An OCI layout names blobs by the digest of their bytes; a signed schema 1
            // manifest's digest is its payload's, so no layout reader could verify it.
            missing.push_back(what + ": manifest " + top +
                              " is a signed Docker schema 1 manifest, which an OCI layout cannot "
                              "hold (its digest is not its bytes')");
            continue;
        }
        c.manifests[top] = **m;
        auto refs = oci::read_manifest((*m)->media_type, (*m)->bytes);
        if (refs && refs->is_index) {
            for (const auto& child : refs->children) {
                auto cd = storage::digest::parse(child.digest);
                auto cm =
                    cd ? manifests.find(*cd) : storage::result<std::optional<storage::manifest>>{};
                if (!cd || !cm || !*cm) {
                    report.warnings.push_back(
                        what + ": platform " +
                        (child.platform.empty() ? child.digest : child.platform) +
                        " was never pulled; not in the bundle");
                    continue;
                }
                // A platform goes in whole or not at all: with pin_content "manifests" regpin
                // holds every platform's manifest and config, but only the layers pulled.
                auto uncached = uncached_blobs(**cm);
                if (uncached > 0) {
                    report.warnings.push_back(
                        what + ": platform " +
                        (child.platform.empty() ? child.digest : child.platform) + " has " +
                        std::to_string(uncached) +
                        " blob(s) never pulled (pin_content: all holds them); not in the bundle");
                    continue;
                }
                c.manifests[child.digest] = **cm;
                image(child.digest, **cm, what + " (" + child.platform + ")");
            }
        } else {
            image(top, **m, what);
        }
    }
    if (!missing.empty()) {
        std::string msg = "cannot export (what is missing, or cannot be in a bundle):";
        for (const auto& m : missing) msg += "\n  " + m;
        throw std::runtime_error(msg);
    }

    // index.json: one entry per (reference, digest); pins of several accept classes that
    // agree share one.
    json index = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.oci.image.index.v1+json"},
                  {"manifests", json::array()}};
    std::set<std::pair<std::string, std::string>> listed;
    json pins_doc = {{"version", 1},
                     {"exported_at", pins::format_time(storage::now_ms())},
                     {"pins", json::array()}};
    for (const auto& p : chosen) {
        auto name = storage::display_name(p.key);
        auto digest = p.manifest_digest.str();
        if (listed.insert({name, digest}).second) {
            const auto& m = c.manifests[digest];
            index["manifests"].push_back(
                {{"mediaType", m.media_type},
                 {"digest", digest},
                 {"size", m.bytes.size()},
                 {"annotations", {{"org.opencontainers.image.ref.name", name}}}});
        }
        auto entry = pins_file_entry(p);
        entry["history"] = json::array();
        if (auto h = pins.history(p.key))
            for (const auto& e : *h) entry["history"].push_back(pins::event_json(e));
        pins_doc["pins"].push_back(entry);
    }

    // Referrers as last fetched for each pinned digest, with the referring manifests (and their
    // blobs) the cache holds: signature verification works at the air-gapped site.
    storage::referrers_store referrers(*db);
    json referrers_doc = {{"version", 1}, {"referrers", json::array()}};
    std::set<std::string> subjects_done;
    for (const auto& p : chosen) {
        auto what = storage::display_name(p.key);
        if (!subjects_done
                 .insert(p.key.registry + "/" + p.key.repository + "@" + p.manifest_digest.str())
                 .second)
            continue;
        auto rec = referrers.find(p.key.registry, p.key.repository, p.manifest_digest);
        if (!rec || !*rec) continue;
        auto index = json::parse((*rec)->index, nullptr, false);
        if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
            continue;
        referrers_doc["referrers"].push_back({{"registry", p.key.registry},
                                              {"repository", p.key.repository},
                                              {"subject", p.manifest_digest.str()},
                                              {"fetched_ms", (*rec)->fetched_ms},
                                              {"index", (*rec)->index}});
        for (const auto& d : index["manifests"]) {
            auto digest = d.is_object() ? d.value("digest", std::string()) : std::string();
            auto rd = storage::digest::parse(digest);
            if (!rd || c.manifests.count(digest)) continue;
            auto m = manifests.find(*rd);
            if (!m || !*m || uncached_blobs(**m) > 0) {
                report.warnings.push_back(what + ": referrer " + digest +
                                          " was never pulled; its listing is in the bundle, "
                                          "the referrer is not");
                continue;
            }
            c.manifests[digest] = **m;
            image(digest, **m, what + " (referrer)");
        }
    }

    tar_writer tar(r.output);
    tar.add("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    for (const auto& [digest, m] : c.manifests) {
        tar.add(blob_path(*storage::digest::parse(digest)), m.bytes);
        report.bytes += m.bytes.size();
    }
    for (const auto& [digest, rec] : c.blobs) {
        auto d = *storage::digest::parse(digest);
        tar.add(blob_path(d), rec.size, [&](const std::function<void(std::string_view)>& write) {
            if (!blobs.read_blob(d, rec, write))
                throw std::runtime_error("cannot read blob " + digest);
        });
        report.bytes += rec.size;
    }
    tar.add("index.json", index.dump(2));
    tar.add("regpin-pins.json", pins_doc.dump(2));
    if (!referrers_doc["referrers"].empty())
        tar.add("regpin-referrers.json", referrers_doc.dump(2));
    tar.finish();
    report.pins = chosen.size();
    report.manifests = c.manifests.size();
    report.blobs = c.blobs.size();
    return report;
}

}  // namespace regpin::proxy::bundle
