#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "proxy/bundle/bundle.hpp"
#include "proxy/bundle/pins_file.hpp"
#include "proxy/bundle/tar.hpp"
#include "proxy/oci/manifest.hpp"
#include "proxy/oci/media_types.hpp"
#include "proxy/oci/reference.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/pins/writer.hpp"
#include "storage/blob_store.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"
#include "storage/referrers_store.hpp"
#include "storage/rocksdb_pin_store.hpp"

namespace regpin::proxy::bundle {

using nlohmann::json;

namespace {

constexpr std::uint64_t manifest_limit = 4 * 1024 * 1024;
constexpr std::size_t io_chunk = 256 * 1024;

using storage::now_ms;

using wanted_pin = bundled_pin;

wanted_pin plain_pin(const oci::image_reference& ref, const std::string& digest,
                     const std::string& media_type) {
    return {{ref.registry, ref.repository, ref.tag, oci::accepts_all},
            *storage::digest::parse(digest),
            media_type,
            now_ms()};
}

class importer {
public:
    importer(const import_request& r, import_report& report)
        : r_(r), report_(report), in_(r.bundle, std::ios::binary) {
        if (!in_) throw std::runtime_error("cannot read '" + r.bundle + "'");
        entries_ = index_tar(in_);
        if (!entries_.count("oci-layout") || !entries_.count("index.json"))
            throw std::runtime_error("'" + r.bundle +
                                     "' is not an OCI image layout (no oci-layout or index.json)");
    }

    std::vector<wanted_pin> pins_to_make() {
        auto index =
            json::parse(read_entry(in_, entries_.at("index.json"), manifest_limit), nullptr, false);
        if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
            throw std::runtime_error("index.json is not an OCI index");
        std::map<std::string, std::string> types;  // digest -> media type from the descriptor
        std::vector<std::pair<std::string, std::string>> named;  // ref.name -> digest
        for (const auto& m : index["manifests"]) {
            auto d = m.value("digest", std::string());
            if (!storage::digest::parse(d))
                throw std::runtime_error("index.json lists an invalid digest '" + d + "'");
            types[d] = m.value("mediaType", std::string());
            std::string name;
            if (m.contains("annotations") && m["annotations"].is_object())
                name = m["annotations"].value("org.opencontainers.image.ref.name", std::string());
            named.emplace_back(name, d);
        }
        std::vector<wanted_pin> out;
        if (!r_.as.empty()) {
            auto parsed = oci::parse_image_reference(r_.as);
            if (!parsed) throw std::runtime_error("--as: " + parsed.error().message);
            const auto& ref = *parsed;
            std::string digest;
            if (named.size() == 1) digest = named[0].second;
            for (const auto& [name, d] : named)
                if (name == ref.tag || name == ref.str()) digest = d;
            if (digest.empty())
                throw std::runtime_error("the layout holds " + std::to_string(named.size()) +
                                         " images; none is named '" + ref.tag + "' for --as");
            out.push_back(plain_pin(ref, digest, types[digest]));
            return out;
        }
        if (entries_.count("regpin-pins.json"))
            return read_pins_file(
                read_entry(in_, entries_.at("regpin-pins.json"), 64 * 1024 * 1024));
        for (const auto& [name, d] : named) {
            auto parsed = oci::parse_image_reference(name);
            if (!parsed)
                throw std::runtime_error(
                    "this layout carries no provenance ('" + name +
                    "' is not REGISTRY/REPOSITORY:TAG): pass --as REGISTRY/REPO:TAG");
            out.push_back(plain_pin(*parsed, d, types[d]));
        }
        return out;
    }

