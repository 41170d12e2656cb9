#pragma once
// What a tag resolves to for the pipeline (issue 17): the digest nodes get through regpin, as
// the admin API (GET /api/v1/resolve), the admission webhook and `regpin resolve --data` answer
// it. One shape for all three. Pure functions, no I/O.

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/manifest_store.hpp"
#include "storage/pin.hpp"

namespace regpin::proxy::pins {

// The pin that answers containerd, CRI-O and Docker (which accept all four manifest types) for
// one tag, from every pin of that tag (pin_store::list_tag): pick_for_class's answer, else the
// pin of another class it would serve (where no first sight can be made: regpin resolve
// --data). nullopt when none answers.
std::optional<storage::pin> pin_for_nodes(const std::vector<storage::pin>& tag_pins);

struct platform_digest {
    std::string platform;  // "linux/amd64", "linux/arm64/v8"
    std::string digest;
    std::string media_type;
};

struct resolution {
    storage::pin pin;  // the digest nodes get, its state, the upstream's when pending/rejected
    std::vector<platform_digest> platforms;  // an index's images (attestations left out)
    // The image for the asked platform: an index's entry, or the pinned manifest itself when
    // it is one image. Unset when no platform was asked.
    std::optional<platform_digest> for_platform;
};

// The resolution of pin `p` whose manifest is `m` (nullptr when the store lacks it: no
// platforms then). `platform` ("os/arch[/variant]", or empty): the image to name as well. The
// error, for an index without that platform, lists the ones it has.
struct resolved_or_error {
    std::optional<resolution> value;
    std::string error;
};
resolved_or_error resolve_pin(const storage::pin& p, const storage::manifest* m,
                              const std::string& platform);

// Why a rejected pin answers nothing: the tag, both digests, and what an operator must do. The
// registry API's 403, the resolve API's and `regpin resolve --data` say it alike.
std::string rejected_reason(const storage::pin& p);

// REGISTRY/REPOSITORY:TAG@DIGEST: what a manifest should name to get the pinned bytes.
std::string pinned_reference(const storage::pin& p);

// The JSON of a resolution: reference, registry, repository, tag, digest, media_type, state,
// policy, pinned_reference, upstream_digest (what the upstream moved to, while pending or
// rejected; else null), first_seen, last_verified, platforms [{platform, digest, media_type}],
// platform (when asked).
nlohmann::json resolution_json(const resolution& r, std::string_view policy);

}  // namespace regpin::proxy::pins
