#include "proxy/registry/router.hpp"

#include "proxy/oci/reference.hpp"

namespace regpin::proxy::registry {

namespace {

// Index of the upstream called `name` (its registry or an alias), or npos.
std::size_t find_upstream(const config::settings& s, std::string_view name) {
    for (std::size_t i = 0; i < s.upstreams.size(); ++i) {
        const auto& u = s.upstreams[i];
        if (u.registry == name) return i;
        for (const auto& a : u.aliases)
            if (a == name) return i;
    }
    return std::string::npos;
}

}  // namespace

oci::result<routed> route_to_upstream(const oci::route& r, const config::settings& s) {
    routed out;
    std::string repo = r.name;
    std::size_t index = std::string::npos;
    if (r.ns) {
        index = find_upstream(s, *r.ns);
        if (index == std::string::npos)
            return oci::error{
                oci::error_code::name_unknown,
                "no upstream is configured for registry '" + r.ns->substr(0, 255) + "'"};
        // A client may send both: ns wins, and a repeated host prefix is dropped.
        auto slash = repo.find('/');
        if (slash != std::string::npos && oci::looks_like_registry_host(repo.substr(0, slash)) &&
            find_upstream(s, repo.substr(0, slash)) == index)
            repo = repo.substr(slash + 1);
    } else {
        auto slash = repo.find('/');
        if (slash != std::string::npos && oci::looks_like_registry_host(repo.substr(0, slash))) {
            index = find_upstream(s, repo.substr(0, slash));
            if (index == std::string::npos)
                return oci::error{
                    oci::error_code::name_unknown,
                    "no upstream is configured for registry '" + repo.substr(0, slash) + "'"};
            repo = repo.substr(slash + 1);
        } else {
            index = find_upstream(s, s.default_upstream);
        }
    }
    if (index == std::string::npos)
        return oci::error{oci::error_code::name_invalid, "invalid repository name '" + repo + "'"};
    const auto& up = s.upstreams[index];
    repo = oci::hub_repository(up.registry, repo);
    // Checked after "library/", which can push a valid short name past the 255-character limit
    // (found by tests/fuzz/route_fuzz).
    if (!oci::valid_repository(repo))
        return oci::error{oci::error_code::name_invalid,
                          "invalid repository name '" + repo.substr(0, 255) + "'"};
    out.upstream_index = index;
    out.registry = up.registry;
    out.repository = std::move(repo);
    return out;
}

}  // namespace regpin::proxy::registry
