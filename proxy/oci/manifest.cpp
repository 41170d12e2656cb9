#include "proxy/oci/manifest.hpp"

#include <nlohmann/json.hpp>

#include "proxy/oci/media_types.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::oci {

namespace {

using nlohmann::json;

std::optional<descriptor> read_descriptor(const json& j) {
    if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string()) return std::nullopt;
    descriptor d;
    d.digest = j["digest"].get<std::string>();
    if (!storage::digest::parse(d.digest)) return std::nullopt;
    if (j.contains("mediaType") && j["mediaType"].is_string())
        d.media_type = j["mediaType"].get<std::string>();
    if (j.contains("size") && j["size"].is_number_unsigned())
        d.size = j["size"].get<std::uint64_t>();
    if (j.contains("platform") && j["platform"].is_object()) {
        const auto& p = j["platform"];
        auto os = p.value("os", std::string());
        auto arch = p.value("architecture", std::string());
        if (!os.empty() && !arch.empty()) {
            d.platform = os + "/" + arch;
            if (p.contains("variant") && p["variant"].is_string())
                d.platform += "/" + p["variant"].get<std::string>();
        }
    }
    return d;
}

// The one rule behind manifest_media_type, for a document already parsed.
std::string media_type_of(std::string_view content_type, const json& j) {
    std::string type = strip_parameters(content_type);
    if ((type.empty() || type == "application/json") && j.is_object() && j.contains("mediaType") &&
        j["mediaType"].is_string())
        type = j["mediaType"].get<std::string>();
    return type;
}

}  // namespace

std::string manifest_media_type(std::string_view content_type, std::string_view bytes) {
    return media_type_of(content_type, json::parse(bytes, nullptr, false));
}

bool is_index_type(std::string_view media_type) {
    return media_type == oci_index || media_type == docker_manifest_list;
}

std::optional<manifest_refs> read_manifest(std::string_view media_type, std::string_view bytes) {
    auto j = json::parse(bytes, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    auto type = media_type_of(media_type, j);
    manifest_refs out;
    out.is_index = is_index_type(type) || (type.empty() && j.contains("manifests"));
    if (out.is_index) {
        if (!j.contains("manifests") || !j["manifests"].is_array()) return std::nullopt;
        for (const auto& m : j["manifests"]) {
            auto d = read_descriptor(m);
            if (!d) return std::nullopt;
            out.children.push_back(std::move(*d));
        }
        return out;
    }
    if (j.contains("config")) {
        out.config = read_descriptor(j["config"]);
        if (!out.config) return std::nullopt;
    }
    if (j.contains("layers")) {
        if (!j["layers"].is_array()) return std::nullopt;
        for (const auto& l : j["layers"]) {
            auto d = read_descriptor(l);
            if (!d) return std::nullopt;
            out.layers.push_back(std::move(*d));
        }
    }
    return out;
}

}  // namespace regpin::proxy::oci
