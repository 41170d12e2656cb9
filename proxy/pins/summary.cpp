#include "proxy/pins/summary.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "proxy/oci/manifest.hpp"
#include "proxy/oci/media_types.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::pins {

namespace {

using nlohmann::json;
using opt_string = std::optional<std::string>;

constexpr const char* preferred_platform = "linux/amd64";

// Every accessor checks the type first: nothing here may throw on a hostile document.
const json* member(const json& j, const char* key) {
    if (!j.is_object()) return nullptr;
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
}

opt_string string_at(const json& j, const char* key) {
    const json* v = member(j, key);
    if (!v || !v->is_string()) return std::nullopt;
    return v->get<std::string>();
}

std::optional<json> parse_object(const std::string& bytes) {
    auto doc = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) return std::nullopt;  // also covers a parse error (discarded)
    return doc;
}

// The caller's Content-Type ends up in the summary; keep it printable ASCII so that dumping
// the JSON can never fail on invalid UTF-8.
std::string printable(std::string s) {
    for (char& c : s)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    return s;
}

enum class doc_kind { unreadable, index, manifest, unsupported };

std::string_view kind_name(doc_kind k) {
    constexpr std::string_view names[] = {"unreadable", "index", "manifest", "unsupported"};
    return names[static_cast<int>(k)];
}

std::string short_media_type(const opt_string& mt) {
    if (!mt) return "unknown";
    if (*mt == oci::docker_manifest) return "docker manifest";
    if (*mt == oci::docker_manifest_list) return "docker manifest list";
    if (*mt == oci::oci_manifest) return "oci manifest";
    if (*mt == oci::oci_index) return "oci index";
    return *mt;
}

struct manifest_info {
    opt_string config_digest;
    std::vector<std::string> layers;
};

std::optional<manifest_info> read_manifest(const json& doc) {
    const json* layers = member(doc, "layers");
    if (!layers || !layers->is_array()) return std::nullopt;
    manifest_info m;
    if (const json* config = member(doc, "config")) m.config_digest = string_at(*config, "digest");
    for (const auto& l : *layers) m.layers.push_back(string_at(l, "digest").value_or(""));
    return m;
}

struct config_info {
    opt_string created, revision, version, platform;
};

config_info read_config(const json& doc) {
    config_info c;
    c.created = string_at(doc, "created");
    if (const json* config = member(doc, "config"))
        if (const json* labels = member(*config, "Labels")) {
            c.revision = string_at(*labels, "org.opencontainers.image.revision");
            c.version = string_at(*labels, "org.opencontainers.image.version");
        }
    auto os = string_at(doc, "os"), arch = string_at(doc, "architecture");
    auto variant = string_at(doc, "variant");
    if (os && arch) c.platform = *os + "/" + *arch + (variant ? "/" + *variant : "");
    return c;
}

struct side {
    const image_docs& docs;
    std::string name;  // "pinned" or "upstream"
    opt_string media_type;
    doc_kind kind = doc_kind::unreadable;
    std::vector<std::pair<std::string, std::string>> platforms;  // index: in document order
    std::string top_digest;                                      // a single manifest's digest
    // What is compared: the manifest itself, or the chosen platform's child of an index.
    opt_string platform;
    opt_string child_digest;
    std::optional<manifest_info> manifest;
    std::optional<config_info> config;

    side(const image_docs& d, std::string n) : docs(d), name(std::move(n)) {}

    opt_string child_of(const std::string& p) const {
        for (const auto& [plat, digest] : platforms)
            if (plat == p) return digest;
        return std::nullopt;
    }
};

void read_index_entries(side& s, const json& entries) {
    for (const auto& e : entries) {
        auto digest = string_at(e, "digest");
        const json* plat = member(e, "platform");
        if (!digest || !plat) continue;
        // BuildKit's attestation manifests (platform unknown/unknown) change with every build.
        if (const json* ann = member(e, "annotations"))
            if (string_at(*ann, "vnd.docker.reference.type") == "attestation-manifest") continue;
        auto os = string_at(*plat, "os"), arch = string_at(*plat, "architecture");
        if (!os || !arch) continue;
        auto variant = string_at(*plat, "variant");
        auto key = *os + "/" + *arch + (variant ? "/" + *variant : "");
        if (!s.child_of(key)) s.platforms.emplace_back(std::move(key), std::move(*digest));
    }
}