    // regpin-referrers.json: each subject's referrers index as last fetched at the connected
    // site. Validated whole before anything is written; the referring manifests the bundle
    // holds are stored like pinned content (verified), the others are only listed.
    struct kept_referrers {
        std::string registry, repository;
        storage::digest subject;
        storage::referrers_record record;
    };
    std::vector<kept_referrers> referrers_to_keep(storage::manifest_store& manifests,
                                                  storage::blob_store& blobs) {
        std::vector<kept_referrers> out;
        if (!entries_.count("regpin-referrers.json")) return out;
        auto doc = json::parse(read_entry(in_, entries_.at("regpin-referrers.json"), 64 << 20),
                               nullptr, false);
        if (!doc.is_object() || !doc.contains("referrers") || !doc["referrers"].is_array())
            throw std::runtime_error("regpin-referrers.json is malformed");
        for (std::size_t i = 0; i < doc["referrers"].size(); ++i) {
            const auto& e = doc["referrers"][i];
            auto where = "regpin-referrers.json: referrers[" + std::to_string(i) + "]";
            if (!e.is_object()) throw std::runtime_error(where + " is not an object");
            auto text = [&](const char* k) {
                if (!e.contains(k) || !e[k].is_string())
                    throw std::runtime_error(where + " has no string \"" + k + "\"");
                return e[k].get<std::string>();
            };
            auto registry = text("registry"), repository = text("repository");
            auto parsed = oci::parse_image_reference(registry + "/" + repository + ":x");
            if (!parsed || parsed->registry != registry || parsed->repository != repository)
                throw std::runtime_error(where + ": not a valid registry and repository");
            auto subject = storage::digest::parse(text("subject"));
            if (!subject) throw std::runtime_error(where + ": \"subject\" is not a digest");
            auto index_text = text("index");
            auto index = json::parse(index_text, nullptr, false);
            if (!index.is_object() || !index.contains("manifests") ||
                !index["manifests"].is_array())
                throw std::runtime_error(where + ": \"index\" is not an image index");
            std::int64_t fetched = e.contains("fetched_ms") && e["fetched_ms"].is_number_integer()
                                       ? e["fetched_ms"].get<std::int64_t>()
                                       : 0;
            for (const auto& d : index["manifests"]) {
                auto rd = d.is_object() ? storage::digest::parse(d.value("digest", std::string()))
                                        : std::nullopt;
                if (!rd) throw std::runtime_error(where + ": a referrer without a digest");
                manifest(manifests, blobs, *rd, d.value("mediaType", std::string()),
                         registry + "/" + repository + " referrer", false);
            }
            out.push_back({registry, repository, *subject, {index_text, fetched}});
        }
        return out;
    }

    // Stores every manifest and blob the pins need, each verified first.
    void store_content(storage::manifest_store& manifests, storage::blob_store& blobs,
                       const std::vector<wanted_pin>& wanted) {
        for (const auto& w : wanted)
            manifest(manifests, blobs, w.digest, w.media_type, storage::display_name(w.key), true);
    }

private:
    const tar_entry& entry_for(const storage::digest& d, const std::string& what) {
        auto name = "blobs/" + std::string(d.algorithm()) + "/" + std::string(d.hex());
        auto it = entries_.find(name);
        if (it == entries_.end())
            throw std::runtime_error(what + ": " + d.str() + " is not in the bundle");
        return it->second;
    }

    void manifest(storage::manifest_store& manifests, storage::blob_store& blobs,
                  const storage::digest& d, std::string media_type, const std::string& what,
                  bool required) {
        if (!done_manifests_.insert(d.str()).second) return;
        auto name = "blobs/" + std::string(d.algorithm()) + "/" + std::string(d.hex());
        if (!entries_.count(name)) {
            if (required)
                throw std::runtime_error(what + ": manifest " + d.str() + " is not in the bundle");
            report_.warnings.push_back(what + ": " + d.str() +
                                       " is not in the bundle (a platform never pulled)");
            return;
        }
        auto bytes = read_entry(in_, entries_.at(name), manifest_limit);
        if (!storage::manifest_matches(d, {oci::manifest_media_type(media_type, bytes), bytes}))
            throw std::runtime_error(what + ": manifest " + d.str() + " does not match its digest");
        auto refs = oci::read_manifest(media_type, bytes);
        if (!refs) throw std::runtime_error(what + ": manifest " + d.str() + " does not parse");
        media_type = oci::manifest_media_type(media_type, bytes);
        if (refs->is_index) {
            for (const auto& c : refs->children)
                manifest(manifests, blobs, *storage::digest::parse(c.digest), c.media_type,
                         what + " (" + c.platform + ")", false);
        } else {
            if (refs->config) blob(blobs, *storage::digest::parse(refs->config->digest), what);
            for (const auto& l : refs->layers) blob(blobs, *storage::digest::parse(l.digest), what);
        }
        // Stored after everything it refers to, so a stored manifest is always complete.
        auto existing = manifests.find(d);
        if (existing && *existing) return;
        if (!manifests.put(d, {media_type, bytes}))
            throw std::runtime_error("cannot store manifest " + d.str());
        ++report_.manifests_added;
    }

