#pragma once
// Request targets of the pull API: "/v2/<name>/manifests/<ref>?ns=docker.io" and friends.
// Parsing is pure: no I/O, no configuration.

#include <optional>
#include <string>
#include <string_view>

#include "proxy/oci/errors.hpp"

namespace regpin::proxy::oci {

enum class endpoint { base, manifest, blob, tags_list, referrers };

struct route {
    endpoint kind = endpoint::base;
    std::string name;       // repository as requested (may start with a registry host prefix)
    std::string reference;  // tag or digest (manifests), digest (blobs, referrers)
    // Query parameters regpin uses; each nullopt when absent.
    std::optional<std::string> ns;
    std::optional<std::string> n;
    std::optional<std::string> last;
    std::optional<std::string> artifact_type;
};

// Parses an origin-form target. Errors: NAME_INVALID / TAG_INVALID / DIGEST_INVALID (400),
// NAME_UNKNOWN (404) for paths that are not part of the pull API, UNSUPPORTED for push paths.
result<route> parse_route(std::string_view target);

// Repository name grammar of the distribution spec, at most 255 characters.
bool valid_repository(std::string_view name);
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
bool valid_tag(std::string_view tag);
// A registry host as clients name it in `ns` or a path prefix: "docker.io", "127.0.0.1:5000".
bool looks_like_registry_host(std::string_view component);
// A well-formed host[:port] (DNS labels or IPv4); "." and ".." are not.
bool valid_registry_host(std::string_view component);
bool is_digest_reference(std::string_view reference);

}  // namespace regpin::proxy::oci