void read_top(side& s, std::vector<std::string>& errors) {
    std::string mt = printable(oci::manifest_media_type(s.docs.media_type, s.docs.manifest_bytes));
    auto doc = parse_object(s.docs.manifest_bytes);
    if (!mt.empty()) s.media_type = mt;
    if (!doc) {
        errors.push_back(s.name + " manifest (not JSON)");
        return;
    }
    const json* entries = member(*doc, "manifests");
    bool is_index = mt == oci::oci_index || mt == oci::docker_manifest_list;
    bool is_manifest = mt == oci::oci_manifest || mt == oci::docker_manifest;
    if (!is_index && !is_manifest) {  // unknown or absent media type: go by the structure
        is_index = entries != nullptr;
        is_manifest = !is_index && member(*doc, "layers");
    }
    if (is_index) {
        if (!entries || !entries->is_array()) {
            errors.push_back(s.name + " index (no manifests list)");
            return;
        }
        s.kind = doc_kind::index;
        read_index_entries(s, *entries);
    } else if (is_manifest) {
        s.manifest = read_manifest(*doc);
        if (!s.manifest) {
            errors.push_back(s.name + " manifest (no layers list)");
            return;
        }
        s.kind = doc_kind::manifest;
        s.top_digest = storage::sha256_of(s.docs.manifest_bytes).str();
    } else {
        s.kind = doc_kind::unsupported;
        errors.push_back(s.name + " manifest (unsupported media type " + mt + ")");
    }
}

void read_child(side& s, const std::string& platform, std::vector<std::string>& errors) {
    s.platform = platform;
    s.child_digest = s.child_of(platform);
    if (!s.child_digest) return;
    auto it = s.docs.manifests_by_digest.find(*s.child_digest);
    if (it == s.docs.manifests_by_digest.end()) return;
    auto doc = parse_object(it->second);
    if (doc) s.manifest = read_manifest(*doc);
    if (!s.manifest)
        errors.push_back(s.name + " " + platform + " manifest (not an image manifest)");
}

void read_config_of(side& s, std::vector<std::string>& errors) {
    if (!s.manifest || !s.manifest->config_digest) return;
    auto it = s.docs.configs_by_digest.find(*s.manifest->config_digest);
    if (it == s.docs.configs_by_digest.end()) return;
    auto doc = parse_object(it->second);
    if (!doc) {
        errors.push_back(s.name + " config " + *s.manifest->config_digest + " (not JSON)");
        return;
    }
    s.config = read_config(*doc);
}

struct analysis {
    side pinned, upstream;
    opt_string representative;  // the platform compared across two indexes or index + manifest
    std::vector<std::string> errors;

    analysis(const image_docs& p, const image_docs& u)
        : pinned(p, "pinned"), upstream(u, "upstream") {
        read_top(pinned, errors);
        read_top(upstream, errors);
        for (side* s : {&pinned, &upstream}) {
            if (s->kind != doc_kind::manifest) continue;
            read_config_of(*s, errors);
            if (s->config) s->platform = s->config->platform;
        }
        representative = choose_representative();
        for (side* s : {&pinned, &upstream}) {
            if (s->kind != doc_kind::index || s->platforms.empty()) continue;
            std::string own =
                s->child_of(preferred_platform) ? preferred_platform : s->platforms.front().first;
            read_child(*s, representative.value_or(own), errors);
            read_config_of(*s, errors);
        }
    }

