#pragma once
// Which configured upstream serves a request, and the repository name on that upstream.
// Closed world: only configured registries are ever chosen; an `ns` or host prefix that no
// upstream claims is NAME_UNKNOWN and opens no connection. Pure function over configuration.

#include <string>

#include "config/config.hpp"
#include "proxy/oci/route.hpp"

namespace regpin::proxy::registry {

struct routed {
    std::size_t upstream_index = 0;
    std::string registry;    // the upstream's canonical registry name ("docker.io")
    std::string repository;  // normalised repository on that upstream ("library/nginx")
};

// Order: `ns` query parameter, then a path prefix naming a configured registry, then the
// default upstream. Docker Hub one-component names gain "library/" (Docker Hub only).
oci::result<routed> route_to_upstream(const oci::route& r, const config::settings& s);

}  // namespace regpin::proxy::registry
