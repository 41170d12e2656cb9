#pragma once
// Manifest media types and the accept class: which of the four modern manifest types a client
// accepted. Upstreams answer a tag differently per Accept (protocol.md section 2), so pins are
// kept per class.

#include <cstdint>
#include <string>
#include <string_view>

namespace regpin::proxy::oci {

inline constexpr std::string_view docker_manifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view docker_manifest_list =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view oci_manifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view oci_index = "application/vnd.oci.image.index.v1+json";

enum accept_bits : std::uint8_t {
    accepts_docker_manifest = 1,
    accepts_docker_manifest_list = 2,
    accepts_oci_manifest = 4,
    accepts_oci_index = 8,
};
// The class of containerd, Docker and skopeo, which accept all four.
inline constexpr std::uint8_t accepts_all = 15;

// The class of a merged Accept value ("a, b;q=0.5, */*"). "*/*" and application/json count as
// nothing: an empty class.
std::uint8_t accept_class(std::string_view accept);

// Whether a client of accept class `cls` accepts a manifest of `media_type`: the empty class
// (clients that sent only */*, or no Accept) accepts anything; any other class the four types
// it names.
bool accept_class_admits(std::uint8_t cls, std::string_view media_type);

// The Accept value that reproduces an accept class (a pin key's), for requests regpin makes
// itself: the class's types and "*/*"; empty for the empty class.
std::string accept_for_class(std::uint8_t accept_class);

// "application/json; charset=utf-8" -> "application/json" (containerd strips parameters too).
std::string strip_parameters(std::string_view content_type);

}  // namespace regpin::proxy::oci