    opt_string choose_representative() const {
        auto is_index = [](const side& s) { return s.kind == doc_kind::index; };
        if (is_index(pinned) && is_index(upstream)) {
            if (pinned.child_of(preferred_platform) && upstream.child_of(preferred_platform))
                return preferred_platform;
            for (const auto& [plat, digest] : pinned.platforms)
                if (upstream.child_of(plat)) return plat;
            return std::nullopt;
        }
        const side* index = is_index(pinned) ? &pinned : is_index(upstream) ? &upstream : nullptr;
        const side* single = index == &pinned ? &upstream : &pinned;
        if (index && single->kind == doc_kind::manifest && single->platform &&
            index->child_of(*single->platform))
            return single->platform;
        return std::nullopt;
    }

    // Platform -> manifest digest for the platform diff; nullopt when a side has no such view.
    std::optional<std::map<std::string, std::string>> platform_map(const side& s) const {
        if (s.kind == doc_kind::index) return std::map(s.platforms.begin(), s.platforms.end());
        if (s.kind == doc_kind::manifest && s.platform)
            return std::map<std::string, std::string>{{*s.platform, s.top_digest}};
        return std::nullopt;
    }
};

json pair_of(const opt_string& p, const opt_string& u) {
    return {{"pinned", p ? json(*p) : json(nullptr)}, {"upstream", u ? json(*u) : json(nullptr)}};
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : std::string(sep)) + p;
    return out;
}

json platforms_json(const analysis& a, std::vector<std::string>& text) {
    if (a.pinned.kind != doc_kind::index && a.upstream.kind != doc_kind::index) return nullptr;
    auto p = a.platform_map(a.pinned), u = a.platform_map(a.upstream);
    if (!p || !u) return nullptr;
    std::vector<std::string> added, removed, changed;
    std::size_t unchanged = 0;
    for (const auto& [plat, digest] : *u) {
        auto it = p->find(plat);
        if (it == p->end())
            added.push_back(plat);
        else if (it->second != digest)
            changed.push_back(plat);
        else
            ++unchanged;
    }
    for (const auto& [plat, digest] : *p)
        if (!u->contains(plat)) removed.push_back(plat);

    std::vector<std::string> pieces;
    auto piece = [&](std::size_t n, std::string verb, const std::vector<std::string>* names) {
        if (n == 0) return;
        std::string s = std::to_string(n) + " ";
        if (pieces.empty()) s += n == 1 ? "platform " : "platforms ";
        s += verb;
        if (names) s += " (" + join(*names, ", ") + ")";
        pieces.push_back(std::move(s));
    };
    piece(added.size(), "added", &added);
    piece(removed.size(), "removed", &removed);
    piece(changed.size(), "changed", nullptr);
    if (pieces.empty())
        pieces.push_back("same " + std::to_string(unchanged) +
                         (unchanged == 1 ? " platform" : " platforms"));
    text.push_back(join(pieces, ", "));
    return {{"added", added},
            {"removed", removed},
            {"changed", changed},
            {"unchanged_count", unchanged}};
}

json layers_json(const analysis& a, std::vector<std::string>& text) {
    json out = {{"platform", nullptr},
                {"shared", nullptr},
                {"total_pinned", nullptr},
                {"total_upstream", nullptr}};
    bool both_single = a.pinned.kind == doc_kind::manifest && a.upstream.kind == doc_kind::manifest;
    if (a.representative) out["platform"] = *a.representative;
    if (!both_single && !a.representative) {
        if (a.pinned.kind == doc_kind::index && a.upstream.kind == doc_kind::index)
            text.push_back("no common platform");
        return out;
    }
    if (!a.pinned.manifest || !a.upstream.manifest) return out;
    const auto& pl = a.pinned.manifest->layers;
    const auto& ul = a.upstream.manifest->layers;
    std::set<std::string> pinned_set(pl.begin(), pl.end());
    auto shared = std::count_if(ul.begin(), ul.end(),
                                [&](const std::string& d) { return pinned_set.contains(d); });
    out["shared"] = shared;
    out["total_pinned"] = pl.size();
    out["total_upstream"] = ul.size();
    std::string s = a.representative ? *a.representative + " shares " : "shares ";
    s += std::to_string(shared);
    if (pl.size() == ul.size())
        s += " of " + std::to_string(ul.size()) + " layers";
    else
        s += " layers (" + std::to_string(pl.size()) + " pinned, " + std::to_string(ul.size()) +
             " upstream)";
    text.push_back(std::move(s));
    return out;
}