    void blob(storage::blob_store& blobs, const storage::digest& d, const std::string& what) {
        if (!done_blobs_.insert(d.str()).second) return;
        auto rec = blobs.find(d);
        if (rec && *rec) {
            ++report_.blobs_present;
            return;
        }
        const auto& e = entry_for(d, what);
        if (!blobs.begin(d, storage::blob_store::default_chunk_size))
            throw std::runtime_error("cannot write to the data folder");
        storage::hasher h(d.algorithm());
        std::string chunk;
        std::vector<char> buf(io_chunk);
        std::uint64_t left = e.size, index = 0;
        in_.seekg(static_cast<std::streamoff>(e.offset));
        while (left > 0) {
            // Never cross a chunk boundary in one read: chunks are exactly chunk_size bytes.
            auto room = storage::blob_store::default_chunk_size - chunk.size();
            auto n = static_cast<std::size_t>(std::min<std::uint64_t>({left, buf.size(), room}));
            if (!in_.read(buf.data(), static_cast<std::streamsize>(n))) {
                (void)blobs.discard(d);
                throw std::runtime_error("truncated bundle while reading " + d.str());
            }
            h.update(std::span<const char>(buf.data(), n));
            chunk.append(buf.data(), n);
            left -= n;
            if (chunk.size() >= storage::blob_store::default_chunk_size || left == 0) {
                if (!blobs.put_chunk(d, index++, chunk)) {
                    (void)blobs.discard(d);
                    throw std::runtime_error("cannot write to the data folder");
                }
                chunk.clear();
            }
        }
        // The blob becomes visible only now, after its digest verified.
        if (!(h.finish() == d)) {
            (void)blobs.discard(d);
            throw std::runtime_error(what + ": blob " + d.str() +
                                     " does not match its digest; nothing was pinned");
        }
        if (!blobs.commit(d, e.size)) throw std::runtime_error("cannot commit blob " + d.str());
        ++report_.blobs_added;
    }

