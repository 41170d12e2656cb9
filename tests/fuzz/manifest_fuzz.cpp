// Manifests and indexes as an upstream (or a bundle) may send them: reading descriptors and
// summarising a re-point never crash or throw.
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "proxy/oci/manifest.hpp"
#include "proxy/pins/summary.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    (void)regpin::proxy::oci::read_manifest("", input);
    (void)regpin::proxy::oci::read_manifest("application/vnd.oci.image.index.v1+json", input);
    // Split the input into the two sides of a re-point, and use it as a child and config too.
    auto half = input.size() / 2;
    regpin::proxy::pins::image_docs a{"", std::string(input.substr(0, half)), {}, {}};
    regpin::proxy::pins::image_docs b{"", std::string(input.substr(half)), {}, {}};
    auto plan = regpin::proxy::pins::what_to_fetch(a, b);
    for (const auto& m : plan.pinned.manifests) a.manifests_by_digest[m] = std::string(input);
    for (const auto& c : plan.upstream.configs) b.configs_by_digest[c] = std::string(input);
    auto summary = regpin::proxy::pins::summarize(a, b);
    (void)summary.dump();
    return 0;
}