json config_json(const analysis& a, std::vector<std::string>& text) {
    const auto& p = a.pinned;
    const auto& u = a.upstream;
    auto field = [](const side& s, opt_string config_info::*f) {
        return s.config ? (*s.config).*f : std::nullopt;
    };
    auto digest = [](const side& s) {
        return s.config && s.manifest ? s.manifest->config_digest : std::nullopt;
    };
    json out = {
        {"digest", pair_of(digest(p), digest(u))},
        {"created", pair_of(field(p, &config_info::created), field(u, &config_info::created))},
        {"revision", pair_of(field(p, &config_info::revision), field(u, &config_info::revision))},
        {"version", pair_of(field(p, &config_info::version), field(u, &config_info::version))}};
    if (!p.config || !u.config) return out;
    if (digest(p) == digest(u)) {
        text.push_back("same config");
        return out;
    }
    auto describe = [&](const char* label, opt_string config_info::*f, bool say_same) {
        auto before = (*p.config).*f, after = (*u.config).*f;
        if (before != after)
            text.push_back(std::string(label) + " " + before.value_or("none") + " -> " +
                           after.value_or("none"));
        else if (before && say_same)
            text.push_back(std::string("same ") + label + " " + *before);
    };
    describe("revision", &config_info::revision, true);
    describe("version", &config_info::version, true);
    describe("created", &config_info::created, false);
    return out;
}

json summarize_unchecked(const image_docs& pinned, const image_docs& upstream) {
    analysis a(pinned, upstream);
    std::vector<std::string> parts;
    json out;
    out["media_type"] = pair_of(a.pinned.media_type, a.upstream.media_type);
    out["media_type"]["changed"] = a.pinned.media_type != a.upstream.media_type;
    out["platforms"] = platforms_json(a, parts);
    out["layers"] = layers_json(a, parts);
    out["config"] = config_json(a, parts);
    out["errors"] = a.errors;
    if (!a.errors.empty()) parts.push_back("could not read " + join(a.errors, ", "));

    std::string head;
    if (a.pinned.media_type != a.upstream.media_type)
        head = short_media_type(a.pinned.media_type) + " -> " +
               short_media_type(a.upstream.media_type);
    else if (a.pinned.kind == a.upstream.kind)
        head = kind_name(a.pinned.kind);
    else
        head = std::string(kind_name(a.pinned.kind)) + " -> " +
               std::string(kind_name(a.upstream.kind));
    out["text"] = parts.empty() ? head : head + ": " + join(parts, "; ");
    return out;
}

void add_missing(const side& s, needed& n) {
    if (s.child_digest && !s.docs.manifests_by_digest.contains(*s.child_digest))
        n.manifests.push_back(*s.child_digest);
    if (s.manifest && s.manifest->config_digest &&
        !s.docs.configs_by_digest.contains(*s.manifest->config_digest))
        n.configs.push_back(*s.manifest->config_digest);
}

}  // namespace

fetch_plan what_to_fetch(const image_docs& pinned, const image_docs& upstream) {
    fetch_plan plan;
    try {
        analysis a(pinned, upstream);
        add_missing(a.pinned, plan.pinned);
        add_missing(a.upstream, plan.upstream);
    } catch (const std::exception&) {  // allocation failure only: nothing sensible to fetch
        return {};
    }
    return plan;
}

nlohmann::json summarize(const image_docs& pinned, const image_docs& upstream) {
    try {
        return summarize_unchecked(pinned, upstream);
    } catch (const std::exception&) {
        // Safety net: the readers above check every type, so this means a bug or no memory.
        return {{"media_type", nullptr},
                {"platforms", nullptr},
                {"layers", nullptr},
                {"config", nullptr},
                {"errors", json::array({"summary failed"})},
                {"text", "could not summarize"}};
    }
}

}  // namespace regpin::proxy::pins