    const import_request& r_;
    import_report& report_;
    std::ifstream in_;
    std::map<std::string, tar_entry> entries_;
    std::set<std::string> done_manifests_;
    std::set<std::string> done_blobs_;
};

// `p` with the bundle's state, pending digest and decisions.
storage::pin as_bundled(storage::pin p, const wanted_pin& w) {
    p.first_seen_ms = w.first_seen_ms;
    p.state = w.state;
    p.pending_digest = w.pending_digest;
    p.pending_since_ms = w.pending_digest ? w.pending_since_ms : 0;
    for (const auto& d : w.decided)
        if (std::find(p.decided.begin(), p.decided.end(), d) == p.decided.end())
            p.decided.push_back(d);
    return p;
}

// "imported", with the state when it is not plain pinned (action) and what is pending.
storage::pin_event imported_event(const wanted_pin& w, std::string old_digest,
                                  const std::string& actor) {
    storage::pin_event e{0,
                         now_ms(),
                         storage::event_type::imported,
                         w.key,
                         std::move(old_digest),
                         w.digest.str(),
                         actor,
                         "",
                         "",
                         ""};
    if (w.state != storage::pin_state::pinned) {
        e.action = std::string(storage::to_string(w.state));
        e.summary_json = nlohmann::json{{"pending_digest", w.pending_digest->str()}}.dump();
    }
    return e;
}

}  // namespace

import_report import_bundle(const import_request& r) {
    import_report report;
    importer imp(r, report);
    auto wanted = imp.pins_to_make();

    storage::open_report opened;
    auto db = storage::open_database(r.data_dir, opened);
    if (!db) {
        if (db.error() == storage::errc::locked)
            throw std::runtime_error(
                "the data folder '" + r.data_dir +
                "' is in use by a running regpin: stop it, import, start it again");
        throw std::runtime_error("cannot open the data folder '" + r.data_dir +
                                 "': " + opened.error_detail);
    }
    storage::manifest_store manifests(*db);
    storage::blob_store blobs(*db);
    storage::rocksdb_pin_store store(*db);
    imp.store_content(manifests, blobs, wanted);
    auto kept = imp.referrers_to_keep(manifests, blobs);

    pins::policy_table policies(r.settings);
    auto actor = "import:" + r.bundle.substr(r.bundle.find_last_of('/') + 1);

    for (const auto& w : wanted) {
        auto m = manifests.find(w.digest);
        if (!m || !*m) throw std::runtime_error("manifest " + w.digest.str() + " vanished");
        auto existing = store.find(w.key);
        if (!existing) throw std::runtime_error("cannot read pins");
        auto name = storage::display_name(w.key);
        if (!*existing) {
            // As the connected site had it: state, pending digest, decisions.
            auto p = as_bundled(pins::serve_digest({w.key, w.digest}, w.digest, **m, now_ms()), w);
            storage::pin_change change{w.key, std::nullopt, p};
            change.events.push_back(imported_event(w, "", actor));
            if (!pins::commit_offline(store, {change}))
                throw std::runtime_error("cannot write the pin for " + name);
            ++report.pins_created;
            continue;
        }
        const auto& cur = **existing;
        if (cur.manifest_digest == w.digest) {
            // The same digest: a pin that awaits nothing here takes the bundle's state (a
            // re-point pending or rejected there); one that awaits an operator stays as it is.
            if (cur.state != storage::pin_state::pinned || w.state == storage::pin_state::pinned) {
                ++report.pins_unchanged;
                continue;
            }
            auto np = as_bundled(cur, w);
            storage::pin_change change{w.key, cur, np};
            change.events.push_back(imported_event(w, cur.manifest_digest.str(), actor));
            if (!pins::commit_offline(store, {change}))
                throw std::runtime_error("cannot write the pin for " + name);
            report.conflicts.push_back(name + ": pinned " + cur.manifest_digest.str() +
                                       ", bundle: " + std::string(storage::to_string(w.state)) +
                                       " with " + w.pending_digest->str() + " pending: taken");
            continue;
        }
        // A different pin already holds: never overwritten silently. The policy decides, as for
        // an upstream re-point, and the event (and alert) says so.
        auto policy = policies.for_key(w.key);
        auto decision = pins::decide_repoint(policy.policy, cur, w.digest.str());
        if (!decision) {
            // An operator decided about this digest, or it is already pending: as it was.
            ++report.pins_unchanged;
            continue;
        }
        auto np = pins::apply_repoint(cur, *decision, w.digest, **m, now_ms());
        // A bundle is not a check against the upstream: a kept pin was not verified now.
        if (!decision->move_pin) np.last_verified_ms = cur.last_verified_ms;
        storage::pin_change change{w.key, cur, np};
        change.events.push_back({0, now_ms(), storage::event_type::repointed, w.key,
                                 cur.manifest_digest.str(), w.digest.str(), actor,
                                 std::string(pins::to_string(policy.policy)),
                                 std::string(pins::to_string(decision->action)), "{}"});
        if (decision->alert)
            for (const auto& hook : r.settings.webhooks) change.alerts.push_back({0, hook.url});
        if (!pins::commit_offline(store, {change}))
            throw std::runtime_error("cannot write the pin for " + name);
        report.conflicts.push_back(name + ": pinned " + cur.manifest_digest.str() + ", bundle " +
                                   w.digest.str() + ": policy " +
                                   std::string(pins::to_string(policy.policy)) + ", " +
                                   std::string(pins::to_string(decision->action)));
    }
    storage::referrers_store referrers(*db);
    for (const auto& k : kept) {
        // A fresher listing already here (fetched online since) is kept.
        auto existing = referrers.find(k.registry, k.repository, k.subject);
        if (existing && *existing && (*existing)->fetched_ms >= k.record.fetched_ms) continue;
        if (!referrers.put(k.registry, k.repository, k.subject, k.record))
            throw std::runtime_error("cannot store the referrers of " + k.subject.str());
    }
    return report;
}

}  // namespace regpin::proxy::bundle
