#pragma once
// What a manifest or index refers to, read from its exact bytes (OCI and Docker schema 2).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace regpin::proxy::oci {

struct descriptor {
    std::string media_type;
    std::string digest;
    std::uint64_t size = 0;
    std::string platform;  // "linux/amd64[/v8]" for index entries that name one, else empty
};

// BuildKit's attestation manifests (SBOM, provenance) sit in an index as platform
// "unknown/unknown": nothing runs them, so they are neither a platform nor part of what a pin
// holds.
inline bool is_attestation(const descriptor& d) { return d.platform == "unknown/unknown"; }

struct manifest_refs {
    bool is_index = false;
    std::vector<descriptor> children;  // index: its manifests
    std::optional<descriptor> config;  // image manifest
    std::vector<descriptor> layers;    // image manifest
};

// nullopt when `bytes` is not a JSON manifest or index, or a descriptor is malformed.
// `media_type` is the Content-Type it was served with (may be empty: the document's
// mediaType decides).
std::optional<manifest_refs> read_manifest(std::string_view media_type, std::string_view bytes);

bool is_index_type(std::string_view media_type);

// The media type of a manifest served with `content_type`: the Content-Type without
// parameters, or the document's own "mediaType" when the Content-Type is empty or
// application/json (registries that do not know the type). Empty when neither says.
std::string manifest_media_type(std::string_view content_type, std::string_view bytes);

}  // namespace regpin::proxy::oci
