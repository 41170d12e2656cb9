#pragma once
// Image references as people write them ("nginx:1.27", "ghcr.io/org/app:v1") and Docker Hub's
// one naming rule. The one place both live: the router, the admin API, bundles and the CLI use
// these.

#include <string>
#include <string_view>

#include "config/config.hpp"
#include "proxy/oci/errors.hpp"

namespace regpin::proxy::oci {

// Docker Hub's rule: a one-component repository there means "library/<name>"
// ("nginx" -> "library/nginx"); anything else is returned as it is.
std::string hub_repository(std::string_view registry, std::string_view repository);

// REGISTRY/REPOSITORY:TAG with Docker Hub's rule applied.
struct image_reference {
    std::string registry, repository, tag;
    std::string str() const { return registry + "/" + repository + ":" + tag; }
};

// "docker.io/library/nginx:1.27", "nginx:1.27" (docker.io, library/nginx),
// "ghcr.io/org/app:v1", "127.0.0.1:5000/team/app:v1". The first component is the registry when
// it looks like a host (a dot, a port or "localhost"), else the registry is docker.io. A tag is
// required (a digest is not a tag); NAME_INVALID / TAG_INVALID otherwise, with a message for
// the operator.
result<image_reference> parse_image_reference(std::string_view ref);

// Whether `ref` names a tag: a ':' after its last '/' ("nginx:1.27", not "host:5000/nginx").
bool has_tag(std::string_view ref);

// An image as docker pull and kubectl read it: parse_image_reference, with the tag "latest"
// when none is given ("nginx" -> docker.io/library/nginx:latest).
result<image_reference> parse_image_name(std::string_view ref);

}  // namespace regpin::proxy::oci
