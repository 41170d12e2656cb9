// Request targets through parsing and routing: never crashes, and whatever parses is valid.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/config.hpp"
#include "proxy/oci/range.hpp"
#include "proxy/oci/route.hpp"
#include "proxy/registry/router.hpp"

namespace {

const regpin::config::settings& settings() {
    static regpin::config::settings s = [] {
        regpin::config::settings s;
        s.upstreams = regpin::config::default_upstreams();
        regpin::config::upstream local;
        local.registry = "127.0.0.1:5000";
        local.urls = {"http://127.0.0.1:5000"};
        s.upstreams.push_back(local);
        regpin::config::validate(s);
        return s;
    }();
    return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto parsed = regpin::proxy::oci::parse_route(input);
    if (parsed) {
        const auto* r = &*parsed;
        if (r->kind != regpin::proxy::oci::endpoint::base) {
            auto routed = regpin::proxy::registry::route_to_upstream(*r, settings());
            if (routed) {
                const auto* ok = &*routed;
                // Invariant: a routed repository is always a valid name (no traversal, no %).
                if (!regpin::proxy::oci::valid_repository(ok->repository)) std::abort();
            }
        }
    }
    auto range = regpin::proxy::oci::parse_range(input, 1000);
    if (range.outcome == regpin::proxy::oci::range_outcome::partial &&
        (range.range.first > range.range.last || range.range.last >= 1000))
        std::abort();
    return 0;
}
